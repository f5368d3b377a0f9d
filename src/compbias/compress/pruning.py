"""Unstructured pruning of MLX checkpoints: random, magnitude and Wanda (Sun et al. 2023).

Scope: every ``nn.Linear`` inside the transformer blocks (``model.layers[i]``); embeddings,
``lm_head`` and norms are never touched. Wanda calibrates block by block on the outputs of the
already-pruned blocks, running each block's own mlx_lm forward code.
"""

from __future__ import annotations

import glob
import json
import os
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import mlx.core as mx
import mlx.nn as nn
import numpy as np

from compbias.compress.checkpoints import save_derived
from compbias.io import atomic_dir

METHODS = ("random", "magnitude", "wanda")
GRANULARITIES = ("row", "layer")
DEFAULT_DATASET = "allenai/c4"
MANIFEST_NAME = "prune_manifest.json"
SPARSITY_TOLERANCE = 0.001  # 0.1 percentage points
_QUANTIZED = tuple(c for c in (getattr(nn, n, None) for n in ("QuantizedLinear", "QQLinear")) if c is not None)


@dataclass(frozen=True)
class CalibrationSpec:
    """Wanda calibration corpus: ``n_samples`` windows of ``seq_len`` tokens drawn with ``seed``.

    ``source`` is a local directory / file / glob of .txt or .jsonl (field "text") files, or a
    Hugging Face dataset name (loaded with ``subset`` and ``split``, streaming).
    """

    n_samples: int = 128
    seq_len: int = 2048
    seed: int = 0
    source: str = DEFAULT_DATASET
    subset: str | None = "en"
    split: str = "validation"


@dataclass(frozen=True)
class PruneSpec:
    """A pruning variant: method, target sparsity and method options."""

    method: str
    sparsity: float
    granularity: str = "row"
    mask_seed: int = 0
    calibration: CalibrationSpec = field(default_factory=CalibrationSpec)


@dataclass
class PrunableLinear:
    """One prunable linear: its block index, checkpoint weight prefix and path inside the block."""

    block: int
    name: str
    path: str
    module: nn.Linear


def _fail(variant: str, msg: str) -> ValueError:
    return ValueError(f"variant {variant!r}: {msg}")


def _is_int(x: Any) -> bool:
    return isinstance(x, (int, np.integer)) and not isinstance(x, bool)


def validate_spec(variant_name: str, spec_dict: Mapping[str, Any]) -> PruneSpec:
    """Check a variant's pruning settings and return a :class:`PruneSpec`.

    Keys read: method, sparsity, granularity, mask_seed, calibration (a mapping with the
    :class:`CalibrationSpec` fields). Other top-level keys are ignored. Raises ValueError naming
    the variant for an unknown method, a sparsity outside [0, 1), a bad granularity or bad
    calibration settings.
    """
    method = spec_dict.get("method")
    if method not in METHODS:
        raise _fail(variant_name, f"unknown pruning method {method!r}; expected one of {METHODS}")
    sparsity = spec_dict.get("sparsity")
    if not isinstance(sparsity, (int, float)) or isinstance(sparsity, bool) or not 0 <= sparsity < 1:
        raise _fail(variant_name, f"sparsity must be a number in [0, 1), got {sparsity!r}")
    granularity = spec_dict.get("granularity", "row")
    if granularity not in GRANULARITIES:
        raise _fail(variant_name, f"unknown granularity {granularity!r}; expected one of {GRANULARITIES}")
    if method != "magnitude" and granularity != "row":
        raise _fail(variant_name, f"granularity {granularity!r} applies only to magnitude pruning")
    mask_seed = spec_dict.get("mask_seed", 0)
    if not _is_int(mask_seed):
        raise _fail(variant_name, f"mask_seed must be an integer, got {mask_seed!r}")
    calib = dict(spec_dict.get("calibration") or {})
    unknown = set(calib) - {f.name for f in fields(CalibrationSpec)}
    if unknown:
        raise _fail(variant_name, f"unknown calibration keys {sorted(unknown)}")
    cal = CalibrationSpec(**calib)
    for key in ("n_samples", "seq_len"):
        if not _is_int(getattr(cal, key)) or getattr(cal, key) <= 0:
            raise _fail(variant_name, f"calibration {key} must be a positive integer")
    if not _is_int(cal.seed):
        raise _fail(variant_name, "calibration seed must be an integer")
    return PruneSpec(method, float(sparsity), granularity, int(mask_seed), cal)


