"""Scores shards (one forward pass per item) and per-seed answer shards sampled from them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import polars as pl

from compbias.inference import prompts
from compbias.inference.decoder import Decoder
from compbias.inference.prompts import PromptSpec
from compbias.inference.sampling import LETTERS, Heads, parse_letter
from compbias.settings import Decoding, Prompt, Runtime, coerce_section

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
) -> pl.DataFrame:
    """Scores table of ``items``: item_id, perm, p_A/p_B/p_C by letter position, the sorted head
    of the sampling distribution (top_ids/top_probs) and prompt length.

    ``seed`` only matters for shuffled option order; with fixed order one table serves all seeds.
    """
    from compbias.inference.sampling import letter_token_ids
    from compbias.inference.scoring import score

    tokens = spec.tokens(tokenizer, items, seed)
    letter_ids = letter_token_ids(tokenizer)
    scores = score(model, tokens, temperature, letter_ids, batch_tokens, max_batch)
    letter_of = {i: L for L, ids in letter_ids.items() for i in ids}
    perms = [list(prompts.permutation(spec.option_order, seed, i)) for i in items["item_id"]]
    return pl.concat([items.select("item_id"), scores], how="horizontal").with_columns(
        perm=pl.Series(perms, dtype=pl.List(pl.Int64)),
        top_letters=pl.Series([[letter_of.get(t) for t in ids] for ids in scores["top_ids"]], dtype=pl.List(pl.String)),
    )


def _logits_dtype(runtime: Mapping[str, Any]) -> str:
    """The dtype of the model's logits under ``runtime`` (native compute: the bf16 weights)."""
    return "bfloat16" if runtime["compute_dtype"] == "native" else runtime["compute_dtype"]


def role_of(choice: int | None, unknown: int, biased: int | None) -> str:
    """Role of an answer: invalid, unknown, unresolved (target null), biased or anti."""
    if choice is None:
        return "invalid"
    if choice == unknown:
        return "unknown"
    if biased is None:
        return "unresolved"
    return "biased" if choice == biased else "anti"


def answer_seed(
    items: pl.DataFrame, scores: pl.DataFrame, seed: int, decoder: Decoder, parser: str, runtime: dict[str, Any]
) -> pl.DataFrame:
    """Answers of one seed for the items of one shard, sampled from their scores with the
    decoder's ``rng``.

    Items whose first token, drawn from the stored head, is a bare letter (``top_letters``)
    need no model; the decoder continues the others (and draws the first token itself where
    the head cannot decide it).
    """
    joined = items.join(scores, on="item_id", how="left", validate="1:1")
    missing = joined.filter(pl.col("p_A").is_null())["item_id"].to_list()
    if missing:
        raise ValueError(f"scores lack {len(missing)} items of the shard, e.g. {missing[:3]}")
    table = joined.to_dicts()
    n_vocab = joined["n_vocab"][0] if "n_vocab" in joined.columns else None
    heads = Heads(joined["item_id"].to_list(), joined["top_ids"].to_list(), joined["top_probs"].to_list())
    draws = [None if k < 0 else int(k) for k in heads.draw(decoder.rng, seed, n_vocab, dtype=_logits_dtype(runtime))]
    letters = [None if k is None else r["top_letters"][k] for r, k in zip(table, draws)]
    todo = [i for i, letter in enumerate(letters) if letter is None]
    texts: dict[int, str] = {}
    if todo:
        firsts = [None if draws[i] is None else table[i]["top_ids"][draws[i]] for i in todo]
        for i, (text, letter) in zip(todo, decoder.decode([table[i] for i in todo], seed, firsts)):
            if letter is None:
                texts[i] = text
            letters[i] = letter
    rows = []
    for i, row in enumerate(table):
        perm: Sequence[int] = row["perm"]
        text = texts.get(i)
        letter = letters[i] if text is None else parse_letter(text, parser)
        choice = perm[LETTERS.index(letter)] if letter else None
        p = [0.0, 0.0, 0.0]
        for j, L in enumerate(LETTERS):
            p[perm[j]] = row[f"p_{L}"]
        by_idx = lambda i, p=p: None if i is None else p[i]  # noqa: E731
        rows.append(
            {
                "item_id": row["item_id"],
                "category": row["category"],
                "condition": row["condition"],
                "polarity": row["polarity"],
                "shard": row["shard"],
                "seed": seed,
                "choice": choice,
                "role": role_of(choice, row["unknown_idx"], row["biased_idx"]),
                "method": "first_token" if text is None else "continued",
                "text": text,
                "p_ans0": p[0],
                "p_ans1": p[1],
                "p_ans2": p[2],
                "letter_mass": sum(p),
                "p_biased": by_idx(row["biased_idx"]),
                "p_anti": by_idx(row["anti_idx"]),
                "p_unknown": p[row["unknown_idx"]],
                "compute_dtype": runtime["compute_dtype"],
                "dequantized": runtime["dequantize"],
            }
        )
    return pl.DataFrame(rows, schema=ANSWER_SCHEMA)


