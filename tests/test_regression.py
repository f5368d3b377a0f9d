import resource
import time

import numpy as np
import polars as pl
import pytest
import statsmodels.api as sm

from compbias.stats.glm import COEF_COLUMNS, TEST_COLUMNS
from compbias.stats.metrics import rates
from compbias.stats.regression import NO_PRUNING, SINGLE_METHOD, dose_response, sparsity_response, transition_model
from compbias.stats.transitions import item_table, transitions
from compbias.testing.synthetic import synthetic_answers


def coef(d: dict, spec: str, term: str, scope: str = "pooled") -> dict:
    c = d["coefficients"].filter(spec=spec, term=term, model_scope=scope)
    assert c.height == 1, (spec, term, scope)
    return c.row(0, named=True)


def test_columns_and_specs():
    a, _, v = synthetic_answers(300, models=("m1", "m2"), seeds=2, seed=1)
    d = dose_response(a, v)
    assert d["coefficients"].columns == COEF_COLUMNS and d["tests"].columns == TEST_COLUMNS
    specs = set(d["coefficients"]["spec"])
    assert specs == {
        "bits_iid",
        "bits_cluster",
        "variant_cluster",
        "bits_model_cluster",
        "bits_per_model",
        "bits_x_model",
    }
    assert set(d["coefficients"].filter(spec="bits_per_model")["model_scope"]) == {"m1", "m2"}
    assert (d["coefficients"]["flag"] == "").all() and d["coefficients"]["converged"].all()
    tests = {(r["spec"], r["model_scope"], r["test"]) for r in d["tests"].iter_rows(named=True)}
    assert ("bits_x_model", "pooled", "Wald bits:C(model) (cluster)") in tests
    assert ("variant_cluster", "pooled", "Wald C(variant) (cluster)") in tests
    assert ("bits_iid", "pooled", "LR bits (iid)") in tests
    # the variant reference level is the baseline
    assert not d["coefficients"].filter(pl.col("term") == "C(variant)[T.bf16]").height


def test_planted_effect_recovered():
    a, _, v = synthetic_answers(4000, models=("m1",), seeds=3, effect=-0.2, item_sd=0.0, seed=2)
    d = dose_response(a, v)
    b = coef(d, "bits_cluster", "bits")
    assert b["coef"] - 1.96 * b["se"] <= -0.2 <= b["coef"] + 1.96 * b["se"]
    assert b["or_lo"] <= np.exp(-0.2) <= b["or_hi"]
    # planted category effects linspace(-.5, .5, 5): ses - age = 1.0
    s = coef(d, "bits_cluster", "C(category)[T.ses]")
    assert abs(s["coef"] - 1.0) < 1.96 * s["se"]
    # intercept is the log-odds at bits = 0: -1 - 0.5 + 0.2 * 16 = 1.7
    i = coef(d, "bits_iid", "Intercept")
    assert abs(i["coef"] - 1.7) < 1.96 * i["se"]


def _row_level_design(a: pl.DataFrame, v: pl.DataFrame):
    rows = a.filter(
        ~pl.col("placebo"), pl.col("p_biased").is_not_null(), pl.col("role").is_in(["biased", "anti", "unknown"])
    ).join(v.select("model", "variant", "bits"), on=["model", "variant"])
    cats = sorted(rows["category"].unique())
    X = np.column_stack(
        [np.ones(rows.height), rows["bits"].to_numpy()]
        + [(rows["category"] == c).to_numpy().astype(float) for c in cats[1:]]
    )
    y = (rows["role"] == "biased").to_numpy().astype(float)
    groups = rows["item_id"].rank("dense").to_numpy()
    return X, y, groups


