"""Where one CPU prompt batch's time goes: the forward, its matmuls, and MLX's exp-based ops.

    python -m benchmarks.cpu_forward MODEL_DIR [--rows 16] [--suffix 60] [--prefix 35]

On the workflow's CPU runtime (float32, the preloaded OpenBLAS) it times one batch of the prompt
pass as the scores job runs it (``rows`` prompts of ``suffix`` tokens after a cached shared
prefix, the default geometry of the demo's BBQ prompts), then per layer the attention block and
the MLP block, the same matmuls alone on inputs of the same shapes, and element-wise ops on the
MLP's activation shape: ``exp`` (which MLX's Linux CPU build computes as a scalar polynomial
calling libm's ``fma``), ``multiply``, mlx_lm's ``swiglu`` (``mx.compile``'d: built by MLX's JIT,
with hardware fma where :mod:`compbias.inference.cpu_jit` applies; ``COMPBIAS_JIT_FMA=off`` and
an empty ``TMPDIR`` for the JIT's cache compare without) and the attention kernel
(``mx.fast.scaled_dot_product_attention``, whose softmax uses the wheel's exp). The last line is
``RESULT key=value ...``.
"""

from __future__ import annotations

# first: importing compbias loads the optimized BLAS, which must precede MLX
import compbias  # noqa: F401

# isort: split
import argparse
import time

import mlx.core as mx

from benchmarks.timing import timed
from compbias.inference import scoring
from compbias.inference.runtime import load_model, resolve_runtime


def seconds(fn, repeat: int = 3) -> float:
    """Mean seconds of ``fn()`` (:func:`benchmarks.timing.timed`)."""
    return timed(fn, repeat) / 1e3


def blocks(model, tokens: mx.array, states) -> tuple[float, float]:
    """Seconds in the attention blocks and in the MLP blocks of one forward (each evaluated on
    its own, so the split is exact up to the evaluation boundaries)."""
    from mlx_lm.models.base import create_attention_mask

    inner = model.model
    cache = scoring._batch_cache(states, tokens.shape[0], len(inner.layers))
    h = inner.embed_tokens(tokens)
    mx.eval(h)
    mask = create_attention_mask(h, cache[0])
    attention = mlp = 0.0
    for layer, c in zip(inner.layers, cache):
        start = time.perf_counter()
        h = h + layer.self_attn(layer.input_layernorm(h), mask, c)
        mx.eval(h)
        mid = time.perf_counter()
        h = h + layer.mlp(layer.post_attention_layernorm(h))
        mx.eval(h)
        attention, mlp = attention + mid - start, mlp + time.perf_counter() - mid
    return attention, mlp


def matmuls(model, n_tokens: int) -> tuple[float, float]:
    """Seconds of the attention projections and of the MLP matmuls of every layer, alone, on
    random inputs of one batch's shape."""
    layer = model.model.layers[0]
    attn, mlp = layer.self_attn, layer.mlp
    x = mx.random.normal((n_tokens, attn.q_proj.weight.shape[1]))
    g = mx.random.normal((n_tokens, mlp.down_proj.weight.shape[1]))
    mx.eval(x, g)
    n = len(model.model.layers)
    projs = (attn.q_proj, attn.k_proj, attn.v_proj, attn.o_proj)
    projections = seconds(lambda: [mx.eval([p(x) for p in projs]) for _ in range(n)])
    mlp_s = seconds(lambda: [mx.eval(mlp.gate_proj(x), mlp.up_proj(x), mlp.down_proj(g)) for _ in range(n)])
    return projections, mlp_s


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model")
    ap.add_argument("--rows", type=int, default=16)
    ap.add_argument("--suffix", type=int, default=60)
    ap.add_argument("--prefix", type=int, default=35)
    args = ap.parse_args()

    model, _, _ = load_model(args.model, resolve_runtime())
    rows, width = args.rows, args.suffix
    tokens = mx.random.randint(0, 1000, (rows, width)).astype(mx.int32)
    states = scoring._prefix_cache(model, list(range(100, 100 + args.prefix)))
    last = mx.full((rows, 1, 1), width - 1)

    def forward():
        cache = scoring._batch_cache(states, rows, len(model.layers))
        mx.eval(scoring.logits_at(model, tokens, cache, last))

    forward_s = seconds(forward)
    attention_s, mlp_s = blocks(model, tokens, states)
    proj_s, mlp_mm_s = matmuls(model, rows * width)

    from mlx_lm.models.activations import swiglu

    layer = model.model.layers[0]
    inter = layer.mlp.down_proj.weight.shape[1]
    a, b = mx.random.normal((rows, width, inter)), mx.random.normal((rows, width, inter))
    heads, kv_heads = layer.self_attn.n_heads, layer.self_attn.n_kv_heads
    dim = layer.self_attn.q_proj.weight.shape[0] // heads
    q = mx.random.normal((rows, heads, width, dim))
    k = mx.random.normal((rows, kv_heads, width + args.prefix, dim))
    mx.eval(a, b, q, k)
    exp_s = seconds(lambda: mx.eval(mx.exp(a)), 10)
    mul_s = seconds(lambda: mx.eval(a * b), 10)
    swiglu_s = seconds(lambda: mx.eval(swiglu(a, b)), 10)
    sdpa_s = seconds(lambda: mx.eval(mx.fast.scaled_dot_product_attention(q, k, k, scale=dim**-0.5, mask="causal")), 10)
    n_layers, n_el = len(model.model.layers), a.size

    print(f"one batch: {rows} prompts x {width} tokens after a cached prefix of {args.prefix}, {n_layers} layers")
    print(f"forward {forward_s:.3f} s; attention blocks {attention_s:.3f} s, MLP blocks {mlp_s:.3f} s")
    print(f"their matmuls alone: attention projections {proj_s:.3f} s, MLP {mlp_mm_s:.3f} s")
    print(
        f"per layer on ({rows}, {width}, {inter}) float32: exp {1e3 * exp_s:.2f} ms ({1e9 * exp_s / n_el:.1f} ns per "
        f"element), multiply {1e3 * mul_s:.2f} ms, swiglu {1e3 * swiglu_s:.2f} ms; "
        f"attention kernel {1e3 * sdpa_s:.2f} ms"
    )
    print(
        f"swiglu + attention kernel over {n_layers} layers: {n_layers * (swiglu_s + sdpa_s):.3f} s "
        f"= {n_layers * (swiglu_s + sdpa_s) / forward_s:.2f} of the forward"
    )
    print(
        f"\nRESULT forward_s={forward_s:.3f} attention_blocks_s={attention_s:.3f} mlp_blocks_s={mlp_s:.3f} "
        f"projection_matmuls_s={proj_s:.3f} mlp_matmuls_s={mlp_mm_s:.3f} exp_ns_per_element={1e9 * exp_s / n_el:.2f} "
        f"multiply_ns_per_element={1e9 * mul_s / n_el:.2f} swiglu_ms={1e3 * swiglu_s:.2f} sdpa_ms={1e3 * sdpa_s:.2f}"
    )


if __name__ == "__main__":
    main()