def _setup(runtime_cfg: Runtime, threads: int):
    from compbias.inference.runtime import resolve_runtime, set_threads

    set_threads(threads)
    return resolve_runtime(runtime_cfg.compute_dtype, runtime_cfg.dequantize)


def _limits(runtime, runtime_cfg: Runtime) -> tuple[int, int]:
    from compbias.inference.runtime import batch_limits

    return batch_limits(runtime, runtime_cfg.batch_tokens, runtime_cfg.max_batch)


def _spec(prompt_cfg: Prompt, decoding: Decoding) -> PromptSpec:
    # None: the reference study's messages; "" is a deliberate empty system message
    system = prompts.DEFAULT_SYSTEM if prompt_cfg.system is None else prompt_cfg.system
    user = prompts.DEFAULT_USER if prompt_cfg.user is None else prompt_cfg.user
    return PromptSpec(system, user, decoding.option_order)


def _sections(decoding, prompt_cfg, runtime_cfg) -> tuple[Decoding, Prompt, Runtime]:
    return (
        coerce_section(Decoding, "decoding", decoding),
        coerce_section(Prompt, "prompt", prompt_cfg),
        coerce_section(Runtime, "runtime", runtime_cfg),
    )


def scores_job(
    items: pl.DataFrame,
    checkpoint: str,
    shard: int,
    group: str,
    decoding: Decoding | Mapping[str, Any],
    prompt_cfg: Prompt | Mapping[str, Any],
    runtime_cfg: Runtime | Mapping[str, Any],
    threads: int = 1,
) -> pl.DataFrame:
    """The scores shard of one (checkpoint, shard, group): group is ``fixed`` or ``seed=N``.
    Config sections are :mod:`compbias.settings` dataclasses (or their mappings)."""
    from compbias.inference.runtime import load_model

    decoding, prompt_cfg, runtime_cfg = _sections(decoding, prompt_cfg, runtime_cfg)
    runtime = _setup(runtime_cfg, threads)
    model, tokenizer, _ = load_model(checkpoint, runtime)
    seed = int(group.split("=")[1]) if group.startswith("seed=") else 0
    shard_items = items.filter(pl.col("shard") == shard)
    return score_items(
        model,
        tokenizer,
        shard_items,
        _spec(prompt_cfg, decoding),
        seed,
        float(decoding.temperature),
        *_limits(runtime, runtime_cfg),
    )


def answers_job(
    items: pl.DataFrame,
    scores: pl.DataFrame,
    checkpoint: str,
    shard: int,
    seed: int,
    decoding: Decoding | Mapping[str, Any],
    prompt_cfg: Prompt | Mapping[str, Any],
    runtime_cfg: Runtime | Mapping[str, Any],
    threads: int = 1,
) -> pl.DataFrame:
    """The answer shard of one (checkpoint, seed, shard), sampled from its scores shard."""
    from compbias.inference.runtime import load_model

    decoding, prompt_cfg, runtime_cfg = _sections(decoding, prompt_cfg, runtime_cfg)
    runtime = _setup(runtime_cfg, threads)
    decoder = Decoder(
        lambda: load_model(checkpoint, runtime)[:2],
        _spec(prompt_cfg, decoding),
        float(decoding.temperature),
        int(decoding.max_tokens),
        *_limits(runtime, runtime_cfg),
        rng=decoding.rng,
    )
    shard_items = items.filter(pl.col("shard") == shard)
    return answer_seed(shard_items, scores, seed, decoder, decoding.parser, runtime.as_dict())
