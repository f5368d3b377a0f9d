"""Synthetic BBQ-like answers/items/variants tables in the formats of docs/outputs.md.

Used by the unit tests and by the full-scale benchmark; fully vectorised.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import polars as pl

STUDY_CATEGORIES = ("age", "gender_identity", "race_ethnicity", "religion", "ses")
DEFAULT_VARIANTS = {"bf16": 16.0, "q8": 8.0, "q6": 6.0, "q4": 4.0, "q3": 3.0}


def synthetic_answers(
    n_items: int = 1000,
    models: Sequence[str] = ("m1", "m2", "m3"),
    variants: Mapping[str, float] = DEFAULT_VARIANTS,
    seeds: Sequence[int] | int = 5,
    effect: float = -0.2,
    item_sd: float = 1.0,
    seed: int = 0,
    *,
    placebo_seeds: int = 0,
    intercept: float = -1.0,
    category_effects: Sequence[float] | None = None,
    invalid_rate: float = 0.02,
    unknown_share: float = 0.7,
    unresolved_frac: float = 0.0,
    categories: Sequence[str] = STUDY_CATEGORIES,
) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """Simulate answers with a planted precision effect; returns ``(answers, items, variants)``.

    ``variants`` maps variant name -> bits in precision order; the first one is the baseline.
    Among valid answers, the log-odds that the answer is the bias-consistent option is
    ``intercept + category_effect + effect * (bits - bits_baseline) + u_item`` with
    ``u_item ~ N(0, item_sd)`` shared by all models/variants/seeds (so ``effect`` is the
    conditional log-odds slope per bit). Invalid answers occur with probability ``invalid_rate``
    independently; a non-biased valid answer is ``unknown`` with probability ``unknown_share``,
    else ``anti``. ``p_biased``/``p_anti``/``p_unknown`` are those exact role probabilities
    (identical across seeds). ``placebo_seeds`` extra baseline seeds are flagged ``placebo``.
    A fraction ``unresolved_frac`` of items gets a null target (role ``unresolved``).
    Items alternate ambig/disambig and neg/nonneg and cycle through ``categories``.
    """
    rng = np.random.default_rng(seed)
    seeds = list(range(seeds)) if isinstance(seeds, int) else list(seeds)
    cats = np.asarray(categories)
    ce = np.linspace(-0.5, 0.5, len(cats)) if category_effects is None else np.asarray(category_effects, float)

    # ---- items
    i = np.arange(n_items)
    cat_i = i % len(cats)
    unknown_idx = rng.integers(0, 3, n_items)
    biased_idx = (unknown_idx + 1 + rng.integers(0, 2, n_items)) % 3
    anti_idx = 3 - unknown_idx - biased_idx
    ambig = (i // len(cats)) % 2 == 0
    neg = (i // (2 * len(cats))) % 2 == 0
    label = np.where(ambig, unknown_idx, np.where(rng.random(n_items) < 0.5, biased_idx, anti_idx))
    resolved = rng.random(n_items) >= unresolved_frac
    u = rng.normal(0.0, item_sd, n_items)
    null_if = lambda x: pl.Series(np.where(resolved, x, -1)).replace(-1, None)  # noqa: E731
    items = pl.DataFrame(
        {
            "category": cats[cat_i],
            "example_id": i,
            "question_index": (i % 25 + 1).astype(str),
            "condition": np.where(ambig, "ambig", "disambig"),
            "polarity": np.where(neg, "neg", "nonneg"),
            "subcategory": np.full(n_items, ""),
            "context": np.full(n_items, "context"),
            "question": np.full(n_items, "question"),
            "ans0": np.full(n_items, "option 0"),
            "ans1": np.full(n_items, "option 1"),
            "ans2": np.full(n_items, "option 2"),
            "label": label,
            "unknown_idx": unknown_idx,
            "target_idx": null_if(np.where(neg, biased_idx, anti_idx)),
            "biased_idx": null_if(biased_idx),
            "anti_idx": null_if(anti_idx),
            "shard": i % 8,
        }
    ).with_columns(
        item_id=pl.format("{}-{}-{}", "category", "condition", "example_id"),
        stereotyped_groups=pl.concat_list(pl.lit("group")),
    )
    items = items.select("item_id", *[c for c in items.columns if c != "item_id"])

    # ---- variants
    names, bits = list(variants), np.asarray(list(variants.values()), float)
    variants_tbl = pl.DataFrame(
        {
            "model": np.repeat(models, len(names)),
            "variant": np.tile(names, len(models)),
            "kind": np.tile(np.where(bits >= 16, "dtype", "quantize"), len(models)),
            "bits": np.tile(bits, len(models)),
            "group_size": pl.Series(np.tile(np.where(bits >= 16, -1, 64), len(models))).replace(-1, None),
            "mode": np.tile(np.where(bits >= 16, "", "affine"), len(models)),
            "dtype": np.full(len(models) * len(names), "bfloat16"),
            "size_bytes": np.tile((1e9 * bits / 8).astype(np.int64), len(models)),
            "n_params": np.full(len(models) * len(names), 1_000_000_000),
            "is_baseline": np.tile(np.arange(len(names)) == 0, len(models)),
            "order": np.tile(np.arange(len(names)), len(models)),
        }
    ).with_columns(
        method=pl.lit(None, pl.String), target_sparsity=pl.lit(None, pl.Float64), sparsity=pl.lit(None, pl.Float64)
    )

    # ---- answers: one block per (model, variant, seed, placebo)
    blocks = [(m, v, s, False) for m in models for v in names for s in seeds]
    blocks += [(m, names[0], max(seeds, default=-1) + 1 + k, True) for m in models for k in range(placebo_seeds)]
    nb = len(blocks)
    b_model, b_variant, b_seed, b_placebo = (np.asarray(x) for x in zip(*blocks))
    b_bits = np.asarray([variants[v] for v in b_variant], float)
    item = np.tile(i, nb)
    blk = np.repeat(np.arange(nb), n_items)
    eta = intercept + ce[cat_i][item] + effect * (b_bits[blk] - bits[0]) + u[item]
    pb = (1 - invalid_rate) / (1 + np.exp(-eta))
    pu = (1 - invalid_rate - pb) * unknown_share
    pa = 1 - invalid_rate - pb - pu
    r = rng.random(len(item))
    code = np.select([r < pb, r < pb + pu, r < pb + pu + pa], [0, 2, 1], 3)  # biased/anti/unknown/invalid
    idx = np.stack([biased_idx, anti_idx, unknown_idx])[:, item]  # option index of each role, per row
    choice = np.take_along_axis(idx, np.minimum(code, 2)[None], axis=0)[0]
    res_row = resolved[item]
    role = np.asarray(["biased", "anti", "unknown", "invalid"])[code]
    role = np.where(~res_row & (code < 2), "unresolved", role)
    p_opt = np.zeros((3, len(item)))
    for k, p in enumerate((pb, pa, pu)):
        np.put_along_axis(p_opt, idx[k][None], p[None], axis=0)
    unres_null = lambda x: pl.Series(np.where(res_row, x, np.nan)).fill_nan(None)  # noqa: E731
    answers = pl.concat(
        [
            pl.DataFrame(
                {
                    "model": b_model[blk],
                    "variant": b_variant[blk],
                    "seed": b_seed[blk].astype(np.int64),
                    "placebo": b_placebo[blk].astype(bool),
                    "choice": pl.Series(np.where(code < 3, choice, -1)).replace(-1, None),
                    "role": role,
                    "p_ans0": p_opt[0],
                    "p_ans1": p_opt[1],
                    "p_ans2": p_opt[2],
                    "letter_mass": np.full(len(item), 1 - invalid_rate),
                    "p_biased": unres_null(pb),
                    "p_anti": unres_null(pa),
                    "p_unknown": unres_null(pu),
                }
            ),
            items.select("item_id", "category", "condition", "polarity", "shard")[item],
        ],
        how="horizontal",
    ).with_columns(
        method=pl.lit("first_token"),
        text=pl.lit(None, pl.String),
        compute_dtype=pl.lit("bfloat16"),
        dequantized=pl.lit(False),
    )
    return answers.select(ANSWER_COLUMNS), items, variants_tbl


ANSWER_COLUMNS = [
    "model",
    "variant",
    "seed",
    "placebo",
    "item_id",
    "category",
    "condition",
    "polarity",
    "shard",
    "choice",
    "role",
    "method",
    "text",
    "p_ans0",
    "p_ans1",
    "p_ans2",
    "letter_mass",
    "p_biased",
    "p_anti",
    "p_unknown",
    "compute_dtype",
    "dequantized",
]


def complete_answers(partial: pl.DataFrame | dict) -> pl.DataFrame:
    """Fill a hand-written answers table up to the full schema (for tests).

    Needs at least ``model, variant, seed, item_id, category, role``. Defaults: placebo false,
    condition ``ambig``, polarity ``neg``, options biased=0 / anti=1 / unknown=2 (``choice``
    derived from ``role``; ``unresolved`` -> 0, ``invalid`` -> null), role probabilities 1/3
    (null for ``unresolved`` roles), ``p_ans*`` mapped from them.
    """
    df = pl.DataFrame(partial)
    role_choice = pl.col("role").replace_strict({"biased": 0, "anti": 1, "unknown": 2, "unresolved": 0}, default=None)
    third = pl.when(pl.col("role") == "unresolved").then(None).otherwise(1 / 3)
    defaults = {
        "placebo": pl.lit(False),
        "condition": pl.lit("ambig"),
        "polarity": pl.lit("neg"),
        "shard": pl.lit(0, pl.Int64),
        "choice": role_choice.cast(pl.Int64),
        "method": pl.lit("first_token"),
        "text": pl.lit(None, pl.String),
        "p_biased": third,
        "p_anti": third,
        "p_unknown": third,
        "compute_dtype": pl.lit("bfloat16"),
        "dequantized": pl.lit(False),
    }
    df = df.with_columns(v.alias(k) for k, v in defaults.items() if k not in df.columns)
    df = df.with_columns(
        pl.col(f"p_{r}").fill_null(1 / 3).alias(f"p_ans{k}") for k, r in enumerate(("biased", "anti", "unknown"))
    ).with_columns(letter_mass=pl.sum_horizontal("p_ans0", "p_ans1", "p_ans2"))
    return df.select(ANSWER_COLUMNS)
