"""Item-level transitions between the baseline and compressed variants of a model.

Placebo rows (extra baseline seeds) are excluded everywhere (they serve the floors of
:mod:`compbias.stats.floors`); unresolved-target items are excluded everywhere.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import polars as pl
from statsmodels.stats.contingency_tables import mcnemar

from compbias.stats.metrics import (
    KEYS,
    bh_qvalues,
    grouped_bootstrap,
    main_rows,
    ratio,
    resolved_rows,
    with_all_category,
)

MAJORITY_ORDER = ("unknown", "anti", "biased", "invalid")
"""Tie-break priority of :func:`item_table`'s majority role (first wins)."""


def item_table(answers: pl.DataFrame) -> pl.DataFrame:
    """Per model x variant x item summary over the seeds (placebo and unresolved items excluded).

    Columns: model, variant, item_id, category, condition, polarity, n_seeds, frac_biased,
    frac_anti, frac_unknown, frac_invalid, any_biased, any_anti, majority, p_biased, p_anti,
    p_unknown (means over seeds of the exact first-token role probabilities).

    ``majority`` is the most frequent role; ties go to the first of
    ``unknown > anti > biased > invalid`` (:data:`MAJORITY_ORDER`), so a tie never makes an
    item "majority biased" and a role beats ``invalid``.
    """
    roles = MAJORITY_ORDER
    df = (
        resolved_rows(main_rows(answers))
        .group_by("model", "variant", "item_id")
        .agg(
            pl.first("category", "condition", "polarity"),
            pl.len().cast(pl.Int64).alias("n_seeds"),
            *((pl.col("role") == r).sum().alias(f"_n_{r}") for r in roles),
            pl.mean("p_biased", "p_anti", "p_unknown"),
        )
    )
    top = pl.max_horizontal(f"_n_{r}" for r in roles)
    majority = pl.when(pl.col(f"_n_{roles[0]}") == top).then(pl.lit(roles[0]))
    for r in roles[1:]:
        majority = majority.when(pl.col(f"_n_{r}") == top).then(pl.lit(r))
    return (
        df.with_columns(
            *(pl.col(f"_n_{r}").truediv("n_seeds").alias(f"frac_{r}") for r in roles),
            any_biased=pl.col("_n_biased") > 0,
            any_anti=pl.col("_n_anti") > 0,
            majority=majority,
        )
        .select(
            "model",
            "variant",
            "item_id",
            "category",
            "condition",
            "polarity",
            "n_seeds",
            *(f"frac_{r}" for r in ("biased", "anti", "unknown", "invalid")),
            "any_biased",
            "any_anti",
            "majority",
            "p_biased",
            "p_anti",
            "p_unknown",
        )
        .sort("model", "variant", "item_id")
    )


def paired_with_baseline(items_tbl: pl.DataFrame, baseline: str, cols: Sequence[str]) -> pl.DataFrame:
    """Non-baseline rows of an item table joined (inner, on model + item_id) to the baseline's
    ``cols``, which get the suffix ``_base``."""
    base = items_tbl.filter(pl.col("variant") == baseline).select(
        "model", "item_id", *(pl.col(c).alias(f"{c}_base") for c in cols)
    )
    return items_tbl.filter(pl.col("variant") != baseline).join(base, on=["model", "item_id"], how="inner")


def transitions(items_tbl: pl.DataFrame, baseline: str) -> pl.DataFrame:
    """Emergence of stereotyped (and anti-stereotyped) answers relative to ``baseline``.

    An item is *unbiased at baseline* when none of its baseline seeds answered biased; it
    *became biased* when at least one seed of the variant answered biased (likewise for anti).
    Per model x variant (!= baseline) x category (and ``"all"``), over items present in both.

    Columns: model, variant, category, n_items, n_unbiased_base, n_became_biased,
    pct_became_biased (100 * became / unbiased; NaN when no unbiased item), n_unanti_base,
    n_became_anti, pct_became_anti.
    """
    p = with_all_category(paired_with_baseline(items_tbl, baseline, ["any_biased", "any_anti"]))
    return (
        p.group_by(KEYS)
        .agg(
            pl.len().cast(pl.Int64).alias("n_items"),
            n_unbiased_base=(~pl.col("any_biased_base")).sum().cast(pl.Int64),
            n_became_biased=(~pl.col("any_biased_base") & pl.col("any_biased")).sum().cast(pl.Int64),
            n_unanti_base=(~pl.col("any_anti_base")).sum().cast(pl.Int64),
            n_became_anti=(~pl.col("any_anti_base") & pl.col("any_anti")).sum().cast(pl.Int64),
        )
        .with_columns(
            pct_became_biased=100 * ratio("n_became_biased", "n_unbiased_base"),
            pct_became_anti=100 * ratio("n_became_anti", "n_unanti_base"),
        )
        .select(
            *KEYS,
            "n_items",
            "n_unbiased_base",
            "n_became_biased",
            "pct_became_biased",
            "n_unanti_base",
            "n_became_anti",
            "pct_became_anti",
        )
        .sort(KEYS)
    )


