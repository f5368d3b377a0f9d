"""Keyed sampling (first tokens from stored heads, continued decoding from logits) and parsing.

Every draw at (seed, item, step) is a function of those values and the token distribution only
(the samplers of :mod:`compbias.inference.noise`), so an answer never depends on shard count, batch size
or processing order.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from typing import TypeVar

import numpy as np

from compbias.inference.noise import (
    HEAD_MASS,
    check_rng,
    gumbel,
    gumbel_from_keys,
    item_keys,
    reference_algorithm,
    reference_noise,
    reference_uniform,
    row_keys,
    token_keys,
    uniform,
)

LETTERS = ("A", "B", "C")

T = TypeVar("T")

_STRICT = (
    re.compile(r"^\s*\(?([ABC])(?:[).:,;!\s]|$)"),
    re.compile(r"answer\s+is\s*:?\s*\(?([ABC])(?:[).:,;!\s]|$)", re.IGNORECASE),
)
_LENIENT_WORD = re.compile(r"\b([ABC])\b")
_LENIENT_ANY = re.compile(r"[abcABC]")


def invert(u: float, probs: np.ndarray) -> int | None:
    """Position of the token whose cumulative-probability interval contains ``u``; None when
    ``u`` lies beyond the listed mass (the caller then needs the full distribution)."""
    k = int(np.searchsorted(np.cumsum(probs, dtype=np.float64), u, side="right"))
    return k if k < len(probs) else None


def sorted_distribution(logits: np.ndarray, temperature: float) -> tuple[np.ndarray, np.ndarray]:
    """(token ids, probabilities) of softmax(logits / T), sorted by descending probability.

    ``temperature`` 0 means greedy: all mass on the arg-max token.
    """
    logits = np.asarray(logits, dtype=np.float64)
    if temperature <= 0:
        top = int(np.argmax(logits))
        return np.array([top]), np.array([1.0])
    z = logits / temperature
    p = np.exp(z - z.max())
    p /= p.sum()
    order = np.lexsort((np.arange(len(p)), -p))
    return order, p[order]


def _top_sorted(p: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(token ids, probabilities) of the ``n`` most likely tokens of each row of ``p``, sorted by
    descending probability, ties by id."""
    if n >= p.shape[1]:  # a stable sort of the id-ordered rows: ties stay in id order
        order = np.argsort(-p, axis=1, kind="stable")
        return order, np.take_along_axis(p, order, axis=1)
    cand = np.argpartition(-p, n - 1, axis=1)[:, :n]
    pc = np.take_along_axis(p, cand, axis=1)
    order = np.lexsort((cand, -pc), axis=1)
    return np.take_along_axis(cand, order, axis=1), np.take_along_axis(pc, order, axis=1)


