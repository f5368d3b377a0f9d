"""Binomial GLM engine with item-clustered standard errors (statsmodels): cells in, tables out.

The input is a table of binomial cells: ``y`` successes out of ``m`` trials per (model, variant,
category, item_id), plus covariate columns. Since every term is a function of (model, variant,
category, covariates), the GLM is fitted on the cells collapsed to those keys: it has exactly the
estimates, i.i.d. covariance and (kernel) likelihood of the row-level logit. The cluster-robust
(CRV1, by item) sandwich uses the item-cell scores x (y - m p), each the sum of the row scores of
one cluster, with statsmodels' small-sample factor G/(G-1) * (N-1)/(N-K) taken with N = number
of trials, so it equals the row-level ``cov_type="cluster"`` fit (tested). A fit becomes a
coefficient table (:func:`coef_rows`) and Wald / likelihood-ratio test rows (:func:`wald_test`,
:func:`lr_test`, :func:`as_test_table`) in the columns :data:`COEF_COLUMNS` / :data:`TEST_COLUMNS`.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import polars as pl
from scipy import stats
from statsmodels.genmod.api import GLM, families

Z95 = 1.959963984540054
COEF_SCHEMA = {
    "spec": pl.String,
    "model_scope": pl.String,
    "term": pl.String,
    "coef": pl.Float64,
    "se": pl.Float64,
    "odds_ratio": pl.Float64,
    "or_lo": pl.Float64,
    "or_hi": pl.Float64,
    "p_value": pl.Float64,
    "n_obs": pl.Int64,
    "n_clusters": pl.Int64,
    "converged": pl.Boolean,
    "flag": pl.String,
}
TEST_SCHEMA = {
    "spec": pl.String,
    "model_scope": pl.String,
    "test": pl.String,
    "statistic": pl.Float64,
    "df": pl.Int64,
    "p_value": pl.Float64,
    "flag": pl.String,
}
COEF_COLUMNS = list(COEF_SCHEMA)
TEST_COLUMNS = list(TEST_SCHEMA)
_SEP_COEF, _SEP_SE = 15.0, 100.0  # |coef| or se beyond these on the logit scale => (quasi-)separation

Term = tuple[str, pl.Expr]
"""A design column: its (patsy-style) name and the expression computing it from the cells."""
INTERCEPT: Term = ("Intercept", pl.repeat(1.0, pl.len()))


def sorted_levels(s: pl.Series) -> list[str]:
    """The distinct non-null values of ``s``, sorted (the first is a factor's reference)."""
    return s.unique().drop_nulls().sort().to_list()


def factor(col: str, levels: Sequence[str], times: str | None = None) -> list[Term]:
    """Treatment-coded dummies of ``col`` (reference ``levels[0]``), optionally times ``times``."""
    out = []
    for lvl in levels[1:]:
        d = (pl.col(col) == lvl).cast(pl.Float64)
        out.append((f"{times}:C({col})[T.{lvl}]", pl.col(times) * d) if times else (f"C({col})[T.{lvl}]", d))
    return out


def fit_glm(cells: pl.DataFrame, terms: list[Term], covariates: Sequence[str] = ("bits",)) -> dict:
    """Binomial GLM of cells ``y``/``m`` on ``terms`` with i.i.d. and item-clustered covariances.

    Every term is a function of (model, variant, category, ``covariates``), so the GLM is fitted
    on the cells collapsed to those keys (same likelihood kernel, a few dozen rows); the item-level
    cells are only used for the cluster sandwich. ``llf`` is the Bernoulli (row-level) log
    likelihood. Never raises: non-estimable terms (no observations / collinear) are dropped and
    flagged, separated terms are flagged and set to NaN, a failed fit gives NaN everywhere with
    the error as flag.

    Returns a dict: names, params, cov (``{"iid": ..., "cluster": ...}``), llf, converged, flags
    (one per term, "" when fine), n_obs (sum of ``m``), n_clusters (distinct items).
    """
    names = [n for n, _ in terms]
    k = len(names)
    fit = {
        "names": names,
        "params": np.full(k, np.nan),
        "cov": {"iid": np.full((k, k), np.nan)},
        "llf": np.nan,
        "converged": False,
        "flags": [""] * k,
        "n_obs": int(cells["m"].sum()),
        "n_clusters": cells["item_id"].n_unique(),
    }
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
            res = GLM(np.column_stack([y, m - y]), X[:, idx], family=families.Binomial()).fit()
        beta, bread = np.asarray(res.params), np.asarray(res.cov_params())
        # cluster-robust (CRV1) sandwich from the item cells, scores summed per item
        Xc = design(cells)[:, idx]
        yc, mc = cells["y"].to_numpy(), cells["m"].to_numpy()
        score = Xc * (yc - mc / (1 + np.exp(-Xc @ beta)))[:, None]
        codes = cells["item_id"].rank("dense").to_numpy() - 1
        g, n, kk = int(codes.max()) + 1, mc.sum(), len(idx)
        s = np.column_stack([np.bincount(codes, weights=score[:, j], minlength=g) for j in range(kk)])
        correction = g / (g - 1) * (n - 1) / (n - kk) if g > 1 and n > kk else np.nan
        cluster = bread @ (s.T @ s) @ bread * correction
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


def coef_rows(fit: dict, spec: str, scope: str, cov: str) -> pl.DataFrame:
    """Coefficient table of ``fit`` with the ``cov`` ("iid" or "cluster") SEs, 95% odds-ratio
    interval and normal p-value, labelled ``spec`` / ``model_scope`` = ``scope``."""
    coef = fit["params"]
    se = np.sqrt(np.diag(fit["cov"][cov]))
    se = np.where(np.isfinite(coef), se, np.nan)
    with np.errstate(invalid="ignore", over="ignore"):
        p = 2 * stats.norm.sf(np.abs(coef / se))
        return pl.DataFrame(
            {
                "spec": spec,
                "model_scope": scope,
                "term": fit["names"],
                "coef": coef,
                "se": se,
                "odds_ratio": np.exp(coef),
                "or_lo": np.exp(coef - Z95 * se),
                "or_hi": np.exp(coef + Z95 * se),
                "p_value": p,
                "n_obs": fit["n_obs"],
                "n_clusters": fit["n_clusters"],
                "converged": fit["converged"],
                "flag": fit["flags"],
            },
            schema_overrides={"n_obs": pl.Int64, "n_clusters": pl.Int64},
        )


def wald_test(fit: dict, prefix: str, spec: str, scope: str, cov: str) -> dict:
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


def lr_test(full: dict, reduced: dict, label: str, spec: str, scope: str) -> dict:
    """Likelihood-ratio test of nested fits (i.i.d. likelihood, ignores clustering)."""
    df = int(np.isfinite(full["params"]).sum() - np.isfinite(reduced["params"]).sum())
    lr = 2 * (full["llf"] - reduced["llf"])
    ok = np.isfinite(lr) and df > 0
    return {
        "spec": spec,
        "model_scope": scope,
        "test": f"LR {label} (iid)",
        "df": df,
        "statistic": lr if ok else np.nan,
        "p_value": float(stats.chi2.sf(lr, df)) if ok else np.nan,
        "flag": "" if ok else "not estimable",
    }


def as_test_table(rows: list[dict]) -> pl.DataFrame:
    """Test rows (:func:`wald_test`, :func:`lr_test`) as a table in :data:`TEST_COLUMNS`."""
    return pl.DataFrame(rows, schema=TEST_SCHEMA).select(TEST_COLUMNS)
