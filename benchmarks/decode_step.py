"""Where a step of continued decoding spends its time: the device Gumbel draw, the model's forward
of one token per row, and the gather of cache rows (``decoder.take_rows``).

    python -m benchmarks.decode_step CHECKPOINT [--rows 256] [--context 330] [--repeat 10]

On one loaded checkpoint (the workflow's runtime), with ``--rows`` cache rows of ``--context``
positions (zeros: the timings do not depend on the values), it times each part alone, waiting
for the device after each. The last line is ``RESULT ...`` (milliseconds per step).
"""

from __future__ import annotations

import compbias  # noqa: F401  (loads the fast BLAS before MLX)

# isort: split
import argparse

import mlx.core as mx
import numpy as np

from benchmarks.timing import timed
from compbias.inference import gumbel_device
from compbias.inference.decoder import take_rows
from compbias.inference.noise import item_keys, row_keys
from compbias.inference.runtime import load_model, resolve_runtime


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("checkpoint")
    ap.add_argument("--rows", type=int, default=256)
    ap.add_argument("--context", type=int, default=330)
    ap.add_argument("--repeat", type=int, default=10)
    args = ap.parse_args(argv)
    from mlx_lm.models.cache import BatchKVCache

    model, _, _ = load_model(args.checkpoint, resolve_runtime())
    n, length = args.rows, args.context
    logits = model(mx.zeros((1, 1), dtype=mx.int32))[:, -1]
    vocab = logits.shape[-1]
    x = mx.array((np.random.default_rng(0).normal(size=(n, vocab)) * 2).astype(np.float32))
    keys = row_keys(item_keys([str(i) for i in range(n)]), 1, 1)

    dtype = model.layers[0].self_attn.k_proj.weight.dtype  # the compute dtype (llama-style attention)

    def fresh() -> list:
        cache = []
        for layer in model.layers:
            attn = layer.self_attn
            kv = mx.zeros((n, attn.n_kv_heads, length, attn.head_dim), dtype)
            c = BatchKVCache([0] * n)
            c.state = (kv, kv, mx.array([length] * n), mx.array([0] * n), length)
            cache.append(c)
        mx.eval([c.keys for c in cache])
        return cache

    state = {"cache": fresh()}
    tokens = mx.ones((n, 1), dtype=mx.int32)

    def forward(gather: bool) -> None:
        if state["cache"][0]._idx > length + 200:  # keep the context about --context long
            state["cache"] = fresh()
        if gather:
            take_rows(state["cache"], list(range(n)), [0] * n)
        mx.eval(model(tokens, cache=state["cache"])[:, -1])

    draw = timed(lambda: gumbel_device.draw(x, 0.3, keys), args.repeat)
    fwd = timed(lambda: forward(False), args.repeat)
    step = timed(lambda: forward(True), args.repeat)
    print(f"{n} rows, {length} cached positions, vocabulary {vocab}, device {mx.default_device()}")
    print(f"device Gumbel draw {draw:.2f} ms; forward {fwd:.2f} ms; gather + forward {step:.2f} ms")
    print(f"RESULT draw_ms={draw:.2f} forward_ms={fwd:.2f} gather_forward_ms={step:.2f} rows={n} context={length}")


if __name__ == "__main__":
    main()