def _head_draws(p: np.ndarray, us: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Tokens drawn within the ``k`` most likely of each row, and which rows drew beyond them."""
    cand, pc = _top_sorted(p, k + 1)
    pos = (np.cumsum(pc, axis=1) <= us[:, None]).sum(axis=1)
    return cand[np.arange(len(p)), np.minimum(pos, k)], pos >= k


@lru_cache(maxsize=1)
def _pool() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1))


def sample_rows(
    logits: np.ndarray, temperature: float, us: np.ndarray, heads: tuple[int, ...] = (64, 2048, 16384), block: int = 16
) -> np.ndarray:
    """Vectorised :func:`sorted_distribution` + :func:`invert` for a batch of rows.

    Each row's token is found in the head of its sorted distribution (the ``heads[0]`` most
    likely tokens, then the next head for rows that drew beyond it: flat distributions of
    degraded or random models); only rows beyond every head are sorted in full. Blocks of
    ``block`` rows run on a thread pool (numpy releases the GIL); rows are independent, so
    the result does not depend on the blocking.
    """
    return _by_blocks(_sample_block, np.asarray(logits), temperature, np.asarray(us), heads, block)


def map_row_blocks(fn: Callable[[int, int], T], n: int, block: int) -> list[T]:
    """``[fn(start, stop) ...]`` over consecutive blocks of ``block`` of ``n`` rows, in order, run
    on a thread pool (numpy releases the GIL in its array loops); one call when ``n <= block`` or
    there is one CPU. For work whose rows are independent, so that the blocking cannot change it."""
    if n <= block or (os.cpu_count() or 1) == 1:
        return [fn(0, n)]
    return list(_pool().map(lambda a: fn(a, min(a + block, n)), range(0, n, block)))


def _by_blocks(fn, logits: np.ndarray, temperature: float, keys: np.ndarray, heads, block: int) -> np.ndarray:
    """``fn(logits, temperature, keys, heads)`` over blocks of ``block`` rows (:func:`map_row_blocks`)."""
    parts = map_row_blocks(lambda a, b: fn(logits[a:b], temperature, keys[a:b], heads), len(logits), block)
    return parts[0] if len(parts) == 1 else np.concatenate(parts)


def _sample_block(logits: np.ndarray, temperature: float, us: np.ndarray, heads: tuple[int, ...]) -> np.ndarray:
    logits = np.asarray(logits, dtype=np.float64)
    if temperature <= 0:
        return logits.argmax(axis=1)
    z = logits / temperature
    p = np.exp(z - z.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    out = np.zeros(len(p), dtype=np.int64)
    rows = np.arange(len(p))
    for head in heads:
        k = min(head, p.shape[1] - 1)
        tok, beyond = _head_draws(p[rows], us[rows], k)
        out[rows] = tok
        rows = rows[beyond]
        if not len(rows) or k == p.shape[1] - 1:
            return out
    for row in rows:  # rare: the draw lies beyond every head
        ids, probs = sorted_distribution(logits[row], temperature)
        j = invert(float(us[row]), probs)
        out[row] = ids[-1 if j is None else j]
    return out


class Heads:
    """Stored heads of next-token distributions (a scores shard's ``top_ids`` / ``top_probs``,
    sorted by descending probability) for a list of items, padded for vectorised draws."""

    def __init__(self, item_ids: Sequence[str], top_ids: Sequence[Sequence[int]], top_probs: Sequence[Sequence[float]]):
        n, width = len(item_ids), max((len(t) for t in top_ids), default=1)
        self.item_ids = list(item_ids)
        self.ids = np.full((n, width), -1, dtype=np.int64)
        probs = np.zeros((n, width))
        for row, (ids, p) in enumerate(zip(top_ids, top_probs)):
            self.ids[row, : len(ids)] = ids
            probs[row, : len(p)] = p
        self.cum = np.cumsum(probs, axis=1)
        with np.errstate(divide="ignore"):
            self.logp = np.where(self.ids >= 0, np.log(probs), -np.inf)
        #: the head holds every token a Gumbel draw can pick (mass >= HEAD_MASS)
        self.complete = self.cum[:, -1] >= HEAD_MASS
        # a head short of HEAD_MASS gives -1 whatever its noise, so only complete heads are drawn
        # (a heavily compressed model's heads are often all incomplete)
        self._rows = np.flatnonzero(self.complete)
        self._ids = np.maximum(self.ids[self._rows], 0)
        self._logp = self.logp[self._rows]
        self._gumbel_keys: tuple[np.ndarray, np.ndarray] | None = None

    @property
    def drawn_entries(self) -> int:
        """Head entries a ``gumbel`` draw computes noise for (those of complete heads)."""
        return int(self._ids.size)

    def _keys(self) -> tuple[np.ndarray, np.ndarray]:
        """The drawn rows' item keys and their tokens' keys, computed on first use and set in one
        assignment (threads drawing different seeds share the Heads)."""
        if self._gumbel_keys is None:
            self._gumbel_keys = (item_keys([self.item_ids[r] for r in self._rows]), token_keys(self._ids))
        return self._gumbel_keys

    def draw(
        self, rng: str, seed: int, n_vocab: int | None = None, step: int = 0, dtype: str = "float32"
    ) -> np.ndarray:
        """Per row: the position in its head of the token drawn for ``seed`` at ``step`` under
        ``rng``, or -1 when the draw needs the full distribution (``icdf``: the uniform lies
        beyond the listed mass; ``gumbel`` / ``reference``: the head covers < HEAD_MASS).

        ``n_vocab`` (the logits' width) and ``dtype`` (the logits' dtype) are needed by
        ``reference``, whose noise is a Gumbel vector over the whole vocabulary.
        """
        check_rng(rng)
        if rng == "icdf":
            us = np.array([uniform(seed, i, step) for i in self.item_ids])
            pos = (self.cum <= us[:, None]).sum(axis=1)
            return np.where((pos < (self.ids >= 0).sum(axis=1)), pos, -1)
        if rng == "reference" and reference_algorithm() == "icdf":
            return self._reference_icdf(reference_uniform(seed, step))
        if rng == "reference" and n_vocab is None:
            raise ValueError("decoding.rng reference needs the vocabulary size (scores n_vocab)")
        pos = np.full(len(self.item_ids), -1, dtype=np.int64)
        if not len(self._rows):
            return pos
        if rng == "gumbel":
            keys, tok = self._keys()
            noise = gumbel(row_keys(keys, seed, step), self._ids, tok)
        else:
            noise = reference_noise(seed, step, n_vocab, dtype)[self._ids]
        pos[self._rows] = np.argmax(self._logp + noise, axis=1)
        return pos

    def draw_seeds(
        self, rng: str, seeds: Sequence[int], n_vocab: int | None = None, step: int = 0, dtype: str = "float32"
    ) -> np.ndarray:
        """:meth:`draw` for each of ``seeds``, shape (len(seeds), rows): the same positions.

        ``gumbel`` draws every seed in one pass over a (seeds x rows, width) array, which for
        small heads saves most of the per-call cost of one :meth:`draw` per seed."""
        shape = (len(seeds), len(self.item_ids))
        if rng != "gumbel":
            return np.stack([self.draw(rng, int(s), n_vocab, step, dtype) for s in seeds]).reshape(shape)
        pos = np.full(shape, -1, dtype=np.int64)
        if not len(self._rows):
            return pos
        item, tok = self._keys()
        rows = row_keys(item[None, :], np.asarray(seeds, dtype=np.int64)[:, None], step)  # (seeds, rows)
        noise = gumbel_from_keys(rows[:, :, None] ^ tok)  # (seeds, rows, width)
        noise += self._logp
        pos[:, self._rows] = np.argmax(noise, axis=2)
        return pos

    def _reference_icdf(self, u: float) -> np.ndarray:
        """MLX's one-row inverse CDF in token-id order, over the head (the tail's < 1e-6 of
        mass between head ids is left out)."""
        by_id = np.argsort(np.where(self.ids >= 0, self.ids, np.iinfo(np.int64).max), axis=1)
        p = np.exp(np.take_along_axis(self.logp, by_id, axis=1))
        k = (np.cumsum(p, axis=1) <= u).sum(axis=1)
        inside = (k < (self.ids >= 0).sum(axis=1)) & self.complete
        pos = np.take_along_axis(by_id, np.minimum(k, by_id.shape[1] - 1)[:, None], axis=1)[:, 0]
        return np.where(inside, pos, -1)


def gumbel_rows(
    logits: np.ndarray,
    temperature: float,
    rows: np.ndarray,
    heads: tuple[int, ...] = (64,),
    block: int = 16,
) -> np.ndarray:
    """Gumbel-max draws for a batch of logit rows: per row the arg-max of ``log p + G(row key,
    token)`` over the most probable tokens covering :data:`HEAD_MASS` of the mass (ties by id).

    ``rows`` are :func:`compbias.inference.noise.row_keys`. A row is drawn within its ``heads[0]``
    most likely tokens when they cover that mass; otherwise over its whole vocabulary without
    sorting (:func:`_vocab_gumbel`), and sorted in full only when the winner lies at the head's
    edge or ties.
    """
    logits = np.asarray(logits)
    if temperature <= 0:
        return logits.argmax(axis=1)
    return _by_blocks(_gumbel_block, logits, temperature, rows, heads, block)


def _gumbel_block(logits: np.ndarray, temperature: float, rows: np.ndarray, heads: tuple[int, ...]) -> np.ndarray:
    logits = np.asarray(logits, dtype=np.float64)
    z = logits / temperature
    z -= z.max(axis=1, keepdims=True)
    p = np.exp(z)
    p /= p.sum(axis=1, keepdims=True)
    out = np.zeros(len(p), dtype=np.int64)
    best, covered = _head_gumbel(p, rows, min(heads[0], p.shape[1]))
    out[covered] = best[covered]
    todo = np.flatnonzero(~covered)
    if len(todo):
        best, sure = _vocab_gumbel(p[todo], rows[todo])
        out[todo[sure]] = best[sure]
        todo = todo[~sure]
    if len(todo):  # the winner lies at the edge of the head (or ties): the sorted draw decides
        out[todo] = _head_gumbel(p[todo], rows[todo], p.shape[1])[0]
    return out


@lru_cache(maxsize=8)
def _vocab_token_keys(n_vocab: int) -> np.ndarray:
    return token_keys(np.arange(n_vocab))


def _vocab_gumbel(p: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The Gumbel-max draw of each row of ``p`` over its whole vocabulary without sorting, and
    whether it is the draw of :func:`_head_gumbel`'s sorted head: it is when the winner lies
    inside the head (the mass sorted before it is below :data:`HEAD_MASS` by more than any
    summation order can change, 1e-9) and no other token ties its score."""
    n, v = p.shape
    with np.errstate(divide="ignore"):
        keys = np.broadcast_to(_vocab_token_keys(v), p.shape)
        score = np.log(p) + gumbel(rows, np.broadcast_to(np.arange(v), p.shape), keys)
    best = np.argmax(score, axis=1)
    at = np.arange(n)
    ties = (score == score[at, best][:, None]).sum(axis=1) > 1
    pw = p[at, best][:, None]
    earlier = (p > pw) | ((p == pw) & (np.arange(v) < best[:, None]))
    before = np.where(earlier, p, 0.0).sum(axis=1)
    return best, (before < HEAD_MASS - 1e-9) & ~ties


