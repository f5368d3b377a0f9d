"""Scores tables (one forward pass per item) and per-seed answers sampled from them (the jobs that
run them: :mod:`compbias.inference.jobs`)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import polars as pl

from compbias.inference import prompts
from compbias.inference.decoder import Decoder
from compbias.inference.prompts import PromptSpec
from compbias.inference.sampling import LETTERS, Heads, parse_letter

log = logging.getLogger("compbias")

ANSWER_SCHEMA = {
    "item_id": pl.String,
    "category": pl.String,
    "condition": pl.String,
    "polarity": pl.String,
    "shard": pl.Int64,
    "seed": pl.Int64,
    "choice": pl.Int64,
    "role": pl.String,
    "method": pl.String,
    "text": pl.String,
    "p_ans0": pl.Float64,
    "p_ans1": pl.Float64,
    "p_ans2": pl.Float64,
    "letter_mass": pl.Float64,
    "p_biased": pl.Float64,
    "p_anti": pl.Float64,
    "p_unknown": pl.Float64,
    "compute_dtype": pl.String,
    "dequantized": pl.Boolean,
}


def score_items(
    model,
    tokenizer,
    items: pl.DataFrame,
    spec: PromptSpec,
    seed: int,
    temperature: float,
    batch_tokens: int = 1024,
    max_batch: int = 16,
    on_batch=None,
) -> pl.DataFrame:
    """Scores table of ``items``: item_id, perm, p_A/p_B/p_C by letter position, the sorted head
    of the sampling distribution (top_ids/top_probs) and prompt length.

    ``seed`` only matters for shuffled option order; with fixed order one table serves all seeds.
    ``on_batch`` is passed to :func:`compbias.inference.scoring.score`.
    """
    from compbias.inference.sampling import letter_token_ids
    from compbias.inference.scoring import score

    tokens = spec.tokens(tokenizer, items, seed)
    letter_ids = letter_token_ids(tokenizer)
    scores = score(model, tokens, temperature, letter_ids, batch_tokens, max_batch, on_batch)
    letter_of = {i: L for L, ids in letter_ids.items() for i in ids}
    perms = [list(prompts.permutation(spec.option_order, seed, i)) for i in items["item_id"]]
    return pl.concat([items.select("item_id"), scores], how="horizontal").with_columns(
        perm=pl.Series(perms, dtype=pl.List(pl.Int64)),
        top_letters=pl.Series([[letter_of.get(t) for t in ids] for ids in scores["top_ids"]], dtype=pl.List(pl.String)),
    )


def _logits_dtype(runtime: Mapping[str, Any]) -> str:
    """The dtype of the model's logits under ``runtime`` (native compute: the bf16 weights)."""
    return "bfloat16" if runtime["compute_dtype"] == "native" else runtime["compute_dtype"]


def role(choice: pl.Expr, unknown: pl.Expr, biased: pl.Expr) -> pl.Expr:
    """Role of an answer: invalid (no choice), unknown, unresolved (target null), biased or anti."""
    return (
        pl.when(choice.is_null())
        .then(pl.lit("invalid"))
        .when(choice == unknown)
        .then(pl.lit("unknown"))
        .when(biased.is_null())
        .then(pl.lit("unresolved"))
        .when(choice == biased)
        .then(pl.lit("biased"))
        .otherwise(pl.lit("anti"))
    )


