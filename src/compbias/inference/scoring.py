"""One batched forward pass per item: the next-token distribution every seed samples from.

Prompts are sorted by length and right-padded: under a causal mask padding after the last real
token cannot change it, so no padding mask is needed. The token prefix shared by all prompts
(system message and template header) is computed once and its KV cache reused by every batch.
Only the hidden state at each prompt's last token goes through the LM head.
"""

from __future__ import annotations

import contextlib
import os
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache

import mlx.core as mx
import numpy as np
import polars as pl

from compbias.inference.sampling import LETTERS, map_row_blocks

#: Model types whose ``Model.__call__`` is ``model.model`` followed by the LM head, so the head can
#: be applied to last positions only. Others run the full model call (same result, more work).
HEAD_SPLIT_TYPES = {"llama", "mistral", "qwen2", "qwen3", "phi3", "olmo2", "granite"}


def common_prefix(token_lists: Sequence[Sequence[int]]) -> int:
    """Length of the token prefix shared by all lists, leaving at least one token in each."""
    first = token_lists[0]
    n = min(len(t) for t in token_lists) - 1
    for t in token_lists[1:]:
        k = 0
        while k < n and t[k] == first[k]:
            k += 1
        n = k
    return max(n, 0)


def batches(lengths: Sequence[int], batch_tokens: int, max_batch: int) -> list[np.ndarray]:
    """Index batches of length-sorted prompts whose padded size stays within ``batch_tokens``."""
    order = np.argsort(np.asarray(lengths), kind="stable")
    out, cur = [], []
    for i in order:
        if cur and (len(cur) + 1) * lengths[i] > batch_tokens or len(cur) >= max_batch:
            out.append(np.array(cur))
            cur = []
        cur.append(int(i))
    if cur:
        out.append(np.array(cur))
    return out


def head_logits(model, h: mx.array) -> mx.array:
    """The model's LM head (tied embedding or ``lm_head``) applied to hidden states ``h``."""
    args = getattr(model, "args", None)
    if getattr(args, "tie_word_embeddings", False) or not hasattr(model, "lm_head"):
        return model.model.embed_tokens.as_linear(h)
    return model.lm_head(h)


def logits_at(model, inputs: mx.array, cache, last: mx.array) -> mx.array:
    """Next-token logits after position ``last`` (shape (B, 1, 1)) of each row of ``inputs``,
    with the LM head applied to those positions only where the architecture allows it."""
    if getattr(model, "model_type", None) in HEAD_SPLIT_TYPES and hasattr(model, "model"):
        return head_logits(model, _at(model.model(inputs, cache), last))
    return _at(model(inputs, cache=cache), last)


def _at(x: mx.array, last: mx.array) -> mx.array:
    """Row ``b`` of (B, L, D) ``x`` at position ``last[b]``: ``take_along_axis`` along axis 1,
    done as a row gather of the flattened array, the kernel that embedding lookups and cache row
    gathers use too (on CUDA each gather kind is compiled at its first use)."""
    n, length = x.shape[:2]
    return mx.take(x.reshape(n * length, -1), mx.arange(n) * length + last.reshape(-1), axis=0)


def gather_rows(x: mx.array, rows: Sequence[int] | np.ndarray) -> mx.array:
    """``x[rows]`` for a 2-D MLX array ``x``, with int32 indices and float32 rows gathered through
    a bfloat16 view (bit for bit). MLX's CUDA backend compiles one gather kernel per value and
    index dtype at its first use, seconds each in a fresh process, and the model's embedding
    lookups have compiled the bfloat16/int32 one already."""
    idx = mx.array(np.asarray(rows, dtype=np.int32))
    if x.dtype == mx.float32:
        return mx.view(mx.view(x, mx.bfloat16)[idx], mx.float32)
    return x[idx]


def plain_kv(model) -> bool:
    """Whether every layer of ``model`` uses mlx_lm's plain KVCache (whose rows can be shared,
    repeated and re-padded, so answers can continue from a batch's cache); sliding-window or
    hybrid caches cannot."""
    from mlx_lm.models.cache import KVCache, make_prompt_cache

    return all(type(c) is KVCache for c in make_prompt_cache(model))


def _prefix_cache(model, prefix: Sequence[int]):
    """KV cache of ``prefix`` (None when it is empty or the model's caches cannot be shared
    across a batch)."""
    from mlx_lm.models.cache import make_prompt_cache

    if not prefix or not plain_kv(model):
        return None
    cache = make_prompt_cache(model)
    model(mx.array(prefix)[None], cache=cache)
    mx.eval([c.state for c in cache])
    return [c.state for c in cache]


