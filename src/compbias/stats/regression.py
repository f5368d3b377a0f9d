"""The study's logistic regressions of stereotype reliance, fitted with :mod:`compbias.stats.glm`.

Answers are aggregated to binomial cells (model, variant, category, item): ``y`` biased answers
out of ``m`` valid answers (:func:`binomial_cells`). Three specifications are fitted on them: the
dose-response on precision (:func:`dose_response`, ``bits``), the transition model of items
unbiased at baseline (:func:`transition_model`) and the dose-response on the measured sparsity of
pruning variants (:func:`sparsity_response`). Tables are in the columns of
:data:`~compbias.stats.glm.COEF_COLUMNS` / :data:`~compbias.stats.glm.TEST_COLUMNS`.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from compbias.stats.glm import (
    COEF_COLUMNS,
    COEF_SCHEMA,
    INTERCEPT,
    Term,
    as_test_table,
    coef_rows,
    factor,
    fit_glm,
    lr_test,
    sorted_levels,
    wald_test,
)
from compbias.stats.metrics import VALID_ROLES, main_rows, resolved_rows
from compbias.stats.transitions import paired_with_baseline
from compbias.stats.variants import is_pruning, variant_order

NO_PRUNING = "no pruning variants"
SINGLE_METHOD = "single pruning method: no method x sparsity interaction"


def _variant_levels(variants: pl.DataFrame) -> list[str]:
    """Variant names, baseline first (the reference level), then by config order."""
    base = variant_order(variants.filter(pl.col("is_baseline")))
    return base + [v for v in variant_order(variants) if v not in base]


def binomial_cells(answers: pl.DataFrame, variants: pl.DataFrame) -> pl.DataFrame:
    """Aggregate valid answers of resolved items (placebo excluded) to binomial cells.

    Columns: model, variant, category, item_id, y (biased answers), m (valid answers), bits.
    """
    return (
        resolved_rows(main_rows(answers))
        .filter(pl.col("role").is_in(VALID_ROLES))
        .group_by("model", "variant", "category", "item_id")
        .agg(y=(pl.col("role") == "biased").sum().cast(pl.Float64), m=pl.len().cast(pl.Float64))
        .join(variants.select("model", "variant", "bits"), on=["model", "variant"], how="left")
        .sort("model", "variant", "item_id")
    )


def precision_cells(cells: pl.DataFrame, variants: pl.DataFrame) -> pl.DataFrame:
    """``cells`` without perturbation controls (``kind`` perturb): their nominal 16 bits are not a
    precision level, so they stay out of every fit on ``bits``."""
    if "kind" not in variants.columns:
        return cells
    controls = variants.filter(pl.col("kind") == "perturb").select("model", "variant")
    return cells.join(controls, on=["model", "variant"], how="anti")


def dose_response(answers: pl.DataFrame, variants: pl.DataFrame) -> dict[str, pl.DataFrame]:
    """Logistic dose-response of biased (1) vs other valid answers (0) on precision.

    Data: valid answers (biased/anti/unknown) of resolved items, placebo rows excluded; ``bits``
    joined from ``variants`` on (model, variant). Specs (``spec`` column):

    * ``bits_iid``: biased ~ bits + C(category), i.i.d. SEs (pooled over models);
    * ``bits_cluster``: the same fit, SEs clustered by item_id;
    * ``variant_cluster``: biased ~ C(variant) + C(category) (baseline variant = reference), clustered;
    * ``bits_model_cluster``: biased ~ bits + C(category) + C(model), clustered;
    * ``bits_per_model``: biased ~ bits + C(category) per model (``model_scope`` = model), clustered;
    * ``bits_x_model``: biased ~ bits * C(model) + C(category), clustered.

    Perturbation controls (``kind`` perturb) enter only ``variant_cluster`` (and its LR test),
    where they get their own ``C(variant)`` term; the bits specs leave them out
    (:func:`precision_cells`).

    Returns ``{"coefficients": ..., "tests": ...}``. Coefficients: spec, model_scope ("pooled" or
    the model), term (patsy-style names, ``Intercept``, ``bits``, ``C(category)[T.x]``,
    ``bits:C(model)[T.x]``), coef, se, odds_ratio, or_lo, or_hi (95%), p_value (normal), n_obs
    (answers), n_clusters (items), converged, flag ("" when fine; otherwise why the row is NaN or
    suspect). Tests: spec, model_scope, test, statistic, df, p_value, flag — Wald tests of the
    precision term(s) for every spec (and of the bits:C(model) interaction), plus i.i.d.
    likelihood-ratio tests of bits and of C(variant) against biased ~ C(category).
    Never raises on degenerate data (separation, empty variant, single category).
    """
    all_cells = binomial_cells(answers, variants)
    cells = precision_cells(all_cells, variants)
    one = [INTERCEPT]
    bits: list[Term] = [("bits", pl.col("bits"))]
    cat = factor("category", sorted_levels(all_cells["category"]))
    models = sorted_levels(variants["model"])
    mod, inter = factor("model", models), factor("model", models, times="bits")

    coefs, tests = [], []
    f_bits, f_cat = fit_glm(cells, one + bits + cat), fit_glm(cells, one + cat)
    f_var = fit_glm(all_cells, one + factor("variant", _variant_levels(variants)) + cat)
    f_cat_all = f_cat if all_cells.height == cells.height else fit_glm(all_cells, one + cat)
    pooled = [
        ("bits_iid", f_bits, "iid", "bits"),
        ("bits_cluster", f_bits, "cluster", "bits"),
        ("variant_cluster", f_var, "cluster", "C(variant)"),
        ("bits_model_cluster", fit_glm(cells, one + bits + cat + mod), "cluster", "bits"),
        ("bits_x_model", fit_glm(cells, one + bits + mod + inter + cat), "cluster", "bits:C(model)"),
    ]
    fits = [(spec, "pooled", f, cov, pre) for spec, f, cov, pre in pooled]
    fits += [
        ("bits_per_model", m, fit_glm(cells.filter(pl.col("model") == m), one + bits + cat), "cluster", "bits")
        for m in models
    ]
    for spec, scope, f, cov, prefix in fits:
        coefs.append(coef_rows(f, spec, scope, cov))
        tests.append(wald_test(f, prefix, spec, scope, cov))
    tests += [
        lr_test(f_bits, f_cat, "bits", "bits_iid", "pooled"),
        lr_test(f_var, f_cat_all, "C(variant)", "variant_cluster", "pooled"),
    ]
    return {
        "coefficients": pl.concat(coefs).select(COEF_COLUMNS),
        "tests": as_test_table(tests),
    }


def transition_model(items_tbl: pl.DataFrame, variants: pl.DataFrame, baseline: str) -> pl.DataFrame:
    """Logit P(became biased) ~ bits + C(category) among items unbiased at baseline, clustered by item.

    Rows: every (model, variant != baseline, item) whose baseline seeds gave no biased answer
    (:func:`compbias.stats.transitions.item_table`); outcome = the variant gave >= 1 biased answer.
    Perturbation controls are left out (:func:`precision_cells`).
    Returns the coefficient table of :func:`dose_response` (spec ``transition_cluster``, scope
    ``pooled``; n_obs counts item x variant rows).
    """
    cells = (
        paired_with_baseline(items_tbl, baseline, ["any_biased"])
        .filter(~pl.col("any_biased_base"))
        .join(variants.select("model", "variant", "bits"), on=["model", "variant"], how="left")
        .with_columns(y=pl.col("any_biased").cast(pl.Float64), m=pl.lit(1.0))
    )
    cells = precision_cells(cells, variants)
    terms = [INTERCEPT, ("bits", pl.col("bits")), *factor("category", sorted_levels(cells["category"]))]
    return coef_rows(fit_glm(cells, terms), "transition_cluster", "pooled", "cluster").select(COEF_COLUMNS)


def pruning_cells(answers: pl.DataFrame, variants: pl.DataFrame) -> pl.DataFrame:
    """:func:`binomial_cells` of the baseline and the pruning variants (those with a ``method``).

    Adds ``sparsity`` (the MEASURED sparsity of the manifest; 0 at an unpruned baseline) and
    ``method`` (``"none"`` at the baseline). Empty when ``variants`` has no pruning variant.
    """
    if "method" not in variants.columns:
        variants = variants.with_columns(method=pl.lit(None, pl.String), sparsity=pl.lit(None, pl.Float64))
    base = pl.col("is_baseline")
    keep = variants.filter(base | is_pruning(variants)).select(
        "model",
        "variant",
        sparsity=pl.when(base & pl.col("sparsity").is_null()).then(0.0).otherwise(pl.col("sparsity").cast(pl.Float64)),
        method=pl.col("method").fill_null("none"),
    )
    if not has_pruning(variants):
        keep = keep.clear()
    return binomial_cells(answers, variants).join(keep, on=["model", "variant"], how="inner")


def has_pruning(variants: pl.DataFrame) -> bool:
    """Whether ``variants`` has a non-baseline variant with a pruning ``method``."""
    return bool(variants.filter(~pl.col("is_baseline") & is_pruning(variants)).height)


def sparsity_response(answers: pl.DataFrame, variants: pl.DataFrame) -> dict[str, pl.DataFrame]:
    """Logistic dose-response of biased answers on the measured sparsity of pruning variants.

    Data: :func:`pruning_cells` — valid answers of resolved items (placebo excluded) of the
    baseline and of every variant with a pruning ``method`` (including pruned-then-quantized
    ones). Model: biased ~ sparsity + C(method):sparsity + C(category) [+ bits] [+ C(model)]:
    every method shares the baseline intercept (sparsity 0), ``sparsity`` is the slope of the
    reference method (first in sorted order) and ``sparsity:C(method)[T.x]`` the difference of
    method x's slope. ``bits`` is added when a pruning variant is also quantized (its bits differ
    from the others), ``C(model)`` (pooled spec only) when there are several models. SEs are
    clustered by item. Methods whose variants have no valid answer get no term (nothing to
    estimate). Specs: ``sparsity_cluster`` (pooled) and ``sparsity_per_model``
    (``model_scope`` = model, without ``C(model)``).

    Returns ``{"coefficients": ..., "tests": ...}`` in the columns of :func:`dose_response`.
    Tests per spec/scope: ``Wald sparsity (cluster)``, ``Wald sparsity:C(method) (cluster)``
    (the method x sparsity interaction) and ``LR sparsity:C(method) (iid)`` (against the fit
    without the interaction). Without pruning variants: no coefficient rows and NaN tests
    flagged :data:`NO_PRUNING`; with a single method the interaction tests are flagged
    :data:`SINGLE_METHOD`. Never raises.
    """
    cells = pruning_cells(answers, variants)
    test_names = ["Wald sparsity (cluster)", "Wald sparsity:C(method) (cluster)", "LR sparsity:C(method) (iid)"]
    if not has_pruning(variants):
        tests = [
            {
                "spec": "sparsity_cluster",
                "model_scope": "pooled",
                "test": t,
                "statistic": np.nan,
                "df": 0,
                "p_value": np.nan,
                "flag": NO_PRUNING,
            }
            for t in test_names
        ]
        return {"coefficients": pl.DataFrame(schema=COEF_SCHEMA).select(COEF_COLUMNS), "tests": as_test_table(tests)}
    methods = sorted_levels(cells.filter(pl.col("method") != "none")["method"])
    covs = ("bits", "sparsity", "method")
    dose: list[Term] = [("sparsity", pl.col("sparsity"))]
    inter = factor("method", methods, times="sparsity")
    extra: list[Term] = [("bits", pl.col("bits"))] if cells["bits"].drop_nulls().n_unique() > 1 else []
    models = sorted_levels(cells["model"]) or sorted_levels(variants["model"])

    coefs, tests = [], []
    scopes = [("sparsity_cluster", "pooled", cells, factor("model", models))]
    scopes += [("sparsity_per_model", m, cells.filter(pl.col("model") == m), []) for m in models]
    for spec, scope, c, mod in scopes:
        base = [INTERCEPT, *dose, *extra, *mod, *factor("category", sorted_levels(c["category"]))]
        full, reduced = fit_glm(c, base + inter, covs), fit_glm(c, base, covs)
        coefs.append(coef_rows(full, spec, scope, "cluster"))
        rows = [
            wald_test(full, "sparsity", spec, scope, "cluster"),
            wald_test(full, "sparsity:C(method)", spec, scope, "cluster"),
            lr_test(full, reduced, "sparsity:C(method)", spec, scope),
        ]
        if len(methods) < 2:
            rows[1:] = [r | {"statistic": np.nan, "p_value": np.nan, "flag": SINGLE_METHOD} for r in rows[1:]]
        tests += rows
    return {
        "coefficients": pl.concat(coefs).select(COEF_COLUMNS),
        "tests": as_test_table(tests),
    }
