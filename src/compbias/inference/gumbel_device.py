"""The ``gumbel`` sampler's draws computed by MLX where the logits are, each one certified equal
to :func:`compbias.inference.sampling.gumbel_rows`, which decides the rest. Used on GPUs
(:func:`compbias.inference.sampling.next_tokens`); on a CPU the host sampler is faster.

:func:`~compbias.inference.sampling.gumbel_rows` works in float64 on the host: every row of a
decode step is copied off the device, and a row its 64 most likely tokens do not cover (flat
continuations of degraded or random models) costs a pass of hashing over the whole vocabulary.
Here the same Gumbel-max draw runs in float32 on the device, with a bound on how far each
float32 score can lie from its float64 value. A draw is kept when that bound cannot change it:
the winner leads the runner-up by more than twice the bound, and the mass of the tokens sorted
before it is below :data:`~compbias.inference.noise.HEAD_MASS` by more than its own bound (the
draw is restricted to the head of the distribution). Rows that fail (near ties: about one in a
thousand) are drawn by ``gumbel_rows`` from their copied logits, so every draw is the one the
host sampler gives.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from compbias.inference.noise import HEAD_MASS, token_keys

#: float32's relative rounding unit
_EPS = 2.0**-24

#: rows x vocabulary entries per block: bounds the sampler's temporaries (about twelve arrays
#: of 8 bytes per entry, :data:`SAMPLER_BYTES`; the blocks are independent graphs, each freed as
#: it is consumed, and are evaluated together)
BLOCK_ELEMENTS = 1 << 21
SAMPLER_BYTES = BLOCK_ELEMENTS * 12 * 8


def _mix(x):
    """:func:`compbias.inference.noise._mix` (SplitMix64's finaliser) on MLX uint64 arrays."""
    import mlx.core as mx

    c1, c2 = _constants()
    x = mx.multiply(mx.bitwise_xor(x, mx.right_shift(x, 30)), c1)
    x = mx.multiply(mx.bitwise_xor(x, mx.right_shift(x, 27)), c2)
    return mx.bitwise_xor(x, mx.right_shift(x, 31))


@lru_cache(maxsize=1)
def _constants():
    import mlx.core as mx

    return tuple(mx.array(np.array([c], dtype=np.uint64)) for c in (0xBF58476D1CE4E5B9, 0x94D049BB133111EB))


@lru_cache(maxsize=8)
def _vocab_keys(n_vocab: int):
    import mlx.core as mx

    return mx.array(token_keys(np.arange(n_vocab)))[None, :]


def _gumbel(row_keys, n_vocab: int):
    """float32 standard Gumbel noise G(row key, token) of :func:`compbias.inference.noise.gumbel`
    for every token: its uniform number ``u`` comes from the same 53 bits, and ``-log(u)`` is
    taken as ``-log1p(-(1 - u))`` where ``u >= 1/2`` so that float32 keeps its relative precision."""
    import mlx.core as mx

    k = mx.right_shift(_mix(mx.bitwise_xor(row_keys[:, None], _vocab_keys(n_vocab))), 11)
    low = k < (1 << 52)
    scale = 2.0**-53
    u = (k.astype(mx.float32) + 0.5) * scale
    w = ((mx.array((1 << 53) - 1, dtype=mx.uint64) - k).astype(mx.float32) + 0.5) * scale
    return -mx.log(mx.where(low, -mx.log(u), -mx.log1p(-w)))


def _draw_block(logits, temperature: float, row_keys):
    """(token, certified) per row of one block, unevaluated: the float32 Gumbel-max draw over
    the whole vocabulary and whether it is certainly the float64 draw of ``gumbel_rows``.

    Error bound per score (``M`` the row's largest finite ``|logit / T|``): the scaled logits,
    their maximum and difference carry ``6 eps M``; the log of the float32 sum as much again
    plus ``17 eps`` (tree reduction of up to 2^17 terms); the Gumbel noise ``40 eps`` (values up
    to 37); the final sum ``eps (M + 40)``. ``tol = 1e-6 (4 M + 100)`` exceeds ``13 eps M + 100 eps``.

    The winner's score and logit are taken as maxima over masks rather than gathered: no gather
    kernel for float32 values and argmax's uint32 indices has to be compiled (on CUDA, MLX
    compiles each gather kind at its first use; a fresh process took seconds for each). The
    graph is not ``mx.compile``-d: its fused kernels, one per block shape, took about 3 s each
    to compile in a fresh process, more than they saved.
    """
    import mlx.core as mx

    n, v = logits.shape
    lg = logits.astype(mx.float32)
    z = lg / temperature
    zmax = mx.max(z, axis=1, keepdims=True)
    d = z - zmax
    logp = d - mx.log(mx.sum(mx.exp(d), axis=1, keepdims=True))
    score = logp + _gumbel(row_keys, v)
    best = mx.argmax(score, axis=1)
    ids = mx.arange(v)[None, :]
    at = best[:, None]
    winner = ids == at
    top = mx.max(score, axis=1, keepdims=True)
    runner = mx.max(mx.where(winner, -mx.inf, score), axis=1, keepdims=True)
    lb = mx.max(mx.where(winner, lg, -mx.inf), axis=1, keepdims=True)
    earlier = (lg > lb) | ((lg == lb) & (ids < at))
    before = mx.sum(mx.where(earlier, mx.exp(logp), 0.0), axis=1, keepdims=True)
    big = mx.max(mx.where(mx.isfinite(z), mx.abs(z), 0.0), axis=1, keepdims=True)
    tol = 1e-6 * (4 * big + 100)
    return best, ((top - runner > 2 * tol) & (before * (1 + 2 * tol) + 1e-5 < HEAD_MASS))[:, 0]


@lru_cache(maxsize=1)
def usable() -> bool:
    """Whether this device computes the sampler's noise as the host does: its float32 Gumbel
    noise for a few thousand (key, token) pairs lies within 1e-5 of the float64 noise (a tenth
    of the least tolerance of :func:`_draw_block`; wrong uint64 arithmetic gives errors of order
    1). Checked once per process; where it fails, callers keep the host sampler."""
    import logging

    import mlx.core as mx

    from compbias.inference.noise import gumbel, item_keys, row_keys

    keys = row_keys(item_keys([f"check-{i}" for i in range(4)]), 12345, 2)
    host = gumbel(keys, np.broadcast_to(np.arange(4096), (4, 4096)))
    here = np.array(_gumbel(mx.array(keys), 4096)).astype(np.float64)
    ok = bool(np.abs(here - host).max() < 1e-5)
    if not ok:
        logging.getLogger("compbias").warning("device Gumbel noise differs from the host's: draws stay on the host")
    return ok


def draw(logits, temperature: float, rows: np.ndarray) -> np.ndarray:
    """Gumbel-max draws for MLX ``logits`` rows with row keys ``rows``
    (:func:`compbias.inference.noise.row_keys`): exactly :func:`compbias.inference.sampling.gumbel_rows`
    of the rows copied to the host as float32, computed on the logits' device."""
    import mlx.core as mx

    from compbias.inference.sampling import gumbel_rows
    from compbias.inference.scoring import gather_rows

    n, v = logits.shape
    if n == 0:
        return np.empty(0, dtype=np.int64)
    if temperature <= 0:
        return np.array(mx.argmax(logits, axis=-1)).astype(np.int64)
    keys = mx.array(np.asarray(rows, dtype=np.uint64))
    step = max(1, BLOCK_ELEMENTS // v)
    blocks = [_draw_block(logits[a : a + step], temperature, keys[a : a + step]) for a in range(0, n, step)]
    best, sure = mx.concatenate([b for b, _ in blocks]), mx.concatenate([s for _, s in blocks])
    mx.eval(best, sure)  # one wait for the device per call (a step of a continuation)
    out, sure = np.array(best).astype(np.int64), np.array(sure)
    todo = np.flatnonzero(~sure)
    if len(todo):
        host = np.array(gather_rows(logits, todo).astype(mx.float32))
        out[todo] = gumbel_rows(host, temperature, np.asarray(rows)[todo])
    return out