def _batch_cache(states, size: int, layers: int):
    """Per-layer KVCache of a batch: the prefix ``states`` repeated ``size`` times, or empty
    caches (``layers`` of them) when there is no prefix."""
    from mlx_lm.models.cache import KVCache

    if states is None:
        return [KVCache() for _ in range(layers)]
    caches = []
    for keys, values, offset in states:
        c = KVCache()
        c.state = (mx.repeat(keys[..., :offset, :], size, 0), mx.repeat(values[..., :offset, :], size, 0), offset)
        caches.append(c)
    return caches


@dataclass
class PromptBatch:
    """One batch of the prompt pass: prompt indices, their next-token logits (MLX, float32)
    and, when kept, the batch's right-padded KV cache (row ``r`` holds ``lengths[r]`` real
    positions, shared prefix included), from which answers can be continued
    (:func:`continuation_cache`)."""

    idx: np.ndarray
    logits: mx.array
    cache: list | None
    lengths: list[int]


#: Batches of the prompt pass launched on a GPU before the caller gets a batch: the device works
#: on them while the host draws and continues that batch's answers.
PREFETCH = 1


def prompt_batches(
    model, token_lists: Sequence[Sequence[int]], batch_tokens: int = 1024, max_batch: int = 16, keep_cache=False
) -> Iterator[PromptBatch]:
    """The prompt pass in length-sorted batches (:func:`batches`), one :class:`PromptBatch` each.

    ``keep_cache`` keeps each batch's KV cache (models with :func:`plain_kv` caches only;
    otherwise ``cache`` is None). On a GPU the next :data:`PREFETCH` batches are launched before a
    batch is yielded, so they run while the caller works on this one.
    """
    n_prefix = common_prefix(token_lists) if len(token_lists) > 1 else len(token_lists[0]) - 1
    states = _prefix_cache(model, token_lists[0][:n_prefix])
    if states is None:
        n_prefix = 0
    keep = keep_cache and plain_kv(model)
    suffixes = [t[n_prefix:] for t in token_lists]
    lengths = [len(s) for s in suffixes]

    def launch(idx: np.ndarray) -> PromptBatch:
        width = max(lengths[i] for i in idx)
        tokens = np.zeros((len(idx), width), dtype=np.int32)
        for row, i in enumerate(idx):
            tokens[row, : lengths[i]] = suffixes[i]
        last = mx.array([lengths[i] - 1 for i in idx])[:, None, None]
        cache = _batch_cache(states, len(idx), len(model.layers)) if states is not None or keep else None
        logits = logits_at(model, mx.array(tokens), cache, last).astype(mx.float32)
        mx.async_eval(logits)
        return PromptBatch(idx, logits, cache if keep else None, [n_prefix + lengths[i] for i in idx])

    ahead = 0 if mx.default_device() == mx.cpu else PREFETCH
    pending: deque[PromptBatch] = deque()
    for idx in batches(lengths, batch_tokens, max_batch):
        pending.append(launch(idx))
        if len(pending) > ahead:
            yield pending.popleft()
    while pending:
        yield pending.popleft()


@lru_cache(maxsize=1)
def _side_stream():
    return mx.new_stream(mx.default_device())


def side_stream():
    """Context for the work done on a yielded :class:`PromptBatch` (drawing and continuing its
    answers): on a GPU a second MLX stream, so that it runs beside the next batch's forward,
    launched before this batch was yielded, instead of queued behind it (the same kernels on the
    same inputs: the same results); on a CPU, or with ``COMPBIAS_SIDE_STREAM=0``, the default
    stream."""
    if mx.default_device() == mx.cpu or os.environ.get("COMPBIAS_SIDE_STREAM") == "0":
        return contextlib.nullcontext()
    return mx.stream(_side_stream())