def seed_outcomes(
    table: Sequence[dict],
    seeds: Sequence[int],
    rng: str,
    decode: Callable[[list[int], list[int], list[int | None]], list[tuple[str | None, str | None]]],
    n_vocab: int | None,
    dtype: str,
) -> dict[int, tuple[list[str | None], dict[int, str]]]:
    """Per seed: the letter of each row (None where the answer was continued) and the decoded
    text of each continued row (row index -> text).

    First tokens are drawn with ``rng`` from the heads in ``table`` (rows with item_id,
    top_ids, top_probs and top_letters); the rows whose first token is not a bare letter, for
    every seed, are continued by one ``decode(rows, seeds, firsts)`` call (a
    :class:`Decoder` method), so an item continued for several seeds runs its prompt once.
    """
    heads = Heads([r["item_id"] for r in table], [r["top_ids"] for r in table], [r["top_probs"] for r in table])
    letters: dict[int, list[str | None]] = {}
    pairs: list[tuple[int, int]] = []
    firsts: list[int | None] = []
    for seed in seeds:
        draws = [None if k < 0 else int(k) for k in heads.draw(rng, seed, n_vocab, dtype=dtype)]
        letters[seed] = [None if k is None else r["top_letters"][k] for r, k in zip(table, draws)]
        for i, letter in enumerate(letters[seed]):
            if letter is None:
                pairs.append((seed, i))
                firsts.append(None if draws[i] is None else table[i]["top_ids"][draws[i]])
    texts: dict[int, dict[int, str]] = {seed: {} for seed in seeds}
    if pairs:
        decoded = decode([i for _, i in pairs], [s for s, _ in pairs], firsts)
        for (seed, i), (text, letter) in zip(pairs, decoded):
            if letter is None:
                texts[seed][i] = text
            letters[seed][i] = letter
    return {seed: (letters[seed], texts[seed]) for seed in seeds}


def _rows_decoder(decoder: Decoder, table: Sequence[dict]):
    """``decode`` for :func:`seed_outcomes` that continues rows of ``table`` with a second
    prompt pass (:meth:`Decoder.decode_pairs`)."""
    return lambda rows, seeds, firsts: decoder.decode_pairs([table[i] for i in rows], seeds, firsts)


def _joined(items: pl.DataFrame, scores: pl.DataFrame) -> pl.DataFrame:
    joined = items.join(scores, on="item_id", how="left", validate="1:1")
    missing = joined.filter(pl.col("p_A").is_null())["item_id"].to_list()
    if missing:
        raise ValueError(f"scores lack {len(missing)} items of the shard, e.g. {missing[:3]}")
    return joined


def precompute_answers(
    items: pl.DataFrame, scores: pl.DataFrame, seeds: Sequence[int], decoder: Decoder, runtime: dict[str, Any]
) -> pl.DataFrame:
    """``scores`` with every seed's answer text or letter per item, for the answers jobs of
    ``seeds`` (which then need no model): columns ``answer_seeds`` (the seeds, on every row),
    ``answer_letters`` and ``answer_texts`` (per seed: the first-token letter, or the continued
    text), and the ``compute_dtype`` / ``dequantized`` of the run. Rows follow ``items`` (the
    order :func:`score_items` writes)."""
    joined = _joined(items, scores)
    n_vocab = joined["n_vocab"][0] if "n_vocab" in joined.columns else None
    table = joined.to_dicts()
    out = seed_outcomes(table, list(seeds), decoder.rng, _rows_decoder(decoder, table), n_vocab, _logits_dtype(runtime))
    order = joined.select("item_id").with_row_index("_row")
    aligned = scores.join(order, on="item_id", how="left").sort("_row").drop("_row")
    return _with_answers(aligned, seeds, out, runtime)


def _with_answers(
    scores: pl.DataFrame, seeds: Sequence[int], out: Mapping[int, tuple[list, Mapping[int, str]]], runtime
) -> pl.DataFrame:
    """``scores`` (rows in the order of ``out``'s lists) with the answer columns of
    :func:`precompute_answers`."""
    n = scores.height
    letters = [[out[s][0][i] for s in seeds] for i in range(n)]
    texts = [[out[s][1].get(i) for s in seeds] for i in range(n)]
    return scores.with_columns(
        compute_dtype=pl.lit(runtime["compute_dtype"]), dequantized=pl.lit(runtime["dequantize"])
    ).with_columns(
        answer_seeds=pl.Series([list(seeds)] * n, dtype=pl.List(pl.Int64)),
        answer_letters=pl.Series(letters, dtype=pl.List(pl.String)),
        answer_texts=pl.Series(texts, dtype=pl.List(pl.String)),
    )


