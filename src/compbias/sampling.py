"""Key-derived sampling and answer parsing.

Every random draw is a uniform number derived from (seed, item_id, step) alone and inverted
through the token distribution sorted by descending probability (ties by token id). An answer
therefore never depends on shard count, batch size or processing order.
"""

from __future__ import annotations

import hashlib
import os
import re
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache

import numpy as np

LETTERS = ("A", "B", "C")

_STRICT = (
    re.compile(r"^\s*\(?([ABC])(?:[).:,;!\s]|$)"),
    re.compile(r"answer\s+is\s*:?\s*\(?([ABC])(?:[).:,;!\s]|$)", re.IGNORECASE),
)
_LENIENT_WORD = re.compile(r"\b([ABC])\b")
_LENIENT_ANY = re.compile(r"[abcABC]")


def uniform(seed: int, item_id: str, step: int = 0) -> float:
    """A uniform draw in [0, 1) determined by (seed, item_id, step) only."""
    digest = hashlib.sha256(f"{seed}:{item_id}:{step}".encode()).digest()
    return (int.from_bytes(digest[:8], "big") >> 11) / float(1 << 53)


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


def _head_draws(p: np.ndarray, us: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Tokens drawn within the ``k`` most likely of each row, and which rows drew beyond them."""
    cand = np.argpartition(-p, k, axis=1)[:, : k + 1]
    pc = np.take_along_axis(p, cand, axis=1)
    order = np.lexsort((cand, -pc), axis=1)
    cand, pc = np.take_along_axis(cand, order, axis=1), np.take_along_axis(pc, order, axis=1)
    pos = (np.cumsum(pc, axis=1) <= us[:, None]).sum(axis=1)
    return cand[np.arange(len(p)), np.minimum(pos, k)], pos >= k


@lru_cache(maxsize=1)
def _pool() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1))


def sample_rows(logits: np.ndarray, temperature: float, us: np.ndarray,
                heads: tuple[int, ...] = (64, 2048, 16384), block: int = 16) -> np.ndarray:
    """Vectorised :func:`sorted_distribution` + :func:`invert` for a batch of rows.

    Each row's token is found in the head of its sorted distribution (the ``heads[0]`` most
    likely tokens, then the next head for rows that drew beyond it: flat distributions of
    degraded or random models); only rows beyond every head are sorted in full. Blocks of
    ``block`` rows run on a thread pool (numpy releases the GIL); rows are independent, so
    the result does not depend on the blocking.
    """
    logits = np.asarray(logits)
    us = np.asarray(us)
    if len(logits) <= block or (os.cpu_count() or 1) == 1:
        return _sample_block(logits, temperature, us, heads)
    parts = _pool().map(lambda a: _sample_block(logits[a:a + block], temperature, us[a:a + block], heads),
                        range(0, len(logits), block))
    return np.concatenate(list(parts))


def _sample_block(logits: np.ndarray, temperature: float, us: np.ndarray,
                  heads: tuple[int, ...]) -> np.ndarray:
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