# --------------------------------------------------------------------------- masks


def prune_mask(scores: mx.array, sparsity: float, granularity: str = "row") -> mx.array:
    """Boolean mask (True = prune) removing the lowest-scoring entries of a 2-D score matrix.

    ``layer``: exactly round(size * sparsity) entries of the whole matrix. ``row``: the lowest
    floor(cols * sparsity) per output row; when the layer total round(size * sparsity) is not a
    multiple of the row count, the remainder goes one each to the rows whose next-lowest score is
    smallest, so every layer hits its exact count.
    """
    rows, cols = scores.shape
    total = round(rows * cols * sparsity)
    if granularity == "layer":
        order = mx.argsort(scores.reshape(-1))
        remove = mx.arange(rows * cols) < total
        return mx.put_along_axis(mx.zeros(rows * cols, mx.bool_), order, remove, axis=0).reshape(rows, cols)
    if granularity != "row":
        raise ValueError(f"unknown granularity {granularity!r}")
    k, extra = divmod(total, rows)
    order = mx.argsort(scores, axis=1)
    count = mx.full((rows,), k, mx.int32)
    if extra:
        nxt = mx.take_along_axis(scores, order[:, k : k + 1], axis=1)[:, 0]
        count[mx.argsort(nxt)[:extra]] = k + 1
    remove = mx.arange(cols)[None, :] < count[:, None]
    return mx.put_along_axis(mx.zeros((rows, cols), mx.bool_), order, remove, axis=1)


def magnitude_mask(weight: mx.array, sparsity: float, granularity: str = "row") -> mx.array:
    """Mask removing the smallest |W| per output row or per layer."""
    return prune_mask(mx.abs(weight.astype(mx.float32)), sparsity, granularity)


def wanda_mask(weight: mx.array, input_norm: mx.array, sparsity: float) -> mx.array:
    """Wanda mask: per output row remove the lowest |W_ij| * ||X_j||_2."""
    scores = mx.abs(weight.astype(mx.float32)) * input_norm.astype(mx.float32)[None, :]
    return prune_mask(scores, sparsity, "row")


def random_mask(shape: tuple[int, int], sparsity: float, key: mx.array) -> mx.array:
    """Uniformly random mask with exactly round(size * sparsity) pruned entries."""
    return prune_mask(mx.random.uniform(shape=shape, key=key), sparsity, "layer")


# --------------------------------------------------------------------------- model structure


def _blocks(model: nn.Module) -> list:
    inner = getattr(model, "model", None)
    layers = getattr(inner, "layers", None) if isinstance(inner, nn.Module) else None
    if layers is None:
        layers = getattr(model, "layers", None)
    return layers if isinstance(layers, list) else []


def prunable_linears(model: nn.Module, variant_name: str = "", model_type: str | None = None) -> list[PrunableLinear]:
    """Every ``nn.Linear`` inside ``model.layers[i]``, sorted by weight name.

    Raises ValueError for quantized layers (prune before quantizing) or when there is none.
    """
    blocks = _blocks(model)
    mtype = model_type or getattr(model, "model_type", None)
    prefix = "model.layers"
    if blocks:
        prefix = next((p for p, m in model.named_modules() if m is blocks[0]), "model.layers.0").rsplit(".", 1)[0]
    found: list[PrunableLinear] = []
    for i, block in enumerate(blocks):
        for path, mod in block.named_modules():
            if isinstance(mod, _QUANTIZED):
                raise _fail(variant_name, f"{prefix}.{i}.{path} is quantized; prune before quantizing")
            if isinstance(mod, nn.Linear) and path:
                found.append(PrunableLinear(i, f"{prefix}.{i}.{path}", path, mod))
    if not found:
        raise _fail(variant_name, f"no prunable nn.Linear layers in the transformer blocks of architecture {mtype!r}")
    return sorted(found, key=lambda p: (p.block, p.name))