def role_flows(items_tbl: pl.DataFrame, baseline: str) -> pl.DataFrame:
    """Flows of the per-item majority role from ``baseline`` to each other variant.

    Columns: model, variant, from_role, to_role, n, share (of the model/variant's items),
    share_of_from (of the items with that baseline role).
    """
    return (
        paired_with_baseline(items_tbl, baseline, ["majority"])
        .group_by("model", "variant", pl.col("majority_base").alias("from_role"), pl.col("majority").alias("to_role"))
        .agg(pl.len().cast(pl.Int64).alias("n"))
        .with_columns(
            share=pl.col("n") / pl.col("n").sum().over("model", "variant"),
            share_of_from=pl.col("n") / pl.col("n").sum().over("model", "variant", "from_role"),
        )
        .sort("model", "variant", "from_role", "to_role")
    )


_QUANTILES = {"q05": 0.05, "q25": 0.25, "q75": 0.75, "q95": 0.95}


def probability_shifts(items_tbl: pl.DataFrame, baseline: str) -> dict[str, pl.DataFrame]:
    """Per-item shifts of the exact role probabilities relative to ``baseline``.

    Returns ``{"items": ..., "summary": ...}``. ``items``: model, variant, item_id, category,
    condition, d_p_biased, d_p_unknown (variant minus baseline, means over seeds). ``summary``
    (per model x variant x category incl. ``"all"`` x quantity in {d_p_biased, d_p_unknown}):
    n_items, mean, median, q05, q25, q75, q95, share_gt_0p1, share_gt_0p5 (share of items whose
    delta exceeds 0.1 / 0.5).
    """
    items = paired_with_baseline(items_tbl, baseline, ["p_biased", "p_unknown"]).select(
        "model",
        "variant",
        "item_id",
        "category",
        "condition",
        d_p_biased=pl.col("p_biased") - pl.col("p_biased_base"),
        d_p_unknown=pl.col("p_unknown") - pl.col("p_unknown_base"),
    )
    d = pl.col("delta")
    summary = (
        with_all_category(
            items.unpivot(["d_p_biased", "d_p_unknown"], index=KEYS, variable_name="quantity", value_name="delta")
        )
        .group_by(*KEYS, "quantity")
        .agg(
            pl.len().cast(pl.Int64).alias("n_items"),
            mean=d.mean(),
            median=d.median(),
            **{k: d.quantile(q, "linear") for k, q in _QUANTILES.items()},
            share_gt_0p1=(d > 0.1).mean(),
            share_gt_0p5=(d > 0.5).mean(),
        )
        .sort(*KEYS, "quantity")
    )
    return {"items": items, "summary": summary}


def paired_tests(items_tbl: pl.DataFrame, baseline: str, n_boot: int = 2000, seed: int = 0) -> pl.DataFrame:
    """Paired baseline-vs-variant tests per model x variant x category (and ``"all"``).

    * McNemar (statsmodels; exact binomial when discordant pairs < 25, else chi-square with
      continuity correction) on the per-item "majority role is biased" indicator:
      n_both, n_base_only, n_var_only, n_neither, mcnemar_stat, mcnemar_p, mcnemar_exact.
    * Paired item bootstrap of the stereotype-reliance difference
      biased_diff = mean(frac_biased variant) - mean(frac_biased baseline): biased_base, biased_variant,
      biased_diff, biased_diff_lo, biased_diff_hi (percentile 95%), boot_p (two-sided bootstrap p).
    * Benjamini-Hochberg q-values over the whole returned family: mcnemar_q, boot_q.
    """
    p = paired_with_baseline(items_tbl, baseline, ["majority", "frac_biased"]).with_columns(
        mb=pl.col("majority") == "biased", mb0=pl.col("majority_base") == "biased"
    )
    p = with_all_category(p)
    mb, mb0 = pl.col("mb"), pl.col("mb0")
    counts = (
        p.group_by(KEYS)
        .agg(
            pl.len().cast(pl.Int64).alias("n_items"),
            *(
                e.sum().cast(pl.Int64).alias(n)
                for n, e in (
                    ("n_both", mb0 & mb),
                    ("n_base_only", mb0 & ~mb),
                    ("n_var_only", ~mb0 & mb),
                    ("n_neither", ~mb0 & ~mb),
                )
            ),
            biased_base=pl.mean("frac_biased_base"),
            biased_variant=pl.mean("frac_biased"),
        )
        .sort(KEYS)
    )
    tests = []
    for both, b, c, neither in counts.select("n_both", "n_base_only", "n_var_only", "n_neither").iter_rows():
        exact = b + c < 25
        r = mcnemar(np.array([[both, b], [c, neither]]), exact=exact, correction=True)
        tests.append((float(r.statistic), float(r.pvalue), exact))
    counts = counts.with_columns(
        pl.DataFrame(tests, schema=["mcnemar_stat", "mcnemar_p", "mcnemar_exact"], orient="row")
    )
    boot = grouped_bootstrap(
        p, KEYS, ["frac_biased", "frac_biased_base"], {"biased_diff": lambda m: m[..., 0] - m[..., 1]}, n_boot, seed
    ).rename({"biased_diff_p": "boot_p"})
    out = counts.join(boot, on=KEYS).sort(KEYS)
    return out.with_columns(mcnemar_q=bh_qvalues(out["mcnemar_p"]), boot_q=bh_qvalues(out["boot_p"]))
