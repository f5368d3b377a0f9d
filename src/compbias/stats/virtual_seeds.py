"""First-token outcomes of many *virtual* seed sets, drawn from the stored distributions.

A scores shard holds each item's exact next-token distribution (its head), so the first token of
any seed can be drawn without a forward pass, with exactly the keyed draw an answers job makes
(:class:`compbias.inference.sampling.Heads`). Virtual seed set ``j`` (0-based) of a study with ``n`` seeds
is the seeds ``VIRTUAL_SEED_OFFSET + j * n + i`` for ``i < n``; they are disjoint from the study
and placebo seeds (which must stay below the offset). Every variant of a model uses the same
virtual seeds, so virtual draws are coupled across variants exactly as the study's draws are.

Outcome of a draw: the role of the option whose bare letter was drawn (biased / anti / unknown;
``unresolved`` on items without a resolved target), or ``continue`` when the token drawn is not a
bare letter (or lies beyond the stored head): the model would have to continue, and what it
would answer is not known without decoding, so it is its own outcome and never counted as biased.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import polars as pl

from compbias.inference.answering import role
from compbias.inference.sampling import LETTERS

VIRTUAL_SEED_OFFSET = 1_000_000_000
"""First virtual seed; study and placebo seeds must be smaller."""

#: Head entries (rows x padded head length) drawn together: a block's temporaries fit a CPU cache.
BLOCK_ENTRIES = 65536

#: Virtual seed sets whose outcomes one call of a group draws (its blocks of small heads draw
#: several of these seeds at once).
SETS_PER_CALL = 64

OUTCOMES = ("biased", "anti", "unknown", "continue", "unresolved")
BIASED, ANTI, UNKNOWN, CONTINUE, UNRESOLVED = range(len(OUTCOMES))

VIRTUAL_SCHEMA = {
    "item_id": pl.String,
    "n_draws": pl.Int64,
    "n_continue": pl.Int64,
    "any_biased": pl.Binary,
    "any_continue": pl.Binary,
    "study_any_biased": pl.Boolean,
    "study_any_continue": pl.Boolean,
    "n_sets": pl.Int64,
    "n_seeds": pl.Int64,
    "rng": pl.String,
}
"""Columns of ``results/virtual_seeds/{model}/{variant}.parquet`` (see :func:`virtual_outcomes`)."""


def virtual_seed(set_index: int, slot: int, n_seeds: int) -> int:
    """Seed ``slot`` (0-based, < ``n_seeds``) of virtual seed set ``set_index``."""
    return VIRTUAL_SEED_OFFSET + set_index * n_seeds + slot


def check_seeds(seeds: Sequence[int]) -> None:
    """ValueError when a study or placebo seed would collide with the virtual seeds."""
    bad = [s for s in seeds if int(s) >= VIRTUAL_SEED_OFFSET]
    if bad:
        raise ValueError(f"seeds {bad} collide with the virtual seeds (>= {VIRTUAL_SEED_OFFSET})")


def head_outcomes(scores: pl.DataFrame, items: pl.DataFrame) -> tuple[pl.DataFrame, np.ndarray]:
    """The scores rows of ``items`` (sorted by item_id) and the outcome code of every position of
    their heads (n_items x head width, :data:`OUTCOMES` indices; padding is ``continue``)."""
    df = (
        scores.select("item_id", "top_ids", "top_probs", "top_letters", "perm")
        .join(items.select("item_id", "unknown_idx", "biased_idx"), on="item_id", how="inner")
        .sort("item_id")
    )
    width = max(int(df["top_ids"].list.len().max() or 1), 1)
    ex = (
        df.select("unknown_idx", "biased_idx", "perm", "top_letters", row=pl.int_range(pl.len()))
        .explode("top_letters")
        .with_columns(
            pos=pl.int_range(pl.len()).over("row"),
            li=pl.col("top_letters").replace_strict(dict(zip(LETTERS, range(3))), default=None, return_dtype=pl.Int64),
        )
        .with_columns(option=pl.col("perm").list.get(pl.col("li"), null_on_oob=True))
        .with_columns(
            # the answers table's roles; a token that is no letter (no option) continues
            code=role(pl.col("option"), pl.col("unknown_idx"), pl.col("biased_idx")).replace_strict(
                {"invalid": CONTINUE, "unknown": UNKNOWN, "unresolved": UNRESOLVED, "biased": BIASED, "anti": ANTI},
                return_dtype=pl.Int8,
            )
        )
    )
    codes = np.full((df.height, width), CONTINUE, dtype=np.int8)
    codes[ex["row"].to_numpy(), ex["pos"].to_numpy()] = ex["code"].to_numpy().astype(np.int8)
    return df, codes


class _Group:
    """One scores group's heads and outcome codes, drawing outcomes per seed.

    Rows are split into buckets of similar head length (up to 2, 4, 8, ... tokens), so that short
    heads are not padded to the longest one, and buckets into blocks of about
    :data:`BLOCK_ENTRIES` head entries, each its own :class:`~compbias.inference.sampling.Heads`:
    a draw's dozen temporary arrays then stay in the CPU's cache (twice as fast for a shard of
    6,055 heads of 64 tokens as one block). A block smaller than that draws several seeds in one
    call (:meth:`~compbias.inference.sampling.Heads.draw_seeds`), so that short heads do not pay
    a call per seed. A row's draw depends on its own head and key only, so the draws are the same.
    """

    def __init__(self, scores: pl.DataFrame, items: pl.DataFrame, rng: str):
        from compbias.inference.sampling import Heads

        self.rows, self.codes = head_outcomes(scores, items)
        lengths = self.rows["top_ids"].list.len().to_numpy()
        bucket = np.ceil(np.log2(np.maximum(lengths, 2))).astype(int)
        self.buckets = []
        for b in np.unique(bucket):
            rows = np.flatnonzero(bucket == b)
            size = max(16, BLOCK_ENTRIES >> int(b))  # heads of up to 2**b tokens
            for idx in (rows[a : a + size] for a in range(0, len(rows), size)):
                sub = self.rows[idx]
                heads = Heads(sub["item_id"].to_list(), sub["top_ids"].to_list(), sub["top_probs"].to_list())
                # seeds drawn together: as many as keep the entries drawn (complete heads) to a block
                per_call = max(1, BLOCK_ENTRIES // max(1, heads.drawn_entries))
                self.buckets.append((idx, heads, per_call))
        # a draw at position -1 (the full distribution is needed) reads this last column
        self.codes = np.concatenate([self.codes, np.full((len(self.codes), 1), CONTINUE, dtype=np.int8)], axis=1)
        self.rng = rng
        self.n_vocab = int(scores["n_vocab"].max()) if "n_vocab" in scores.columns else None
        # the logits' dtype, for rng reference (scores written before compbias recorded it: float32)
        dtype = str(scores["compute_dtype"][0]) if "compute_dtype" in scores.columns else "float32"
        self.dtype = "bfloat16" if dtype == "native" else dtype

    def outcomes(self, seeds: Sequence[int]) -> np.ndarray:
        """The outcome code (:data:`OUTCOMES`) of every row's first token for each of ``seeds``,
        shape (len(seeds), rows)."""
        pos = np.empty((len(seeds), self.rows.height), dtype=np.int64)
        for idx, heads, per_call in self.buckets:
            for a in range(0, len(seeds), per_call):
                part = seeds[a : a + per_call]
                pos[a : a + len(part), idx] = heads.draw_seeds(self.rng, part, self.n_vocab, 0, dtype=self.dtype)
        return self.codes[np.arange(self.rows.height), pos]


def virtual_outcomes(
    scores: Mapping[str, pl.DataFrame],
    items: pl.DataFrame,
    rng: str,
    n_sets: int,
    study_seeds: Sequence[int],
    threads: int = 1,
) -> pl.DataFrame:
    """Per item: which of ``n_sets`` virtual seed sets (of ``len(study_seeds)`` seeds each) drew a
    biased / a ``continue`` first token, and the same for the study seeds themselves.

    ``scores`` maps a scores group (``fixed``, or ``seed=N`` with shuffled option order) to its
    table (all shards). With shuffled order, slot ``i`` of every virtual set uses the option order
    (and forward pass) of study seed ``i``: only the random numbers are new.

    Columns (:data:`VIRTUAL_SCHEMA`): item_id; n_draws (= n_sets x n_seeds) and n_continue (how
    many of them were ``continue``); any_biased / any_continue (bit ``j`` of these packed bytes,
    little-endian bit order, is whether set ``j`` had >= 1 such draw; :func:`unpack_sets`);
    study_any_biased / study_any_continue (the study seeds' first tokens); n_sets, n_seeds, rng.
    """
    check_seeds(study_seeds)
    n = len(study_seeds)
    if n == 0 or n_sets < 1:
        raise ValueError("virtual seed sets need >= 1 study seed and >= 1 set")
    built = {g: _Group(s, items, rng) for g, s in scores.items()}
    slot_group = [built["fixed"] if "fixed" in built else built[f"seed={s}"] for s in study_seeds]
    ids = slot_group[0].rows["item_id"]
    for g in slot_group:
        if not g.rows["item_id"].equals(ids):
            raise ValueError("scores groups hold different items")
    n_items = len(ids)
    # (sets x items): a set's outcomes are one contiguous row
    any_b = np.zeros((n_sets, n_items), dtype=bool)
    any_c = np.zeros((n_sets, n_items), dtype=bool)
    n_cont = np.zeros((max(1, threads), n_items), dtype=np.int64)  # one row per worker thread

    def run(worker: int, sets: range) -> None:
        for a in range(sets.start, sets.stop, SETS_PER_CALL):
            js = range(a, min(a + SETS_PER_CALL, sets.stop))
            for i, group in enumerate(slot_group):
                o = group.outcomes([virtual_seed(j, i, n) for j in js])
                any_b[js.start : js.stop] |= o == BIASED
                c = o == CONTINUE
                any_c[js.start : js.stop] |= c
                n_cont[worker] += c.sum(axis=0)

    # reference noise comes from MLX, which is not called from several threads at once
    workers = 1 if rng == "reference" else max(1, min(threads, n_sets))
    chunks = np.array_split(np.arange(n_sets), workers)
    if workers == 1:
        run(0, range(n_sets))
    else:
        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(lambda w: run(w, range(int(chunks[w][0]), int(chunks[w][-1]) + 1)), range(workers)))
    study = np.concatenate([g.outcomes([int(s)]) for g, s in zip(slot_group, study_seeds)]).T
    return pl.DataFrame(
        {
            "item_id": ids,
            "n_draws": np.full(n_items, n_sets * n, dtype=np.int64),
            "n_continue": n_cont.sum(axis=0),
            "any_biased": _pack(any_b.T),
            "any_continue": _pack(any_c.T),
            "study_any_biased": (study == BIASED).any(axis=1),
            "study_any_continue": (study == CONTINUE).any(axis=1),
            "n_sets": np.full(n_items, n_sets, dtype=np.int64),
            "n_seeds": np.full(n_items, n, dtype=np.int64),
            "rng": np.full(n_items, rng),
        },
        schema=VIRTUAL_SCHEMA,
    )


def _pack(bits: np.ndarray) -> pl.Series:
    packed = np.packbits(bits, axis=1, bitorder="little")
    return pl.Series([row.tobytes() for row in packed], dtype=pl.Binary)


def unpack_sets(col: pl.Series, n_sets: int) -> np.ndarray:
    """The (n_items x n_sets) booleans packed in a Binary column of :func:`virtual_outcomes`."""
    if col.len() == 0:
        return np.zeros((0, n_sets), dtype=bool)
    width = (n_sets + 7) // 8
    raw = np.frombuffer(b"".join(col.to_list()), dtype=np.uint8).reshape(col.len(), width)
    return np.unpackbits(raw, axis=1, count=n_sets, bitorder="little").astype(bool)
