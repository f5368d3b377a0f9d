"""Dose-response logistic regressions of stereotype reliance on precision (statsmodels GLM).

Answers are aggregated to binomial cells (model, variant, category, item): ``y`` biased answers
out of ``m`` valid answers. Since every covariate is a function of (model, variant, category,
bits), the binomial GLM is fitted on the cells collapsed to those keys: it has exactly the
estimates, i.i.d. covariance and (kernel) likelihood of the row-level logit. The cluster-robust
(CRV1, by item) sandwich uses the item-cell scores x (y - m p), each the sum of the row scores of
one cluster, with statsmodels' small-sample factor G/(G-1) * (N-1)/(N-K) taken with N = number
of answers, so it equals the row-level ``cov_type="cluster"`` fit (tested).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import polars as pl
import statsmodels.api as sm
from scipy import stats

from compbias.stats.metrics import VALID_ROLES, main_rows, resolved_rows
from compbias.stats.transitions import paired_with_baseline

Z95 = 1.959963984540054
COEF_COLUMNS = ["spec", "model_scope", "term", "coef", "se", "odds_ratio", "or_lo", "or_hi", "p_value",
                "n_obs", "n_clusters", "converged", "flag"]  # fmt: skip
TEST_COLUMNS = ["spec", "model_scope", "test", "statistic", "df", "p_value", "flag"]
_SEP_COEF, _SEP_SE = 15.0, 100.0  # |coef| or se beyond these on the logit scale => (quasi-)separation

Term = tuple[str, pl.Expr]
INTERCEPT: Term = ("Intercept", pl.repeat(1.0, pl.len()))


def _factor(col: str, levels: Sequence[str], times: str | None = None) -> list[Term]:
    """Treatment-coded dummies of ``col`` (reference ``levels[0]``), optionally times ``times``."""
    out = []
    for lvl in levels[1:]:
        d = (pl.col(col) == lvl).cast(pl.Float64)
        out.append((f"{times}:C({col})[T.{lvl}]", pl.col(times) * d) if times else (f"C({col})[T.{lvl}]", d))
    return out


def _fit(cells: pl.DataFrame, terms: list[Term], covariates: Sequence[str] = ("bits",)) -> dict:
    """Binomial GLM of cells ``y``/``m`` on ``terms`` with i.i.d. and item-clustered covariances.

    Every term is a function of (model, variant, category, ``covariates``), so the GLM is fitted
    on the cells collapsed to those keys (same likelihood kernel, a few dozen rows); the item-level
    cells are only used for the cluster sandwich. ``llf`` is the Bernoulli (row-level) log
    likelihood. Never raises: non-estimable terms (no observations / collinear) are dropped and
    flagged, separated terms are flagged and set to NaN, a failed fit gives NaN everywhere with
    the error as flag.
    """
    names = [n for n, _ in terms]
    k = len(names)
    fit = {"names": names, "params": np.full(k, np.nan), "cov": {"iid": np.full((k, k), np.nan)},
           "llf": np.nan, "converged": False, "flags": [""] * k,
           "n_obs": int(cells["m"].sum()), "n_clusters": cells["item_id"].n_unique()}  # fmt: skip
    fit["cov"]["cluster"] = fit["cov"]["iid"].copy()

    def design(df: pl.DataFrame) -> np.ndarray:
        return df.select(e.cast(pl.Float64).alias(n) for n, e in terms).to_numpy()

    coarse = cells.group_by("model", "variant", "category", *covariates).agg(pl.sum("y", "m"))
    X, y, m = design(coarse), coarse["y"].to_numpy(), coarse["m"].to_numpy()
    if len(cells) == 0:
        fit["flags"] = ["no observations"] * k
        return fit
    if not np.isfinite(X).all():
        fit["flags"] = ["missing covariate (e.g. bits not in variants)"] * k
        return fit
    if y.sum() in (0, m.sum()):
        fit["flags"] = ["outcome constant (perfect separation)"] * k
        return fit
    # greedily keep the columns that raise the rank (coarse X has only a few dozen rows)
    keep = np.zeros(k, bool)
    for j in range(k):
        keep[j] = np.linalg.matrix_rank(X[:, keep | (np.arange(k) == j)]) > keep.sum()
        if not keep[j]:
            fit["flags"][j] = "no observations for this level" if not X[:, j].any() else "collinear; not estimable"
    idx = np.flatnonzero(keep)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            res = sm.GLM(np.column_stack([y, m - y]), X[:, idx], family=sm.families.Binomial()).fit()
        beta, bread = np.asarray(res.params), np.asarray(res.cov_params())
        # cluster-robust (CRV1) sandwich from the item cells, scores summed per item
        Xc = design(cells)[:, idx]
        yc, mc = cells["y"].to_numpy(), cells["m"].to_numpy()
        score = Xc * (yc - mc / (1 + np.exp(-Xc @ beta)))[:, None]
        codes = cells["item_id"].rank("dense").to_numpy() - 1
        g, n, kk = int(codes.max()) + 1, mc.sum(), len(idx)
        s = np.column_stack([np.bincount(codes, weights=score[:, j], minlength=g) for j in range(kk)])
        factor = g / (g - 1) * (n - 1) / (n - kk) if g > 1 and n > kk else np.nan
        cluster = bread @ (s.T @ s) @ bread * factor
        mu = np.clip(res.mu, 1e-300, 1 - 1e-16)
        llf = float(np.sum(y * np.log(mu) + (m - y) * np.log1p(-mu)))
    except Exception as e:  # noqa: BLE001 - a fit failure must become a flag, never an exception
        fit["flags"] = [f"fit failed: {type(e).__name__}: {e}"] * k
        return fit
    fit["params"][idx] = beta
    for key, cov in (("iid", bread), ("cluster", cluster)):
        fit["cov"][key][np.ix_(idx, idx)] = cov
    fit["llf"], fit["converged"] = llf, bool(res.converged)
    warn = "; ".join(sorted({f"{w.category.__name__}: {w.message}" for w in caught}))
    se = np.sqrt(np.diag(fit["cov"]["iid"]))
    for j in idx:
        if not np.isfinite(fit["params"][j]) or abs(fit["params"][j]) > _SEP_COEF or se[j] > _SEP_SE:
            fit["params"][j] = np.nan
            fit["flags"][j] = "separation (estimate diverges)"
        elif warn:
            fit["flags"][j] = warn
    if not fit["converged"]:
        fit["flags"] = [f or "not converged" for f in fit["flags"]]
    return fit


def _coef_rows(fit: dict, spec: str, scope: str, cov: str) -> pl.DataFrame:
    coef = fit["params"]
    se = np.sqrt(np.diag(fit["cov"][cov]))
    se = np.where(np.isfinite(coef), se, np.nan)
    with np.errstate(invalid="ignore", over="ignore"):
        p = 2 * stats.norm.sf(np.abs(coef / se))
        return pl.DataFrame(
            {
                "spec": spec, "model_scope": scope, "term": fit["names"], "coef": coef, "se": se,
                "odds_ratio": np.exp(coef), "or_lo": np.exp(coef - Z95 * se), "or_hi": np.exp(coef + Z95 * se),
                "p_value": p, "n_obs": fit["n_obs"], "n_clusters": fit["n_clusters"],
                "converged": fit["converged"], "flag": fit["flags"],
            },  # fmt: skip
            schema_overrides={"n_obs": pl.Int64, "n_clusters": pl.Int64},
        )


def _wald(fit: dict, prefix: str, spec: str, scope: str, cov: str) -> dict:
    """Joint Wald chi-square test that the term ``prefix`` (or all its levels ``prefix[...]``) is zero."""
    j = [i for i, n in enumerate(fit["names"]) if n == prefix or n.startswith(prefix + "[")]
    b, v = fit["params"][j], fit["cov"][cov][np.ix_(j, j)]
    row = {"spec": spec, "model_scope": scope, "test": f"Wald {prefix} ({cov})", "df": len(j)}
    if not j or not (np.isfinite(b).all() and np.isfinite(v).all()):
        return row | {"statistic": np.nan, "p_value": np.nan, "flag": "not estimable"}
    try:
        w = float(b @ np.linalg.solve(v, b))
    except np.linalg.LinAlgError:
        return row | {"statistic": np.nan, "p_value": np.nan, "flag": "singular covariance"}
    return row | {"statistic": w, "p_value": float(stats.chi2.sf(w, len(j))), "flag": ""}


def _lr(full: dict, reduced: dict, label: str, spec: str, scope: str) -> dict:
    """Likelihood-ratio test of nested fits (i.i.d. likelihood, ignores clustering)."""
    df = int(np.isfinite(full["params"]).sum() - np.isfinite(reduced["params"]).sum())
    lr = 2 * (full["llf"] - reduced["llf"])
    ok = np.isfinite(lr) and df > 0
    return {"spec": spec, "model_scope": scope, "test": f"LR {label} (iid)", "df": df,
            "statistic": lr if ok else np.nan, "p_value": float(stats.chi2.sf(lr, df)) if ok else np.nan,
            "flag": "" if ok else "not estimable"}  # fmt: skip


def _levels(s: pl.Series) -> list[str]:
    return s.unique().drop_nulls().sort().to_list()


def _variant_levels(variants: pl.DataFrame) -> list[str]:
    """Variant names, baseline first, then by config order."""
    v = variants.sort(~pl.col("is_baseline"), "order")["variant"]
    return list(dict.fromkeys(v.to_list()))


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
    cat = _factor("category", _levels(all_cells["category"]))
    models = _levels(variants["model"])
    mod, inter = _factor("model", models), _factor("model", models, times="bits")

    coefs, tests = [], []
    f_bits, f_cat = _fit(cells, one + bits + cat), _fit(cells, one + cat)
    f_var = _fit(all_cells, one + _factor("variant", _variant_levels(variants)) + cat)
    f_cat_all = f_cat if all_cells.height == cells.height else _fit(all_cells, one + cat)
    pooled = [
        ("bits_iid", f_bits, "iid", "bits"),
        ("bits_cluster", f_bits, "cluster", "bits"),
        ("variant_cluster", f_var, "cluster", "C(variant)"),
        ("bits_model_cluster", _fit(cells, one + bits + cat + mod), "cluster", "bits"),
        ("bits_x_model", _fit(cells, one + bits + mod + inter + cat), "cluster", "bits:C(model)"),
    ]
    fits = [(spec, "pooled", f, cov, pre) for spec, f, cov, pre in pooled]
    fits += [
        ("bits_per_model", m, _fit(cells.filter(pl.col("model") == m), one + bits + cat), "cluster", "bits")
        for m in models
    ]
    for spec, scope, f, cov, prefix in fits:
        coefs.append(_coef_rows(f, spec, scope, cov))
        tests.append(_wald(f, prefix, spec, scope, cov))
    tests += [_lr(f_bits, f_cat, "bits", "bits_iid", "pooled"),
              _lr(f_var, f_cat_all, "C(variant)", "variant_cluster", "pooled")]
    test_schema = {"spec": pl.String, "model_scope": pl.String, "test": pl.String, "statistic": pl.Float64,
                   "df": pl.Int64, "p_value": pl.Float64, "flag": pl.String}  # fmt: skip
    return {
        "coefficients": pl.concat(coefs).select(COEF_COLUMNS),
        "tests": pl.DataFrame(tests, schema=test_schema).select(TEST_COLUMNS),
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
    terms = [INTERCEPT, ("bits", pl.col("bits")), *_factor("category", _levels(cells["category"]))]
    return _coef_rows(_fit(cells, terms), "transition_cluster", "pooled", "cluster").select(COEF_COLUMNS)


# --------------------------------------------------------------------------- pruning (sparsity dose)

_COEF_SCHEMA = {"spec": pl.String, "model_scope": pl.String, "term": pl.String, "coef": pl.Float64,
                "se": pl.Float64, "odds_ratio": pl.Float64, "or_lo": pl.Float64, "or_hi": pl.Float64,
                "p_value": pl.Float64, "n_obs": pl.Int64, "n_clusters": pl.Int64, "converged": pl.Boolean,
                "flag": pl.String}  # fmt: skip
_TEST_SCHEMA = {"spec": pl.String, "model_scope": pl.String, "test": pl.String, "statistic": pl.Float64,
                "df": pl.Int64, "p_value": pl.Float64, "flag": pl.String}  # fmt: skip
NO_PRUNING = "no pruning variants"
SINGLE_METHOD = "single pruning method: no method x sparsity interaction"


def pruning_cells(answers: pl.DataFrame, variants: pl.DataFrame) -> pl.DataFrame:
    """:func:`binomial_cells` of the baseline and the pruning variants (those with a ``method``).

    Adds ``sparsity`` (the MEASURED sparsity of the manifest; 0 at an unpruned baseline) and
    ``method`` (``"none"`` at the baseline). Empty when ``variants`` has no pruning variant.
    """
    if "method" not in variants.columns:
        variants = variants.with_columns(method=pl.lit(None, pl.String), sparsity=pl.lit(None, pl.Float64))
    base = pl.col("is_baseline")
    keep = variants.filter(base | pl.col("method").is_not_null()).select(
        "model", "variant",
        sparsity=pl.when(base & pl.col("sparsity").is_null()).then(0.0).otherwise(pl.col("sparsity").cast(pl.Float64)),
        method=pl.col("method").fill_null("none"),
    )  # fmt: skip
    if not has_pruning(variants):
        keep = keep.clear()
    return binomial_cells(answers, variants).join(keep, on=["model", "variant"], how="inner")


def has_pruning(variants: pl.DataFrame) -> bool:
    """Whether ``variants`` has a non-baseline variant with a pruning ``method``."""
    return "method" in variants.columns and bool(
        variants.filter(~pl.col("is_baseline") & pl.col("method").is_not_null()).height
    )


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
        tests = [{"spec": "sparsity_cluster", "model_scope": "pooled", "test": t, "statistic": np.nan, "df": 0,
                  "p_value": np.nan, "flag": NO_PRUNING} for t in test_names]  # fmt: skip
        return {"coefficients": pl.DataFrame(schema=_COEF_SCHEMA).select(COEF_COLUMNS),
                "tests": pl.DataFrame(tests, schema=_TEST_SCHEMA).select(TEST_COLUMNS)}  # fmt: skip
    methods = _levels(cells.filter(pl.col("method") != "none")["method"])
    covs = ("bits", "sparsity", "method")
    dose: list[Term] = [("sparsity", pl.col("sparsity"))]
    inter = _factor("method", methods, times="sparsity")
    extra: list[Term] = [("bits", pl.col("bits"))] if cells["bits"].drop_nulls().n_unique() > 1 else []
    models = _levels(cells["model"]) or _levels(variants["model"])

    coefs, tests = [], []
    scopes = [("sparsity_cluster", "pooled", cells, _factor("model", models))]
    scopes += [("sparsity_per_model", m, cells.filter(pl.col("model") == m), []) for m in models]
    for spec, scope, c, mod in scopes:
        base = [INTERCEPT, *dose, *extra, *mod, *_factor("category", _levels(c["category"]))]
        full, reduced = _fit(c, base + inter, covs), _fit(c, base, covs)
        coefs.append(_coef_rows(full, spec, scope, "cluster"))
        rows = [_wald(full, "sparsity", spec, scope, "cluster"), _wald(full, "sparsity:C(method)", spec, scope, "cluster"),
                _lr(full, reduced, "sparsity:C(method)", spec, scope)]  # fmt: skip
        if len(methods) < 2:
            rows[1:] = [r | {"statistic": np.nan, "p_value": np.nan, "flag": SINGLE_METHOD} for r in rows[1:]]
        tests += rows
    return {
        "coefficients": pl.concat(coefs).select(COEF_COLUMNS),
        "tests": pl.DataFrame(tests, schema=_TEST_SCHEMA).select(TEST_COLUMNS),
    }