def _set_child(root: nn.Module, path: str, value: Any) -> None:
    *parents, last = path.split(".")
    node: Any = root
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else getattr(node, part)
    if isinstance(node, list):
        node[int(last)] = value
    else:
        setattr(node, last, value)


def _apply_mask(lin: nn.Linear, mask: mx.array) -> None:
    lin.weight = mx.where(mask, mx.array(0, dtype=lin.weight.dtype), lin.weight)
    mx.eval(lin.weight)


class _InputRecorder(nn.Module):
    """Stands in for a linear: accumulates the per-feature sum of squares of its input."""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        self.linear = linear
        self.sqsum = mx.zeros((linear.weight.shape[1],), mx.float32)

    def __call__(self, x: mx.array) -> mx.array:
        xf = x.astype(mx.float32)
        self.sqsum = self.sqsum + mx.sum(xf * xf, axis=tuple(range(x.ndim - 1)))
        return self.linear(x)


class _BlockCapture:
    """Stands in for a block during one model forward: records its call and passes ``x`` through."""

    def __init__(self, block: nn.Module):
        self._block = block
        self.calls: list[tuple[mx.array, tuple, dict]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._block, name)

    def __call__(self, x: mx.array, *args: Any, **kwargs: Any) -> mx.array:
        self.calls.append((x, args, kwargs))
        return x


def _capture_block_inputs(
    model: nn.Module, tokens: mx.array, batch_size: int
) -> tuple[list[mx.array], list[tuple[tuple, dict]]]:
    """Hidden states entering block 0 (float32, per batch) and each block's extra call arguments.

    Runs the model's own ``__call__`` with every block replaced by a pass-through recorder, so
    embeddings, masks and cache arguments come from mlx_lm itself; the logits are never evaluated.
    """
    blocks = _blocks(model)
    captures = [_BlockCapture(b) for b in blocks]
    hidden: list[mx.array] = []
    call_args: list[tuple[tuple, dict]] = []
    try:
        blocks[:] = captures
        for start in range(0, tokens.shape[0], batch_size):
            for c in captures:
                c.calls.clear()
            model(tokens[start : start + batch_size])
            h = captures[0].calls[0][0].astype(mx.float32)
            mx.eval(h)
            hidden.append(h)
            if start == 0:
                call_args = [(c.calls[0][1], c.calls[0][2]) for c in captures]
    finally:
        blocks[:] = [c._block for c in captures]
    return hidden, call_args


def _wanda(
    model: nn.Module,
    linears: list[PrunableLinear],
    tokens: mx.array,
    sparsity: float,
    batch_size: int,
    norms_out: dict[str, mx.array] | None,
) -> None:
    hidden, call_args = _capture_block_inputs(model, tokens, batch_size)
    for i, block in enumerate(_blocks(model)):
        args, kwargs = call_args[i]
        own = [p for p in linears if p.block == i]
        recorders = [_InputRecorder(p.module) for p in own]
        try:
            for p, rec in zip(own, recorders):
                _set_child(block, p.path, rec)
            for h in hidden:
                block(h, *args, **kwargs)
                mx.eval([r.sqsum for r in recorders])
        finally:
            for p in own:
                _set_child(block, p.path, p.module)
        for p, rec in zip(own, recorders):
            norm = mx.sqrt(rec.sqsum)
            if norms_out is not None:
                norms_out[p.name] = norm
            _apply_mask(p.module, wanda_mask(p.module.weight, norm, sparsity))
        for j in range(len(hidden)):
            hidden[j] = block(hidden[j], *args, **kwargs).astype(mx.float32)
            mx.eval(hidden[j])


