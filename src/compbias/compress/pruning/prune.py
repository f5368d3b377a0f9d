"""Pruning a model in place (:func:`prune_model`) and a checkpoint into a new one
(:func:`prune_checkpoint`), with the Wanda calibration windows (:func:`calibration_tokens`)."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import mlx.core as mx
import mlx.nn as nn
import numpy as np

from compbias.compress.checkpoints import save_derived
from compbias.compress.pruning.masks import magnitude_mask, random_mask
from compbias.compress.pruning.spec import PruneSpec, fail, validate_spec
from compbias.compress.pruning.surgery import apply_mask, prunable_linears
from compbias.compress.pruning.wanda import wanda_prune
from compbias.data.corpus import load_texts, sample_windows, token_stream
from compbias.io import atomic_dir

SPARSITY_TOLERANCE = 0.001  # 0.1 percentage points


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
                raise fail(variant_name, "wanda needs calibration tokens")
            wanda_prune(model, linears, tokens, spec.sparsity, batch_size, norms_out)
        else:
            keys = mx.random.split(mx.random.key(spec.mask_seed), len(linears))
            for j, p in enumerate(linears):
                w = p.module.weight
                if spec.method == "random":
                    mask = random_mask(w.shape, spec.sparsity, keys[j])
                else:
                    mask = magnitude_mask(w, spec.sparsity, spec.granularity)
                apply_mask(p.module, mask)
    layer_zeros = {p.name: (int(mx.sum(p.module.weight == 0).item()), p.module.weight.size) for p in linears}
    zeroed = sum(z for z, _ in layer_zeros.values())
    prunable = sum(n for _, n in layer_zeros.values())
    return {
        "sparsity": zeroed / prunable,
        "layer_sparsity": {k: z / n for k, (z, n) in layer_zeros.items()},
        "zeroed": zeroed,
        "prunable": prunable,
    }


def calibration_tokens(
    tokenizer: Any,
    texts: Sequence[str],
    n_samples: int,
    seq_len: int,
    seed: int,
    *,
    variant_name: str = "",
) -> mx.array:
    """``n_samples`` disjoint ``seq_len``-token windows (int32) of the concatenated texts.

    Texts are tokenized without special tokens and joined with the EOS token; the window grid
    starts at a seeded random offset and windows are drawn without replacement (seeded), by
    :func:`compbias.data.corpus.sample_windows`. Raises ValueError naming the variant and the
    shortfall if the corpus has fewer than ``n_samples * seq_len`` tokens.
    """
    ids = token_stream(tokenizer, texts, add_special_tokens=False)
    try:
        windows = sample_windows(ids, n_samples, seq_len, seed, random_offset=True)
    except ValueError as exc:
        raise fail(variant_name, f"calibration {exc}") from None
    return mx.array(windows.astype(np.int32))


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
    """Prune the MLX checkpoint ``src_dir`` into ``out_dir`` and return the ``pruning`` section
    of its manifest (which :func:`compbias.compress.checkpoints.build_checkpoint` writes).

    ``texts`` overrides the calibration corpus (otherwise ``spec.calibration.source`` is loaded).
    The checkpoint is written to a temporary sibling directory (weights via
    ``mlx_lm.utils.save_model``, config via ``save_config``, tokenizer and other non-weight files
    copied from ``src_dir``) that is renamed to ``out_dir`` at the end. The section holds
    model_type, method, target_sparsity, sparsity, layer_sparsity, zeroed, prunable, seconds and
    the settings used.
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
        raise fail(variant_name, f"{src} is quantized; prune before quantizing")
    tokens = None
    cal = spec.calibration
    if spec.method == "wanda" and spec.sparsity > 0:
        if texts is None:
            say(f"loading calibration texts from {cal.source}")
            texts = load_texts(
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
    section: dict[str, Any] = {
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
        section["seconds"] = round(time.perf_counter() - t0, 3)
    say(f"wrote {out}: sparsity {stats['sparsity']:.4f} in {section['seconds']} s")
    return section