def test_aggregated_fit_equals_row_level_clustered_fit():
    a, _, v = synthetic_answers(
        200,
        models=("m1", "m2"),
        variants={"bf16": 16, "q4": 4, "q3": 3},
        seeds=3,
        item_sd=1.5,
        unresolved_frac=0.1,
        placebo_seeds=1,
        seed=4,
    )
    d = dose_response(a, v)
    X, y, groups = _row_level_design(a, v)
    iid = sm.GLM(y, X, family=sm.families.Binomial()).fit()
    clu = sm.GLM(y, X, family=sm.families.Binomial()).fit(cov_type="cluster", cov_kwds={"groups": groups})
    ours_iid = d["coefficients"].filter(spec="bits_iid")
    ours_clu = d["coefficients"].filter(spec="bits_cluster")
    np.testing.assert_allclose(ours_iid["coef"], iid.params, rtol=1e-7)
    np.testing.assert_allclose(ours_iid["se"], iid.bse, rtol=1e-6)
    np.testing.assert_allclose(ours_clu["se"], clu.bse, rtol=1e-6)
    assert ours_clu["n_obs"][0] == len(y) and ours_clu["n_clusters"][0] == len(np.unique(groups))
    # the LR test of bits equals the row-level one
    red = sm.GLM(y, X[:, [0, *range(2, X.shape[1])]], family=sm.families.Binomial()).fit()
    lr = d["tests"].filter(spec="bits_iid", test="LR bits (iid)")["statistic"][0]
    assert lr == pytest.approx(2 * (iid.llf - red.llf), rel=1e-6)


