"""The keyed random numbers behind every draw (``decoding.rng``).

A draw at (seed, item, step) is coupled across variants by its random numbers: every variant of
a model uses the same ones, so the answers of two variants differ only where their
distributions differ enough to change the outcome.

* ``gumbel`` (default): Gumbel-max. The token drawn is the arg-max over token ids of
  ``log p(token) + G(seed, item_id, step, token)``, with ``G`` standard Gumbel noise computed
  from those four values alone (SplitMix64 hashing), so a near-tie swap between two tokens
  changes the answer for a tiny share of draws. This is how MLX samples
  (``mx.random.categorical`` is ``argmax(logits + gumbel)``), with per-item noise.
* ``reference``: the reference scripts' exact draws. They call ``mx.random.seed(seed)`` before
  each ``mlx_lm.generate``, whose sampler calls ``mx.random.categorical`` on one (1, vocab) row
  per token: step ``s`` of every item of a seed uses the same MLX key (:func:`reference_key`).
  How MLX turns that key into a token depends on its version (:func:`reference_algorithm`):
  since mlx 0.32 (ml-explore/mlx#4177) one row is sampled by inverting its cumulative
  probabilities in token-id order with one uniform number (:func:`reference_uniform`); before,
  by Gumbel-max with a Gumbel vector over the whole vocabulary (:func:`reference_noise`).
* ``icdf``: one uniform number per (seed, item, step), inverted through the distribution sorted
  by descending probability (the sampler of compbias <= 0.1; kept to reproduce old results).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from functools import lru_cache

import numpy as np

RNGS = ("gumbel", "reference", "icdf")

#: Draws are restricted to the most probable tokens covering this much of the mass (ties by id);
#: the rest (< 1e-6 of the probability) never wins.
HEAD_MASS = 1 - 1e-6

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def check_rng(rng: str) -> str:
    """``rng`` if it names a sampler, else ValueError naming the key."""
    if rng not in RNGS:
        raise ValueError(f"decoding.rng: unknown value {rng!r} ({' | '.join(RNGS)})")
    return rng


def uniform(seed: int, item_id: str, step: int = 0) -> float:
    """The ``icdf`` sampler's uniform draw in [0, 1), determined by (seed, item_id, step) only."""
    digest = hashlib.sha256(f"{seed}:{item_id}:{step}".encode()).digest()
    return (int.from_bytes(digest[:8], "big") >> 11) / float(1 << 53)


def _mix(x: np.ndarray, copy: bool = True) -> np.ndarray:
    """SplitMix64's finaliser: a bijection of uint64 whose output bits all depend on every input bit.

    Computed in place, on a copy of ``x`` unless ``copy`` is False (``x`` then is a uint64 array
    the caller gives up)."""
    x = np.array(x, dtype=np.uint64) if copy else x
    with np.errstate(over="ignore"):
        x ^= x >> np.uint64(30)
        x *= np.uint64(0xBF58476D1CE4E5B9)
        x ^= x >> np.uint64(27)
        x *= np.uint64(0x94D049BB133111EB)
        x ^= x >> np.uint64(31)
    return x


@lru_cache(maxsize=65536)
def _item_key(item_id: str) -> int:
    return int.from_bytes(hashlib.sha256(item_id.encode()).digest()[:8], "big")


def item_keys(item_ids: Sequence[str]) -> np.ndarray:
    """A stable 64-bit key per item id (SHA-256), the item's part of every Gumbel key."""
    return np.array([_item_key(i) for i in item_ids], dtype=np.uint64)


def row_keys(keys: np.ndarray, seed: int | np.ndarray, step: int = 0) -> np.ndarray:
    """Per-row keys of (seed, item, step) from :func:`item_keys`; ``seed`` one for all rows or one per row."""
    with np.errstate(over="ignore"):
        salt = _mix(np.asarray(seed).astype(np.uint64) * _GOLDEN + np.uint64(step) + np.uint64(1))
        return _mix(np.asarray(keys, dtype=np.uint64) ^ salt)


def token_keys(token_ids: np.ndarray) -> np.ndarray:
    """The token's part of every Gumbel key (:func:`gumbel`), which callers drawing many seeds
    over the same tokens can compute once."""
    tok = np.asarray(token_ids).astype(np.uint64)
    with np.errstate(over="ignore"):
        return _mix(tok * _GOLDEN + _GOLDEN)