def _head_gumbel(p: np.ndarray, rows: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per row of ``p``: the Gumbel-max draw among its ``k`` most probable tokens cut at
    :data:`HEAD_MASS`, and whether those cover that mass (else the draw is not final)."""
    cand, pc = _top_sorted(p, k)
    cum = np.cumsum(pc, axis=1)
    covered = cum[:, -1] >= HEAD_MASS if k < p.shape[1] else np.ones(len(p), bool)
    inside = np.concatenate([np.ones((len(p), 1), bool), cum[:, :-1] < HEAD_MASS], axis=1)
    with np.errstate(divide="ignore"):
        score = np.where(inside, np.log(pc), -np.inf) + gumbel(rows, cand)
    return cand[np.arange(len(p)), np.argmax(score, axis=1)], covered


def reference_rows(logits, temperature: float, seed: int, step: int) -> np.ndarray:
    """The reference protocol's draws for a batch of MLX logit rows (all of one seed): per row
    exactly ``mlx_lm``'s sampler after ``mx.random.seed(seed)``, i.e.
    ``mx.random.categorical(logprobs[None] * (1 / T))`` with the key of sampler call ``step``,
    whichever algorithm the installed MLX uses for it."""
    import mlx.core as mx

    from compbias.inference.noise import reference_key

    if temperature <= 0:
        return np.array(mx.argmax(logits, axis=-1)).astype(np.int64)
    key = reference_key(seed, step)
    logprobs = logits - mx.logsumexp(logits, axis=-1, keepdims=True)
    return np.array(
        [
            mx.random.categorical(logprobs[j : j + 1] * (1 / temperature), key=key).item()
            for j in range(logits.shape[0])
        ],
        dtype=np.int64,
    )


def next_tokens(
    rng: str, logits, temperature: float, seeds: int | Sequence[int], item_ids: Sequence[str], step: int
) -> np.ndarray:
    """Tokens drawn at ``step`` for rows of MLX ``logits`` (one per item of ``item_ids``), each
    with its seed (``seeds``: one per row, or one for all). On a GPU the ``gumbel`` draws run
    there (:mod:`compbias.inference.gumbel_device`, the same tokens)."""
    import mlx.core as mx

    from compbias.inference.scoring import gather_rows

    check_rng(rng)
    seeds = np.broadcast_to(np.asarray(seeds, dtype=np.int64), (len(item_ids),))
    if rng == "reference":  # one sampler key per (seed, step): rows grouped by seed
        out = np.empty(len(item_ids), dtype=np.int64)
        for s in np.unique(seeds):
            idx = np.flatnonzero(seeds == s)
            rows = logits if len(idx) == len(item_ids) else gather_rows(logits, idx)
            out[idx] = reference_rows(rows, temperature, int(s), step)
        return out
    if rng == "gumbel":
        keys = row_keys(item_keys(item_ids), seeds, step)
        if mx.default_device().type == mx.DeviceType.gpu:  # no copy of the rows to the host
            from compbias.inference import gumbel_device

            if gumbel_device.usable():
                return gumbel_device.draw(logits, temperature, keys)
        return gumbel_rows(np.array(logits.astype(mx.float32)), temperature, keys)
    rows = np.array(logits.astype(mx.float32))
    return sample_rows(rows, temperature, np.array([uniform(int(s), i, step) for s, i in zip(seeds, item_ids)]))


def parse_letter(text: str, parser: str = "strict") -> str | None:
    """The answer letter in ``text``, or None.

    ``strict``: a leading letter ("A", "(A)", "A)", "A.") or "answer is A".
    ``lenient`` (the reference study): strict, then any standalone A/B/C, then the first a/b/c
    character of any case, so "Cannot be determined" reads as C.
    """
    for rx in _STRICT:
        m = rx.search(text)
        if m:
            return m.group(1).upper()
    if parser == "strict":
        return None
    if parser != "lenient":
        raise ValueError(f"decoding.parser: unknown value {parser!r} (strict | lenient)")
    m = _LENIENT_WORD.search(text) or _LENIENT_ANY.search(text)
    return m.group(0).strip().upper() if m else None


def letter_token_ids(tokenizer) -> dict[str, list[int]]:
    """Vocabulary ids that decode to exactly one answer letter, bare or with white space."""
    out: dict[str, list[int]] = {letter: [] for letter in LETTERS}
    for tok, idx in tokenizer.get_vocab().items():
        if len(tok) > 6 or not tok or tok[-1] not in "ABC":
            continue
        text = tokenizer.decode([idx]).strip()
        if text in out:
            out[text].append(int(idx))
    for letter, ids in out.items():
        if not ids:
            raise ValueError(f"tokenizer has no token for the bare letter {letter!r}")
        ids.sort()
    return out