def prune_model(
    model: nn.Module,
    spec: PruneSpec,
    tokens: mx.array | None = None,
    *,
    variant_name: str = "",
    model_type: str | None = None,
    batch_size: int = 4,
    norms_out: dict[str, mx.array] | None = None,
) -> dict[str, Any]:
    """Prune ``model`` in place and return sparsity statistics.

    ``tokens`` (n_samples x seq_len) is required for Wanda; ``norms_out``, if given, receives the
    input L2 norm of every linear as used by Wanda. Returns ``sparsity``, ``layer_sparsity``,
    ``zeroed`` and ``prunable``, all measured from the zeros in the weights afterwards.
    """
    linears = prunable_linears(model, variant_name, model_type)
    if spec.sparsity > 0:
        if spec.method == "wanda":
            if tokens is None:
                raise _fail(variant_name, "wanda needs calibration tokens")
            _wanda(model, linears, tokens, spec.sparsity, batch_size, norms_out)
        else:
            keys = mx.random.split(mx.random.key(spec.mask_seed), len(linears))
            for j, p in enumerate(linears):
                w = p.module.weight
                if spec.method == "random":
                    mask = random_mask(w.shape, spec.sparsity, keys[j])
                else:
                    mask = magnitude_mask(w, spec.sparsity, spec.granularity)
                _apply_mask(p.module, mask)
    layer_zeros = {p.name: (int(mx.sum(p.module.weight == 0).item()), p.module.weight.size) for p in linears}
    zeroed = sum(z for z, _ in layer_zeros.values())
    prunable = sum(n for _, n in layer_zeros.values())
    return {
        "sparsity": zeroed / prunable,
        "layer_sparsity": {k: z / n for k, (z, n) in layer_zeros.items()},
        "zeroed": zeroed,
        "prunable": prunable,
    }


# --------------------------------------------------------------------------- calibration data


def _local_files(source: str) -> list[Path] | None:
    path = Path(source).expanduser()
    if path.is_dir():
        return sorted(p for p in path.rglob("*") if p.suffix in (".txt", ".jsonl") and p.is_file())
    if path.is_file():
        return [path]
    if glob.has_magic(source):
        return sorted(Path(p) for p in glob.glob(os.path.expanduser(source), recursive=True) if Path(p).is_file())
    return None


def load_calibration_texts(
    source: str = DEFAULT_DATASET,
    *,
    subset: str | None = "en",
    split: str = "validation",
    max_chars: int | None = None,
) -> list[str]:
    """Calibration texts from local files or a Hugging Face dataset.

    A directory, file or glob reads every .txt file as one text and every .jsonl line's "text"
    field. Anything else is a Hugging Face dataset name, streamed (``datasets.load_dataset(source,
    subset, split=split, streaming=True)``) until ``max_chars`` characters are collected.
    """
    files = _local_files(source)
    if files is not None:
        if not files:
            raise FileNotFoundError(f"no calibration files match {source!r}")
        texts: list[str] = []
        for f in files:
            if f.suffix == ".jsonl":
                with open(f, encoding="utf-8") as fh:
                    texts.extend(json.loads(line)["text"] for line in fh if line.strip())
            else:
                texts.append(f.read_text(encoding="utf-8"))
        return texts
    from datasets import load_dataset

    stream = load_dataset(source, subset, split=split, streaming=True)
    texts, chars = [], 0
    for row in stream:
        texts.append(row["text"])
        chars += len(row["text"])
        if max_chars is not None and chars >= max_chars:
            break
    return texts


