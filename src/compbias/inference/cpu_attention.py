"""MLX's CPU attention with the softmax's ``exp`` built by MLX's JIT, with the same results.

On a CPU ``mx.fast.scaled_dot_product_attention`` runs its fallback (``mlx/fast.cpp``): the
queries times ``scale``, ``q @ k^T``, the mask, ``softmax(precise=True)``, ``@ v``. The Linux
wheel's softmax kernel computes ``exp`` with the scalar polynomial of ``simd/math.h``, whose
``std::fma`` are libm calls in that build (no ``-mfma``): most of the attention's time
(:mod:`compbias.inference.cpu_jit`). :func:`attention` runs the same ops, with the softmax
written as the kernel computes it on x86-64, where its SIMD width is one lane: the row maximum,
``exp(x - max)`` (a compiled kernel: MLX's JIT builds it, with hardware fma where
:func:`compbias.inference.cpu_jit.use_fma_jit` applies), the sum from left to right and a
multiply by its reciprocal. The same operations in the same order give the same bits
(``tests/test_cpu_attention.py``), and :func:`use_jit_softmax` checks them once per process
(:func:`same_bits`). On 2 cores one SmolLM2 layer's attention over 16 x 60 queries took 7.6 ms
instead of 13.2.
"""

from __future__ import annotations

import logging
import os
import platform
from functools import lru_cache

import mlx.core as mx

_ORIGINAL = mx.fast.scaled_dot_product_attention


@mx.compile
def _exp_shifted(x: mx.array, peak: mx.array) -> mx.array:
    return mx.exp(x - peak)


def _softmax(scores: mx.array) -> mx.array:
    e = _exp_shifted(scores, scores.max(axis=-1, keepdims=True))
    return e * (1 / e.sum(axis=-1, keepdims=True))


def attention(q, k, v, *, scale, mask=None, sinks=None, force_fused=False, stream=None):
    """``mx.fast.scaled_dot_product_attention`` (same arguments and results): float32 inputs on
    the CPU without sinks run the ops of MLX's fallback with this module's softmax, anything
    else MLX's own function."""
    if (
        sinks is not None
        or force_fused
        or stream is not None
        or mx.default_device() != mx.cpu
        or not q.dtype == k.dtype == v.dtype == mx.float32
    ):
        return _ORIGINAL(q, k, v, scale=scale, mask=mask, sinks=sinks, force_fused=force_fused, stream=stream)
    n_kv = k.shape[1]
    repeats = q.shape[1] // n_kv
    q = mx.multiply(mx.array(scale, q.dtype), q)
    if repeats > 1:
        q = mx.unflatten(q, 1, (n_kv, repeats))
        k, v = mx.expand_dims(k, 2), mx.expand_dims(v, 2)
    scores = q @ mx.swapaxes(k, -1, -2)
    if isinstance(mask, str):  # "causal": the last query aligned with the last key
        k_len, q_len = k.shape[-2], q.shape[-2]
        mask = mx.arange(k_len - q_len, k_len)[:, None] >= mx.arange(k_len)[None]
    elif mask is not None and repeats > 1 and mask.ndim >= 3:
        mask = mx.expand_dims(mask, -3) if mask.shape[-3] == 1 else mx.unflatten(mask, -3, (n_kv, repeats))
    if mask is not None:
        if mask.dtype == mx.bool_:
            scores = mx.where(mask, scores, mx.array(mx.finfo(scores.dtype).min, scores.dtype))
        else:
            scores = scores + mask
    out = _softmax(scores) @ v
    return mx.flatten(out, 1, 2) if repeats > 1 else out


@lru_cache(maxsize=1)
def same_bits() -> bool:
    """Whether :func:`attention` gives MLX's own bits here, on a few grouped-head cases (causal,
    left-padded), checked once per process: another MLX build (a wider softmax kernel, another
    order of its sum) would not, and then MLX's own stays."""
    key = mx.random.key(7)
    with mx.stream(mx.cpu):
        q, k, v = (
            mx.random.normal(s, key=mx.random.split(key, 3)[i])
            for i, s in enumerate(((3, 6, 9, 16), (3, 2, 21, 16), (3, 2, 21, 16)))
        )
        q = q * 20
        left = (mx.arange(21)[None, None, None, :] >= mx.array([0, 4, 9])[:, None, None, None]) & (
            mx.arange(12, 21)[:, None] >= mx.arange(21)[None]
        )
        for mask in ("causal", left):
            want, got = _ORIGINAL(q, k, v, scale=0.25, mask=mask), attention(q, k, v, scale=0.25, mask=mask)
            if not mx.array_equal(mx.view(want, mx.uint32), mx.view(got, mx.uint32)).item():
                logging.getLogger("compbias").warning("CPU attention differs from MLX's own here: MLX's is kept")
                return False
    return True


def use_jit_softmax(setting: str | None = None) -> bool:
    """Make :func:`attention` MLX's ``mx.fast.scaled_dot_product_attention`` in this process
    (mlx_lm's models look it up there at each call). Only on x86-64 Linux, where the wheel's
    softmax is the one-lane kernel :func:`attention` reproduces, and where :func:`same_bits`
    holds; ``setting`` (default the ``COMPBIAS_CPU_SOFTMAX`` environment variable) ``off``
    leaves MLX's own. Returns whether it is installed."""
    setting = setting or os.environ.get("COMPBIAS_CPU_SOFTMAX", "auto")
    linux_x86 = platform.system() == "Linux" and platform.machine() in ("x86_64", "AMD64")
    applies = setting != "off" and linux_x86 and same_bits()
    mx.fast.scaled_dot_product_attention = attention if applies else _ORIGINAL
    return applies
