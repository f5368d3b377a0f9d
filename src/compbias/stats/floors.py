"""Floors for independent re-runs: how many baseline-unbiased items "become biased" when the
baseline is merely re-run with fresh, independent seeds (analytically and with the placebo seeds),
and the study's emergence in excess of that floor.

These are the nulls of the reference protocol's independent draws; compbias's coupled draws
have their own null (:mod:`compbias.stats.emergence`). Placebo rows are used here only.
"""

from __future__ import annotations

import polars as pl

from compbias.stats.metrics import KEYS, grouped_bootstrap, resolved_rows, with_all_category
from compbias.stats.transitions import item_table, paired_with_baseline


def _floor_items(answers: pl.DataFrame, baseline: str, n_seeds: int) -> pl.DataFrame:
    """Baseline-unbiased items (by the main baseline seeds) with their per-item noise floors.

    ``floor_analytic`` = 1 - (1 - p_biased)^n_seeds; ``placebo_biased`` = 1.0 if any of the first
    ``n_seeds`` placebo seeds (by seed value, per model) answered biased, 0.0 if none did, NaN when
    the model has no placebo seed or the item was not answered by them; ``n_placebo_seeds``.
    """
    base = resolved_rows(answers).filter(pl.col("variant") == baseline)
    unbiased = item_table(base).filter(~pl.col("any_biased"))
    plc = base.filter(pl.col("placebo")) if "placebo" in base.columns else base.clear()
    plc = plc.filter(pl.col("seed").rank("dense").over("model") <= n_seeds)
    per_item = plc.group_by("model", "item_id").agg(_placebo=(pl.col("role") == "biased").any().cast(pl.Float64))
    n_plc = plc.group_by("model").agg(n_placebo_seeds=pl.col("seed").n_unique().cast(pl.Int64))
    return (
        unbiased.select("model", "item_id", "category", "p_biased")
        .join(per_item, on=["model", "item_id"], how="left")
        .join(n_plc, on="model", how="left")
        .select(
            "model",
            "item_id",
            "category",
            floor_analytic=1 - (1 - pl.col("p_biased")) ** n_seeds,
            placebo_biased=pl.col("_placebo").fill_null(float("nan")),
            n_placebo_seeds=pl.col("n_placebo_seeds").fill_null(0),
        )
    )


def noise_floor(answers: pl.DataFrame, baseline: str, n_seeds: int) -> pl.DataFrame:
    """Expected emergence with no compression at all, per model x category (and ``"all"``).

    Among items unbiased at baseline (no biased answer in the main baseline seeds):

    * ``floor_placebo``: fraction with >= 1 biased answer among the first ``n_seeds`` placebo
      seeds (``placebo`` rows of the baseline, ordered by seed); NaN when the model has none.
    * ``floor_analytic``: mean over items of 1 - (1 - p_biased)^n_seeds, p_biased being the
      item's exact baseline probability of a biased first token.

    Columns: model, category, n_unbiased_base, n_placebo_seeds, floor_placebo, floor_analytic.
    """
    return (
        with_all_category(_floor_items(answers, baseline, n_seeds))
        .group_by("model", "category")
        .agg(
            pl.len().cast(pl.Int64).alias("n_unbiased_base"),
            pl.first("n_placebo_seeds"),
            pl.mean("placebo_biased").alias("floor_placebo"),
            pl.mean("floor_analytic"),
        )
        .sort("model", "category")
    )


def excess_emergence(
    answers: pl.DataFrame, baseline: str, n_seeds: int, n_boot: int = 1000, seed: int = 0
) -> pl.DataFrame:
    """Observed emergence minus the noise floor, with item-bootstrap intervals.

    Per model x variant (!= baseline) x category (and ``"all"``), over baseline-unbiased items:
    ``observed`` = fraction that became biased (>= 1 biased answer among the variant's seeds,
    as in :func:`transitions`); ``excess_analytic`` = observed - analytic floor and
    ``excess_placebo`` = observed - placebo floor (see :func:`noise_floor`), both paired per item.
    Each comes with a percentile 95% interval and two-sided bootstrap p over ``n_boot``
    resamples of items (:func:`compbias.stats.metrics.grouped_bootstrap`, seeded by ``seed``).

    Columns: model, variant, category, n_unbiased_base, observed(_lo,_hi,_p),
    floor_analytic, floor_placebo, excess_analytic(_lo,_hi,_p), excess_placebo(_lo,_hi,_p).
    """
    p = (
        paired_with_baseline(item_table(answers), baseline, ["any_biased"])
        .filter(~pl.col("any_biased_base"))
        .join(_floor_items(answers, baseline, n_seeds), on=["model", "item_id", "category"], how="inner")
        .with_columns(became=pl.col("any_biased").cast(pl.Float64))
    )
    p = with_all_category(p)
    stats = {
        "observed": lambda m: m[..., 0],
        "excess_analytic": lambda m: m[..., 0] - m[..., 1],
        "excess_placebo": lambda m: m[..., 0] - m[..., 2],
    }
    boot = grouped_bootstrap(p, KEYS, ["became", "floor_analytic", "placebo_biased"], stats, n_boot, seed)
    floors = p.group_by(KEYS).agg(
        pl.len().cast(pl.Int64).alias("n_unbiased_base"),
        pl.mean("floor_analytic"),
        pl.mean("placebo_biased").alias("floor_placebo"),
    )
    cols = [c for c in boot.columns if c not in KEYS]
    return (
        floors.join(boot, on=KEYS)
        .select(
            *KEYS,
            "n_unbiased_base",
            *[c for c in cols if c.startswith("observed")],
            "floor_analytic",
            "floor_placebo",
            *[c for c in cols if c.startswith("excess")],
        )
        .sort(KEYS)
    )