def last_logits(
    model, token_lists: Sequence[Sequence[int]], batch_tokens: int = 1024, max_batch: int = 16
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield (prompt indices, float32 next-token logits of shape (len(indices), vocab)).

    The logits of a prompt are those after its last token, as ``mlx_lm.generate`` would sample.
    """
    for batch in prompt_batches(model, token_lists, batch_tokens, max_batch):
        yield batch.idx, np.array(batch.logits)


def _rolled(keys, values, rows: Sequence[int], lengths: Sequence[int], width: int, room: int) -> tuple:
    """Rows ``rows`` of right-padded ``keys`` / ``values`` (row r holds ``lengths[r]`` positions)
    rolled to end at ``width``, with ``room`` positions after it: position t of row r holds its
    position t - (width - lengths[r]); those before (masked as left padding) and after ``width``
    (overwritten as answers continue) hold what is clipped to. One row gather of the flattened
    arrays (the kernel of :func:`_at`) selects and rolls the rows at once."""
    n, heads, cap, dim = keys.shape
    pad = mx.array([width - k for k in lengths])[:, None]
    pos = mx.clip(mx.arange(width + room)[None, :] - pad, 0, width - 1)
    base = (mx.array(list(rows))[:, None] * heads + mx.arange(heads)[None, :]) * cap
    idx = base[:, :, None] + pos[:, None, :]
    return tuple(mx.take(x.reshape(n * heads * cap, dim), idx, axis=0) for x in (keys, values))


def continuation_cache(batch: PromptBatch, rows: Sequence[int], room: int = 0) -> list:
    """mlx_lm BatchKVCache per layer for continuing rows ``rows`` (repeats allowed) of a kept
    batch cache, left-padded as mlx_lm's batch generator leaves them after
    ``BatchKVCache.prepare(right_padding=...)`` and ``finalize``, so that each row continues at
    its own position with its padding masked, and with room for ``room`` more positions before
    mlx_lm grows it (by 256: a copy of every row).

    The rows are selected and rolled by one gather per layer from the batch's cache
    (:func:`_rolled`), which stays as it is for the batch's other continuations."""
    from mlx_lm.models.cache import BatchKVCache

    lengths = [batch.lengths[r] for r in rows]
    width = max(lengths)
    layers = [_rolled(c.keys, c.values, rows, lengths, width, room) for c in batch.cache]
    out = []
    for keys, values in layers:
        c = BatchKVCache([width - n for n in lengths])
        c.keys, c.values = keys, values
        c.offset, c._idx = mx.array(lengths), width
        out.append(c)
    return out


#: Tokens per block of :func:`top_candidates`' first pass.
CANDIDATE_BLOCK = 64


def top_candidates(p: np.ndarray, m: int) -> np.ndarray:
    """Per row of ``p``, the ids of its ``m`` largest entries, ties by id (in no order): every
    entry greater than the ``m``-th largest value ``v``, then those equal to ``v`` with the
    smallest ids.

    A row's ``m`` largest entries lie in the ``m`` blocks of :data:`CANDIDATE_BLOCK` tokens with
    the largest maxima, so ``v`` is found among those blocks' entries (a twelfth of the row for
    ``m`` = 65 and 49,152 tokens) rather than by partitioning the whole row; ``np.argpartition``
    over whole rows took three times as long, and picks among entries tied at ``v`` by its own
    algorithm rather than by id. Every other block's entries are at most ``v``, so when exactly
    ``m`` of the chosen blocks' entries reach ``v`` and no other block peaks at ``v``, they are
    the row's candidates; other rows (ties at ``v``, NaN) are decided over the whole row, as are
    rows of fewer than ``4 m`` blocks, or not a whole number of them (the same result)."""
    n, width = p.shape
    blocks = width // CANDIDATE_BLOCK
    if blocks < 4 * m or width % CANDIDATE_BLOCK:
        return _whole_row_candidates(p, m, None)
    peaks = p.reshape(n, blocks, CANDIDATE_BLOCK).max(axis=2)
    chosen = np.argpartition(np.negative(peaks), m - 1, axis=1)[:, :m]
    cols = (chosen[:, :, None] * CANDIDATE_BLOCK + np.arange(CANDIDATE_BLOCK)).reshape(n, -1)
    vals = np.take_along_axis(p, cols, axis=1)
    kth = -np.partition(np.negative(vals), m - 1, axis=1)[:, m - 1]
    inside = vals >= kth[:, None]
    reaching = (peaks >= kth[:, None]).sum(axis=1)
    chosen_reaching = (np.take_along_axis(peaks, chosen, axis=1) >= kth[:, None]).sum(axis=1)
    # a NaN entry makes its block's peak NaN, hiding that block's other entries
    fast = (inside.sum(axis=1) == m) & (reaching == chosen_reaching) & ~np.isnan(peaks).any(axis=1)
    out = np.empty((n, m), dtype=np.int64)
    out[fast] = cols[fast][inside[fast]].reshape(-1, m)
    if not fast.all():
        out[~fast] = _whole_row_candidates(p[~fast], m, kth[~fast])
    return out


def _whole_row_candidates(p: np.ndarray, m: int, kth: np.ndarray | None) -> np.ndarray:
    """:func:`top_candidates` of rows of ``p`` decided over whole rows, given each row's ``m``-th
    largest value ``kth`` (None: found here)."""
    if kth is None:
        kth = -np.partition(np.negative(p), m - 1, axis=1)[:, m - 1]
    at_least = p >= kth[:, None]
    count = at_least.sum(axis=1)
    tied, exact, short = count > m, count == m, count < m
    out = np.empty((len(p), m), dtype=np.int64)
    out[exact] = np.nonzero(at_least[exact])[1].reshape(-1, m)
    if short.any():  # NaN entries (a broken model) compare false: argpartition's order
        out[short] = np.argpartition(np.negative(p[short]), m - 1, axis=1)[:, :m]
    for row in np.flatnonzero(tied):
        above = np.flatnonzero(p[row] > kth[row])
        out[row, : len(above)] = above
        out[row, len(above) :] = np.flatnonzero(p[row] == kth[row])[: m - len(above)]
    return out


#: Rows per block of :func:`distribution_rows`' host work; blocks run on a thread pool
#: (:func:`compbias.inference.sampling.map_row_blocks`).
DISTRIBUTION_BLOCK = 32


def distribution_rows(
    logits: np.ndarray,
    temperature: float,
    letter_ids: dict[str, list[int]],
    top_mass: float = 1 - 1e-6,
    max_top: int = 64,
) -> dict[str, list]:
    """Per row: letter probabilities and the head of the sorted sampling distribution.

    The head keeps tokens in descending probability (ties by id) until ``top_mass`` is covered
    or ``max_top`` tokens are listed; draws beyond it fall back to a full recomputation. Rows are
    computed in blocks of :data:`DISTRIBUTION_BLOCK` on a thread pool: each row's values are
    those of its own computation, whatever the blocking.
    """
    parts = map_row_blocks(
        lambda a, b: _distribution_block(logits[a:b], temperature, letter_ids, top_mass, max_top),
        len(logits),
        DISTRIBUTION_BLOCK,
    )
    return {key: [v for part in parts for v in part[key]] for key in ("p_letters", "top_ids", "top_probs")}


def _distribution_block(
    logits: np.ndarray, temperature: float, letter_ids: dict[str, list[int]], top_mass: float, max_top: int
) -> dict[str, list]:
    # in place: the same values without three more (rows x vocab) float64 arrays to allocate
    z = logits.astype(np.float64)
    z /= max(temperature, 1e-8)
    z -= z.max(axis=1, keepdims=True)
    p = np.exp(z, out=z)
    p /= p.sum(axis=1, keepdims=True)
    letters = np.stack([p[:, letter_ids[L]].sum(axis=1) for L in LETTERS], axis=1)
    k = min(max_top, p.shape[1] - 1)
    cand = top_candidates(p, k + 1)
    top_ids, top_probs = [], []
    for row in range(p.shape[0]):
        c = cand[row]
        c = c[np.lexsort((c, -p[row, c]))][:max_top]
        pr = p[row, c]
        keep = int(np.searchsorted(np.cumsum(pr), top_mass)) + 1
        top_ids.append(c[:keep].tolist())
        top_probs.append(pr[:keep].tolist())
    return {"p_letters": letters.tolist(), "top_ids": top_ids, "top_probs": top_probs}


def host_logits(batch: PromptBatch) -> np.ndarray:
    """A batch's logits copied to the host: where the prompt pass waits for the batch's forward."""
    return np.array(batch.logits)


def score(
    model,
    token_lists: Sequence[Sequence[int]],
    temperature: float,
    letter_ids: dict[str, list[int]],
    batch_tokens: int = 1024,
    max_batch: int = 16,
    on_batch: Callable[[PromptBatch, dict[str, list]], None] | None = None,
) -> pl.DataFrame:
    """Scores of each prompt in input order: p_A/p_B/p_C (letter positions), head of the
    distribution, and prompt length.

    ``on_batch(batch, rows)`` is called with each :class:`PromptBatch` (its KV cache kept) and
    its :func:`distribution_rows` before the next batch is yielded, to continue answers from it."""
    n = len(token_lists)
    p_letters: list = [None] * n
    top_ids: list = [None] * n
    top_probs: list = [None] * n
    n_vocab = 0
    for batch in prompt_batches(model, token_lists, batch_tokens, max_batch, keep_cache=on_batch is not None):
        logits = host_logits(batch)
        rows = distribution_rows(logits, temperature, letter_ids)
        n_vocab = logits.shape[1]
        if on_batch is not None:
            with side_stream():
                on_batch(batch, rows)
        for j, i in enumerate(batch.idx):
            p_letters[i], top_ids[i], top_probs[i] = (rows["p_letters"][j], rows["top_ids"][j], rows["top_probs"][j])
    pl_arr = np.array(p_letters, dtype=np.float64).reshape(n, 3)
    return pl.DataFrame(
        {
            "p_A": pl_arr[:, 0],
            "p_B": pl_arr[:, 1],
            "p_C": pl_arr[:, 2],
            "top_ids": top_ids,
            "top_probs": top_probs,
            "n_tokens": [len(t) for t in token_lists],
            "n_vocab": [n_vocab] * n,
        },
        schema_overrides={"top_ids": pl.List(pl.Int64), "top_probs": pl.List(pl.Float64)},
    )