def gumbel(rows: np.ndarray, token_ids: np.ndarray, token_keys_: np.ndarray | None = None) -> np.ndarray:
    """Standard Gumbel noise G(row key, token id), shape ``token_ids.shape`` (rows along axis 0);
    ``token_keys_``, if given, is :func:`token_keys` of ``token_ids``."""
    tok = token_keys(token_ids) if token_keys_ is None else token_keys_
    return gumbel_from_keys(np.asarray(rows, dtype=np.uint64).reshape(-1, *([1] * (tok.ndim - 1))) ^ tok)


def gumbel_from_keys(keys: np.ndarray) -> np.ndarray:
    """:func:`gumbel`'s noise from the combined keys ``row key ^ token key`` (a uint64 array of any
    shape, which this overwrites: callers pass a fresh one)."""
    # every step in place, and the 53 bits converted as int64 (numpy converts uint64 to float64
    # several times slower): the same numbers, in about 0.6 of the time
    bits = _mix(keys, copy=False)
    bits >>= np.uint64(11)
    u = bits.view(np.int64).astype(np.float64)
    u += 0.5
    u /= float(1 << 53)  # in (0, 1)
    np.log(u, out=u)
    np.negative(u, out=u)
    np.log(u, out=u)
    return np.negative(u, out=u)


def reference_key(seed: int, step: int = 0):
    """The MLX key that ``mx.random.categorical`` uses at sampler call ``step`` (0-based) after
    ``mx.random.seed(seed)``: MLX's global key sequence splits its key once per call."""
    import mlx.core as mx

    key = mx.random.key(seed)
    for _ in range(step + 1):
        key, sub = mx.random.split(key)
    return sub


@lru_cache(maxsize=1)
def reference_algorithm() -> str:
    """How the installed MLX's ``categorical`` samples a single (1, vocab) row: ``icdf`` (one
    uniform number inverted through the cumulative probabilities in token-id order) or
    ``gumbel`` (arg-max of logits plus a Gumbel vector); found by probing MLX itself."""
    import mlx.core as mx

    z = np.random.default_rng(0).normal(size=(1, 257)) * 2
    logits = mx.array(z.astype(np.float32))
    cum = np.cumsum(np.exp(z[0] - z.max()) / np.exp(z[0] - z.max()).sum())
    hits = {"icdf": 0, "gumbel": 0}
    for s in range(32):
        key = mx.random.key(s)
        got = mx.random.categorical(logits, key=key).item()
        u = mx.random.uniform(shape=(1,), key=key).item()
        hits["icdf"] += int(np.searchsorted(cum, u, side="right")) == got
        g = mx.random.gumbel(logits.shape, key=key)
        hits["gumbel"] += mx.argmax(logits + g, axis=-1).item() == got
    for name, n in hits.items():
        if n == 32:
            return name
    raise RuntimeError(
        f"decoding.rng reference: this MLX's categorical sampler is not one compbias "
        f"knows (agreement with inverse CDF / Gumbel-max: {hits}); use gumbel"
    )


@lru_cache(maxsize=256)
def reference_uniform(seed: int, step: int = 0) -> float:
    """The uniform number MLX's inverse-CDF path draws at sampler call ``step`` after
    ``mx.random.seed(seed)`` (shared by every item of the seed)."""
    import mlx.core as mx

    return float(mx.random.uniform(shape=(1,), key=reference_key(seed, step)).item())


@lru_cache(maxsize=64)
def _reference_noise(seed: int, step: int, n_vocab: int, dtype: str) -> np.ndarray:
    import mlx.core as mx

    g = mx.random.gumbel((1, n_vocab), dtype=getattr(mx, dtype), key=reference_key(seed, step))
    return np.array(g.astype(mx.float32))[0].astype(np.float64)


def reference_noise(seed: int, step: int, n_vocab: int, dtype: str = "float32") -> np.ndarray:
    """The Gumbel vector (length ``n_vocab``) that the reference protocol adds to the scaled
    log-probabilities at ``step`` of every item of ``seed``, in the logits' ``dtype``."""
    return _reference_noise(int(seed), int(step), int(n_vocab), dtype)
