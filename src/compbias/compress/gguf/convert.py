"""Convert a llama-architecture GGUF file into an HF/MLX checkpoint directory that ``mlx_lm.load``
reads: GGUF metadata -> HF config, GGUF tensor names -> HF names, q/k rows un-permuted to the HF
RoPE layout, weights dequantized (:mod:`.tensors`) and the tokenizer rebuilt (:mod:`.tokenizer`)."""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path
from typing import Any

import mlx.core as mx
import numpy as np

from compbias.compress.gguf.tensors import FILE_TYPES, SUPPORTED_TYPES, _dequantize, _scan_header
from compbias.compress.gguf.tokenizer import _tokenizer_files, build_tokenizer
from compbias.io import atomic_dir

_GLOBAL_NAMES = {"token_embd": "model.embed_tokens", "output_norm": "model.norm", "output": "lm_head"}
_LAYER_NAMES = {
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
    "attn_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
}


def _plain(value: Any) -> Any:
    """Turn an mx.load metadata value into plain Python (float32 scalars keep their short repr)."""
    if isinstance(value, mx.array):
        a = np.array(value)
        if a.ndim:
            return a.tolist()
        return float(str(a)) if a.dtype == np.float32 else a.item()
    return value


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