def score_and_answer(
    model,
    tokenizer,
    items: pl.DataFrame,
    spec: PromptSpec,
    seed: int,
    seeds: Sequence[int],
    decoder: Decoder,
    runtime: Mapping[str, Any],
    batch_tokens: int = 1024,
    max_batch: int = 16,
    continuation: str = "batch_cache",
) -> pl.DataFrame:
    """The scores table of ``items`` with every seed of ``seeds`` answered (the table of
    :func:`precompute_answers`).

    With ``continuation`` batch_cache (:func:`compbias.inference.runtime.continuation`) it takes
    one prompt pass: each batch's answers are drawn as soon as its distributions are known, and
    those whose first token is not a bare letter are continued, for every seed, from the batch's
    own KV cache (:meth:`Decoder.continue_batch`) before the next batch. With second_pass, or a
    model whose caches cannot be re-padded (sliding-window layers), :func:`score_items` runs and
    then :func:`precompute_answers`, whose second pass runs the prompts of those answers again.
    """
    from compbias.inference.sampling import letter_token_ids
    from compbias.inference.scoring import plain_kv

    temperature = decoder.temperature
    if continuation != "batch_cache" or not plain_kv(model):
        scores = score_items(model, tokenizer, items, spec, seed, temperature, batch_tokens, max_batch)
        return precompute_answers(items, scores, seeds, decoder, dict(runtime))
    item_ids = items["item_id"].to_list()
    letter_of = {i: L for L, ids in letter_token_ids(tokenizer).items() for i in ids}
    seeds = list(seeds)
    out: dict[int, tuple[list, dict[int, str]]] = {s: ([None] * len(item_ids), {}) for s in seeds}
    dtype = _logits_dtype(runtime)
    spent = [0.0, 0]  # seconds continuing, answers continued

    def on_batch(batch, rows: dict[str, list]) -> None:
        idx = batch.idx.tolist()
        table = [
            {"item_id": item_ids[i], "top_ids": t, "top_probs": p, "top_letters": [letter_of.get(x) for x in t]}
            for i, t, p in zip(idx, rows["top_ids"], rows["top_probs"])
        ]

        def decode(rows_, seeds_, firsts):
            start = time.perf_counter()
            got = decoder.continue_batch(batch, rows_, [table[j]["item_id"] for j in rows_], seeds_, firsts)
            spent[0] += time.perf_counter() - start
            spent[1] += len(rows_)
            return got

        got = seed_outcomes(table, seeds, decoder.rng, decode, int(batch.logits.shape[1]), dtype)
        for s in seeds:
            for j, i in enumerate(idx):
                out[s][0][i] = got[s][0][j]
                if j in got[s][1]:
                    out[s][1][i] = got[s][1][j]

    start = time.perf_counter()
    scores = score_items(model, tokenizer, items, spec, seed, temperature, batch_tokens, max_batch, on_batch)
    log.info(
        "one prompt pass: %.1f s, of which %.1f s continuing %d answers of %d",
        time.perf_counter() - start,
        spent[0],
        spent[1],
        len(item_ids) * len(seeds),
    )
    return _with_answers(scores, seeds, out, runtime)


def precomputed_seeds(scores: pl.DataFrame) -> list[int]:
    """The seeds whose answers the scores shard holds (empty for a shard written without them)."""
    if "answer_seeds" not in scores.columns or scores.height == 0:
        return []
    return [int(s) for s in scores["answer_seeds"][0]]


def precomputed_seeds_in(path: str | Path) -> list[int]:
    """:func:`precomputed_seeds` of a scores shard file, reading only its ``answer_seeds``."""
    if not Path(path).is_file():
        raise FileNotFoundError(2, "no scores shard", str(path))
    if "answer_seeds" not in pl.read_parquet_schema(path):
        return []
    return precomputed_seeds(pl.scan_parquet(path).select("answer_seeds").head(1).collect())