def calibration_tokens(
    tokenizer: Any,
    texts: Sequence[str],
    n_samples: int,
    seq_len: int,
    seed: int,
    *,
    variant_name: str = "",
) -> mx.array:
    """Sample ``n_samples`` disjoint ``seq_len``-token windows from the concatenated texts.

    Texts are tokenized without special tokens and joined with the EOS token; the window grid
    starts at a seeded random offset and windows are drawn without replacement (seeded). Raises
    ValueError naming the variant and the shortfall if the corpus has fewer than
    ``n_samples * seq_len`` tokens.
    """
    tok = getattr(tokenizer, "_tokenizer", tokenizer)
    eos = getattr(tok, "eos_token_id", None)
    ids: list[int] = []
    for start in range(0, len(texts), 1000):
        for seq in tok(list(texts[start : start + 1000]), add_special_tokens=False)["input_ids"]:
            ids.extend(seq)
            if eos is not None:
                ids.append(eos)
    need = n_samples * seq_len
    if len(ids) < need:
        raise _fail(
            variant_name,
            f"calibration corpus has {len(ids)} tokens but {n_samples} x {seq_len} = {need} are "
            f"needed (short by {need - len(ids)})",
        )
    rng = np.random.default_rng(seed)
    n_windows = len(ids) // seq_len
    offset = int(rng.integers(0, len(ids) - n_windows * seq_len + 1))
    starts = offset + seq_len * rng.choice(n_windows, size=n_samples, replace=False)
    arr = np.asarray(ids, dtype=np.int32)
    return mx.array(np.stack([arr[s : s + seq_len] for s in starts]))


# --------------------------------------------------------------------------- checkpoints


def prune_checkpoint(
    src_dir: str | Path,
    out_dir: str | Path,
    variant_name: str,
    spec: PruneSpec | Mapping[str, Any],
    texts: Sequence[str] | None = None,
    *,
    batch_size: int = 4,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Prune the MLX checkpoint ``src_dir`` into ``out_dir`` and return its manifest.

    ``texts`` overrides the calibration corpus (otherwise ``spec.calibration.source`` is loaded).
    The checkpoint is written to a temporary sibling directory (weights via
    ``mlx_lm.utils.save_model``, config via ``save_config``, tokenizer and other non-weight files
    copied from ``src_dir``) that is renamed to ``out_dir`` at the end. The manifest (also written
    as ``out_dir/prune_manifest.json``) holds method, target_sparsity, sparsity, layer_sparsity,
    zeroed, prunable, seconds and the settings used.
    """
    from mlx_lm.utils import load_model, load_tokenizer

    t0 = time.perf_counter()
    if not isinstance(spec, PruneSpec):
        spec = validate_spec(variant_name, spec)
    src, out = Path(src_dir), Path(out_dir)
    say = log or (lambda _msg: None)
    model, config = load_model(src)
    model_type = config.get("model_type")
    if config.get("quantization") or config.get("quantization_config"):
        raise _fail(variant_name, f"{src} is quantized; prune before quantizing")
    tokens = None
    cal = spec.calibration
    if spec.method == "wanda" and spec.sparsity > 0:
        if texts is None:
            say(f"loading calibration texts from {cal.source}")
            texts = load_calibration_texts(
                cal.source, subset=cal.subset, split=cal.split, max_chars=12 * cal.n_samples * cal.seq_len
            )
        tokens = calibration_tokens(
            load_tokenizer(src), texts, cal.n_samples, cal.seq_len, cal.seed, variant_name=variant_name
        )
    say(f"pruning {src} with {spec.method} at sparsity {spec.sparsity}")
    stats = prune_model(model, spec, tokens, variant_name=variant_name, model_type=model_type, batch_size=batch_size)
    if abs(stats["sparsity"] - spec.sparsity) > SPARSITY_TOLERANCE:
        raise RuntimeError(
            f"variant {variant_name!r}: achieved sparsity {stats['sparsity']:.5f} is not within "
            f"{SPARSITY_TOLERANCE} of the target {spec.sparsity}"
        )
    manifest: dict[str, Any] = {
        "variant": variant_name,
        "source": str(src),
        "model_type": model_type,
        "method": spec.method,
        "target_sparsity": spec.sparsity,
        **stats,
        "granularity": spec.granularity if spec.method == "magnitude" else "row",
        "mask_seed": spec.mask_seed if spec.method == "random" else None,
        "calibration": asdict(cal) if tokens is not None else None,
    }
    with atomic_dir(out) as tmp:
        save_derived(tmp, model, config, src)
        manifest["seconds"] = round(time.perf_counter() - t0, 3)
        (tmp / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2) + "\n")
    say(f"wrote {out}: sparsity {stats['sparsity']:.4f} in {manifest['seconds']} s")
    return manifest