def test_clustered_se_with_strong_item_effect():
    a, _, v = synthetic_answers(1500, models=("m1",), seeds=3, item_sd=2.0, seed=6)
    d = dose_response(a, v)
    for term in ("C(category)[T.ses]", "Intercept"):  # between-item terms: clustering matters a lot
        assert coef(d, "bits_cluster", term)["se"] > 1.8 * coef(d, "bits_iid", term)["se"]
    # bits varies WITHIN items (each item is answered at every precision), so the item effect
    # barely changes its SE (it is even a bit smaller here)
    ratio = coef(d, "bits_cluster", "bits")["se"] / coef(d, "bits_iid", "bits")["se"]
    assert 0.7 < ratio < 1.3
    # when precision varies BETWEEN items (each item answered at one variant only, by 10 seeds),
    # the clustered SE of bits is clearly larger than the i.i.d. one
    a, _, v = synthetic_answers(1500, models=("m1",), seeds=10, item_sd=2.0, seed=6)
    names = list(v.sort("order")["variant"])
    item_no = pl.col("item_id").str.extract(r"(\d+)$").cast(pl.Int64)  # categories cycle with item_no % 5
    between = a.filter(pl.col("variant") == pl.lit(pl.Series(names)).get(item_no // 5 % len(names)))
    d2 = dose_response(between, v)
    assert (d2["coefficients"]["flag"] == "").all()
    assert coef(d2, "bits_cluster", "bits")["se"] > 1.8 * coef(d2, "bits_iid", "bits")["se"]


def test_perfect_separation_flagged_not_raised():
    a, _, v = synthetic_answers(500, models=("m1", "m2"), seeds=2, seed=7)
    a = a.with_columns(
        role=pl.when((pl.col("category") == "ses") & (pl.col("role") == "biased"))
        .then(pl.lit("unknown"))
        .otherwise("role")
    )
    d = dose_response(a, v)
    ses = coef(d, "bits_cluster", "C(category)[T.ses]")
    assert np.isnan(ses["coef"]) and np.isnan(ses["se"]) and "separation" in ses["flag"]
    assert np.isfinite(coef(d, "bits_cluster", "bits")["coef"])


def test_variant_without_valid_answers():
    a, _, v = synthetic_answers(300, models=("m1",), seeds=2, seed=8)
    a = a.with_columns(role=pl.when(pl.col("variant") == "q3").then(pl.lit("invalid")).otherwise("role"))
    d = dose_response(a, v)
    q3 = coef(d, "variant_cluster", "C(variant)[T.q3]")
    assert np.isnan(q3["coef"]) and q3["flag"] == "no observations for this level"
    assert np.isfinite(coef(d, "variant_cluster", "C(variant)[T.q4]")["coef"])
    assert np.isfinite(coef(d, "bits_cluster", "bits")["coef"])
    wald = d["tests"].filter(spec="variant_cluster", test="Wald C(variant) (cluster)").row(0, named=True)
    assert np.isnan(wald["statistic"]) and wald["flag"] == "not estimable"


def test_single_category_single_model_and_degenerate_inputs():
    a, _, v = synthetic_answers(300, models=("m1",), seeds=2, seed=9)
    d = dose_response(a.filter(category="age"), v)
    terms = set(d["coefficients"].filter(spec="bits_cluster")["term"])
    assert terms == {"Intercept", "bits"} and (d["coefficients"].filter(spec="bits_cluster")["flag"] == "").all()
    assert d["tests"].filter(pl.col("test").str.starts_with("LR"))["statistic"].is_finite().all()
    # all answers identical (unknown): outcome constant -> every row NaN with a flag
    same = dose_response(a.with_columns(role=pl.lit("unknown")), v)
    assert same["coefficients"]["coef"].is_nan().all() and (same["coefficients"]["flag"] != "").all()
    assert same["tests"]["p_value"].is_nan().all()
    # no rows at all
    empty = dose_response(a.clear(), v)
    assert empty["coefficients"]["coef"].is_nan().all() and (empty["coefficients"]["n_obs"] == 0).all()


def test_transition_model():
    a, _, v = synthetic_answers(3000, models=("m1", "m2"), seeds=3, effect=-0.2, item_sd=0.5, seed=10)
    t = transition_model(item_table(a), v, "bf16")
    assert t.columns == COEF_COLUMNS and set(t["spec"]) == {"transition_cluster"}
    bits = t.filter(term="bits").row(0, named=True)
    assert bits["coef"] < 0 and bits["or_hi"] < 1 and bits["flag"] == ""
    deg = transition_model(item_table(a.with_columns(role=pl.lit("unknown"))), v, "bf16")
    assert deg["coef"].is_nan().all() and (deg["flag"] != "").all()


def test_full_scale_timing():
    """911,100 answer rows (3 models x 5 variants x 5 seeds x 12,148 items); prints, no assert."""
    t0 = time.perf_counter()
    a, _, v = synthetic_answers(12148, models=("m1", "m2", "m3"), seeds=5, seed=0)
    times = {"synthetic_answers": time.perf_counter() - t0}
    assert a.height == 911_100
    steps = [
        ("rates", lambda: rates(a)),
        ("item_table", lambda: item_table(a)),
        ("transitions", lambda: transitions(items_tbl, "bf16")),
        ("dose_response", lambda: dose_response(a, v)),
    ]
    for name, f in steps:
        t = time.perf_counter()
        out = f()
        times[name] = time.perf_counter() - t
        if name == "item_table":
            items_tbl = out
    pipeline = sum(s for k, s in times.items() if k != "synthetic_answers")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        "\n911,100-row timing (s): "
        + ", ".join(f"{k} {v:.2f}" for k, v in times.items())
        + f"; pipeline total {pipeline:.2f}; peak RSS of the test process {peak:.0f} MiB"
    )


def _pruned_study(effects: dict[str, float], slope: float, n_items: int = 4000, seed: int = 11):
    """Synthetic answers of a baseline and pruning variants with a planted sparsity effect.

    ``effects`` maps variant -> (method, measured sparsity, method slope multiplier) through the
    synthetic generator's bits: a variant's planted log-odds shift is slope * multiplier * sparsity.
    """
    doses = {"bf16": 0.0} | {v: m * s for v, (_, s, m) in effects.items()}
    a, _, v = synthetic_answers(n_items, models=("m1",), variants=doses, seeds=3, effect=slope, item_sd=0.0, seed=seed)
    meta = pl.DataFrame(
        [{"variant": k, "method": meth, "target_sparsity": 0.6, "sparsity": s} for k, (meth, s, _) in effects.items()],
        schema={"variant": pl.String, "method": pl.String, "target_sparsity": pl.Float64, "sparsity": pl.Float64},
    )
    v = (
        v.drop("method", "target_sparsity", "sparsity")
        .join(meta, on="variant", how="left")
        .with_columns(
            bits=pl.lit(16.0), kind=pl.when(pl.col("method").is_null()).then(pl.lit("dtype")).otherwise(pl.lit("prune"))
        )
        .select(v.columns)
    )
    return a, v


def test_sparsity_planted_effect_and_interaction_recovered():
    # magnitude: log-odds slope 2.0 per unit of MEASURED sparsity; wanda: 1.0 (interaction -1.0).
    # The target sparsity (0.6) differs from the measured one: the fit must use the measured one.
    effects = {
        "mag-25": ("magnitude", 0.25, 1.0),
        "mag-50": ("magnitude", 0.5, 1.0),
        "wanda-25": ("wanda", 0.25, 0.5),
        "wanda-50": ("wanda", 0.5, 0.5),
    }
    a, v = _pruned_study(effects, slope=2.0)
    d = sparsity_response(a, v)
    c, t = d["coefficients"], d["tests"]
    assert c.columns == COEF_COLUMNS and t.columns == TEST_COLUMNS
    assert set(c["spec"]) == {"sparsity_cluster", "sparsity_per_model"}
    assert (c["flag"] == "").all() and c["converged"].all()
    assert "bits" not in set(c["term"])  # no pruned variant is quantized
    s = coef(d, "sparsity_cluster", "sparsity")
    assert s["coef"] - 1.96 * s["se"] <= 2.0 <= s["coef"] + 1.96 * s["se"] and s["p_value"] < 1e-6
    i = coef(d, "sparsity_cluster", "sparsity:C(method)[T.wanda]")
    assert i["coef"] - 1.96 * i["se"] <= -1.0 <= i["coef"] + 1.96 * i["se"] and i["or_hi"] < 1
    wald = t.filter(spec="sparsity_cluster", test="Wald sparsity:C(method) (cluster)").row(0, named=True)
    assert wald["df"] == 1 and wald["p_value"] < 0.01 and wald["flag"] == ""
    # the same fit per model (one model here) and no baseline/quantization variant leaks in
    assert coef(d, "sparsity_per_model", "sparsity", scope="m1")["coef"] == pytest.approx(s["coef"])
    n_valid = a.filter(~pl.col("placebo"), pl.col("role").is_in(["biased", "anti", "unknown"])).height
    assert s["n_obs"] == n_valid


def test_sparsity_bits_term_single_method_and_no_pruning():
    effects = {"wanda-50": ("wanda", 0.5, 1.0), "wanda-50-q4": ("wanda", 0.5, 1.0)}
    a, v = _pruned_study(effects, slope=1.0, n_items=1000, seed=12)
    # a pruned-then-quantized variant adds a bits term; one method: the interaction is flagged
    v = v.with_columns(bits=pl.when(pl.col("variant") == "wanda-50-q4").then(4.0).otherwise(pl.col("bits")))
    d = sparsity_response(a, v)
    assert {"Intercept", "sparsity", "bits"} <= set(d["coefficients"]["term"])
    assert np.isfinite(coef(d, "sparsity_cluster", "sparsity")["coef"])
    inter = d["tests"].filter(pl.col("test").str.contains("C\\(method\\)"))
    assert inter.height == 4 and (inter["flag"] == SINGLE_METHOD).all() and inter["p_value"].is_nan().all()
    # no pruning variants at all (a quantization study): empty coefficients, flagged tests
    a, _, v = synthetic_answers(300, models=("m1",), seeds=2, seed=13)
    d = sparsity_response(a, v)
    assert d["coefficients"].columns == COEF_COLUMNS and d["coefficients"].height == 0
    assert d["tests"].columns == TEST_COLUMNS and (d["tests"]["flag"] == NO_PRUNING).all()
    # variants table from before pruning existed (no method column), and no answers at all
    assert sparsity_response(a, v.drop("method", "target_sparsity", "sparsity"))["coefficients"].height == 0
    a, v = _pruned_study(effects, slope=1.0, n_items=200, seed=14)
    empty = sparsity_response(a.clear(), v)
    assert empty["coefficients"]["coef"].is_nan().all() and (empty["coefficients"]["n_obs"] == 0).all()
    assert (empty["coefficients"]["flag"] == "no observations").all() and empty["tests"]["p_value"].is_nan().all()