def answer_seed(
    items: pl.DataFrame,
    scores: pl.DataFrame,
    seed: int,
    decoder: Decoder | None,
    parser: str,
    runtime: dict[str, Any] | None = None,
) -> pl.DataFrame:
    """Answers of one seed for the items of one shard, sampled from their scores with the
    decoder's ``rng``.

    When the scores job already answered ``seed`` (:func:`precompute_answers`) its letters and
    texts are used and neither ``decoder`` nor ``runtime`` is needed (``runtime`` is then the
    scores'). Otherwise items whose first token, drawn from the stored head, is a bare letter
    (``top_letters``) need no model, and the decoder continues the others (drawing the first
    token itself where the head cannot decide it); the answers are the same either way.
    """
    joined = _joined(items, scores)
    answered = precomputed_seeds(scores)
    if seed in answered:
        k = answered.index(seed)
        letters = joined["answer_letters"].list.get(k).to_list()
        texts = joined["answer_texts"].list.get(k).to_list()
        runtime = runtime or {"compute_dtype": joined["compute_dtype"][0], "dequantize": joined["dequantized"][0]}
    else:
        if decoder is None or runtime is None:
            raise ValueError(f"seed {seed}: not answered by the scores job; a decoder and runtime are needed")
        n_vocab = joined["n_vocab"][0] if "n_vocab" in joined.columns else None
        table = joined.to_dicts()
        decode = _rows_decoder(decoder, table)
        letters, by_row = seed_outcomes(table, [seed], decoder.rng, decode, n_vocab, _logits_dtype(runtime))[seed]
        texts = [by_row.get(i) for i in range(len(table))]
    return _answer_rows(joined, seed, letters, texts, parser, runtime)


def _answer_rows(
    joined: pl.DataFrame,
    seed: int,
    letters: Sequence[str | None],
    texts: Sequence[str | None],
    parser: str,
    runtime: Mapping[str, Any],
) -> pl.DataFrame:
    """The answers table (:data:`ANSWER_SCHEMA`) of one seed: per row of ``joined`` (items with
    their scores) its first-token letter, or the letter parsed from its continued text, mapped
    through the row's option order to the chosen option, its role and the options' probabilities."""
    parsed = [letter if text is None else parse_letter(text, parser) for letter, text in zip(letters, texts)]
    position = pl.Series([None if x is None else LETTERS.index(x) for x in parsed], dtype=pl.Int64)
    perm = pl.col("perm")
    # option o's probability is that of the letter shown at the position perm puts o
    p_option = [
        pl.when(perm.list.get(0) == o)
        .then(pl.col("p_A"))
        .when(perm.list.get(1) == o)
        .then(pl.col("p_B"))
        .otherwise(pl.col("p_C"))
        .alias(f"p_ans{o}")
        for o in range(3)
    ]

    def at(index: str) -> pl.Expr:
        return (
            pl.when(pl.col(index) == 0)
            .then("p_ans0")
            .when(pl.col(index) == 1)
            .then("p_ans1")
            .when(pl.col(index) == 2)
            .then("p_ans2")
        )

    choice = pl.col("choice")
    text = pl.Series("text", list(texts), dtype=pl.String)
    return (
        joined.with_columns(choice=perm.list.get(position), text=text, seed=pl.lit(seed, pl.Int64))
        .with_columns(*p_option)
        .with_columns(
            role=role(choice, pl.col("unknown_idx"), pl.col("biased_idx")),
            method=pl.when(pl.col("text").is_null()).then(pl.lit("first_token")).otherwise(pl.lit("continued")),
            # left to right on every Python (its sum() of floats is compensated from 3.12 on)
            letter_mass=pl.col("p_ans0") + pl.col("p_ans1") + pl.col("p_ans2"),
            p_biased=at("biased_idx"),
            p_anti=at("anti_idx"),
            p_unknown=at("unknown_idx"),
            compute_dtype=pl.lit(runtime["compute_dtype"], pl.String),
            dequantized=pl.lit(runtime["dequantize"], pl.Boolean),
        )
        .select([pl.col(c).cast(t) for c, t in ANSWER_SCHEMA.items()])
    )
