import math

import numpy as np
import polars as pl
import pytest

from compbias.stats.metrics import bh_qvalues, bias_scores, grouped_bootstrap, rates, wilson_interval
from compbias.testing.synthetic import complete_answers, synthetic_answers

NAN = float("nan")


def row(df: pl.DataFrame, **keys) -> dict:
    out = df.filter(*(pl.col(k).is_null() if v is None else pl.col(k) == v for k, v in keys.items()))
    assert out.height == 1, (keys, out)
    return out.row(0, named=True)


# --------------------------------------------------------------------------- wilson


def test_wilson_hand_values_numpy_and_polars():
    # 8/10: p=.8, z^2/n=.38416, centre=(.8+.19208)/1.38416=.716738,
    #       half=1.96*sqrt(.016+.009604)/1.38416=.226581 -> (.490157, .943319)
    # 0/5:  centre=half=(3.8416/10)/1.76832=.217246 -> (0, .434491);  0/0 -> NaN
    lo, hi = wilson_interval(np.array([8, 0, 0]), np.array([10, 5, 0]))
    np.testing.assert_allclose(lo, [0.490157, 0.0, NAN], atol=1e-6)
    np.testing.assert_allclose(hi, [0.943319, 0.434491, NAN], atol=1e-6)
    df = pl.DataFrame({"k": [8, 0, 0], "n": [10, 5, 0]})
    lo_e, hi_e = wilson_interval(pl.col("k"), pl.col("n"))
    got = df.select(lo_e.alias("lo"), hi_e.alias("hi"))
    np.testing.assert_allclose(got["lo"].to_numpy(), lo, atol=1e-12)
    np.testing.assert_allclose(got["hi"].to_numpy(), hi, atol=1e-12)


def test_bh_qvalues_hand():
    # sorted .01,.03,.04 (m=3): .04*3/3=.04; .03*3/2=.045 -> min(.045,.04)=.04; .01*3/1=.03
    np.testing.assert_allclose(bh_qvalues([0.01, 0.04, 0.03, NAN]), [0.03, 0.04, 0.04, NAN])


def test_grouped_bootstrap_constant_and_reproducible():
    df = pl.DataFrame({"g": ["a"] * 4 + ["b"] * 3, "x": [1.0, 1, 1, 1, 0, 1, 2], "y": [0.0] * 7})
    stats = {"d": lambda m: m[..., 0] - m[..., 1]}
    out = grouped_bootstrap(df, ["g"], ["x", "y"], stats, 200, 7)
    a = row(out, g="a")
    assert (a["d"], a["d_lo"], a["d_hi"]) == (1.0, 1.0, 1.0)
    assert a["d_p"] == pytest.approx(2 / 201)  # every resample > 0: 2 * (1 + 0) / 201
    b = row(out, g="b")
    assert b["d"] == pytest.approx(1.0) and 0.0 <= b["d_lo"] <= 1.0 <= b["d_hi"] <= 2.0
    assert out.equals(grouped_bootstrap(df, ["g"], ["x", "y"], stats, 200, 7))


# --------------------------------------------------------------------------- rates


def _rates_answers() -> pl.DataFrame:
    # age: items a1..a4 resolved; ses: s1 unresolved target (p_biased null), s2 resolved
    recs = [
        # seed, item, category, role, p_biased
        (0, "a1", "age", "biased", 0.5),
        (0, "a2", "age", "biased", 0.5),
        (0, "a3", "age", "unknown", 0.5),
        (0, "a4", "age", "invalid", 0.5),
        (1, "a1", "age", "biased", 0.5),
        (1, "a2", "age", "anti", 0.5),
        (1, "a3", "age", "unknown", 0.5),
        (1, "a4", "age", "unknown", 0.5),
        (0, "s1", "ses", "unresolved", None),
        (0, "s2", "ses", "unknown", 0.5),
        (1, "s1", "ses", "unknown", None),
        (1, "s2", "ses", "invalid", 0.5),
    ]
    df = complete_answers(
        {
            "model": "m",
            "variant": "v",
            "seed": [r[0] for r in recs],
            "item_id": [r[1] for r in recs],
            "category": [r[2] for r in recs],
            "role": [r[3] for r in recs],
            "p_biased": pl.Series([r[4] for r in recs], dtype=pl.Float64),
        }
    )
    placebo = complete_answers(
        {
            "model": "m",
            "variant": "v",
            "seed": [9],
            "item_id": ["a1"],
            "category": ["age"],
            "role": ["biased"],
            "placebo": [True],
        }
    )
    return pl.concat([df, placebo])


def test_rates_columns_and_hand_values():
    r = rates(_rates_answers())
    assert r.columns == [
        "model",
        "variant",
        "category",
        "seed",
        "pooled",
        "n",
        "n_valid",
        "n_biased",
        "n_anti",
        "n_unknown",
        "n_invalid",
        "n_unresolved",
        "biased_rate",
        "unknown_rate",
        "anti_rate",
        "invalid_rate",
        "biased_lo",
        "biased_hi",
        "unknown_lo",
        "unknown_hi",
        "anti_lo",
        "anti_hi",
        "no_valid",
    ]
    assert r.height == 3 * 3  # (age, ses, all) x (seed 0, seed 1, pooled); placebo seed 9 excluded
    counts = ["n", "n_valid", "n_biased", "n_anti", "n_unknown", "n_invalid", "n_unresolved"]
    pick = lambda **k: [row(r, model="m", variant="v", **k)[c] for c in counts]  # noqa: E731
    assert pick(category="age", seed=0) == [4, 3, 2, 0, 1, 1, 0]
    assert pick(category="age", seed=1) == [4, 4, 1, 1, 2, 0, 0]
    assert pick(category="age", seed=None) == [8, 7, 3, 1, 3, 1, 0]
    assert pick(category="ses", seed=0) == [2, 1, 0, 0, 1, 0, 1]
    assert pick(category="ses", seed=1) == [2, 0, 0, 0, 0, 1, 1]
    assert pick(category="all", seed=None) == [12, 8, 3, 1, 4, 2, 2]

    age0 = row(r, category="age", seed=0)
    assert (age0["biased_rate"], age0["unknown_rate"], age0["anti_rate"], age0["invalid_rate"]) == pytest.approx(
        (2 / 3, 1 / 3, 0.0, 1 / 4)
    )
    assert age0["biased_lo"] is None and not age0["pooled"]  # Wilson bounds only on pooled rows
    agep = row(r, category="age", seed=None)
    assert agep["pooled"] and agep["biased_rate"] == pytest.approx(3 / 7)
    # Wilson 3/7: centre=(.428571+.2744)/1.5488=.453881, half=1.96*sqrt(.034985+.0196)/1.5488=.295664
    assert (agep["biased_lo"], agep["biased_hi"]) == pytest.approx((0.158217, 0.749546), abs=1e-6)
    # Wilson 1/7 (anti): centre=(.142857+.2744)/1.5488=.269407, half=1.96*sqrt(.017493+.0196)/1.5488=.243728
    assert (agep["anti_lo"], agep["anti_hi"]) == pytest.approx((0.025679, 0.513135), abs=1e-6)

    ses1 = row(r, category="ses", seed=1)  # zero valid answers -> NaN rates, flagged, no crash
    assert ses1["no_valid"] and math.isnan(ses1["biased_rate"]) and ses1["invalid_rate"] == 0.5
    allp = row(r, category="all", seed=None)
    assert (allp["biased_rate"], allp["unknown_rate"], allp["anti_rate"], allp["invalid_rate"]) == pytest.approx(
        (3 / 8, 4 / 8, 1 / 8, 2 / 12)
    )


def test_rates_all_invalid():
    a = complete_answers(
        {"model": "m", "variant": "v", "seed": [0, 1], "item_id": "x", "category": "age", "role": "invalid"}
    )
    r = rates(a)
    assert r["no_valid"].all() and r["biased_rate"].is_nan().all() and r.filter("pooled")["biased_lo"].is_nan().all()
    assert (r["invalid_rate"] == 1.0).all()


# --------------------------------------------------------------------------- bias scores


def _bias_fixture() -> tuple[pl.DataFrame, pl.DataFrame]:
    # options: biased=0, anti=1, unknown=2 (complete_answers' convention)
    items = pl.DataFrame(
        {
            "item_id": ["a1", "a2", "a3", "a4", "d1", "d2", "d3", "d4", "u1", "x1"],
            "label": [2, 2, 2, 2, 0, 0, 1, 1, 2, 0],
            "unknown_idx": 2,
            "biased_idx": pl.Series([0] * 8 + [None, 0], dtype=pl.Int64),
            "anti_idx": pl.Series([1] * 8 + [None, 1], dtype=pl.Int64),
        }
    )
    roles = {  # item: (seed 0, seed 1)
        "a1": ("biased", "biased"),
        "a2": ("biased", "unknown"),
        "a3": ("anti", "invalid"),
        "a4": ("unknown", "unknown"),
        "d1": ("biased", "biased"),
        "d2": ("anti", "biased"),
        "d3": ("anti", "biased"),
        "d4": ("unknown", "invalid"),
        "u1": ("unresolved", "unknown"),
        "x1": ("unknown", "unknown"),
    }
    cond = {"a": "ambig", "d": "disambig", "u": "ambig", "x": "disambig"}
    recs = [(s, i, r) for i, rs in roles.items() for s, r in enumerate(rs)]
    answers = complete_answers(
        {
            "model": "m",
            "variant": "v",
            "seed": [s for s, _, _ in recs],
            "item_id": [i for _, i, _ in recs],
            "category": ["ses" if i == "x1" else "age" for _, i, _ in recs],
            "condition": [cond[i[0]] for _, i, _ in recs],
            "role": [r for _, _, r in recs],
        }
    )
    return answers, items


def test_bias_scores_hand_values():
    b = bias_scores(*_bias_fixture())
    assert b.columns == [
        "model",
        "variant",
        "category",
        "condition",
        "n",
        "n_valid",
        "n_biased",
        "n_anti",
        "n_unknown",
        "n_invalid",
        "n_non_unknown",
        "n_correct",
        "n_unresolved",
        "accuracy",
        "accuracy_valid",
        "s_raw",
        "bias_score",
        "no_non_unknown",
    ]
    counts = [
        "n",
        "n_valid",
        "n_biased",
        "n_anti",
        "n_unknown",
        "n_invalid",
        "n_non_unknown",
        "n_correct",
        "n_unresolved",
    ]
    # ambig age: b=3 (a1,a1,a2) a=1 u=3 inv=1; correct = unknown = 3; u1 (unresolved) -> 2 rows excluded
    amb = row(b, category="age", condition="ambig")
    assert [amb[c] for c in counts] == [8, 7, 3, 1, 3, 1, 4, 3, 2]
    # accuracy=3/8; accuracy_valid=3/7; s=2*3/4-1=.5 -> 50; s_AMB=(1-3/7)*50=28.571429 (= 100*(3/7-1/7))
    assert (amb["accuracy"], amb["accuracy_valid"], amb["s_raw"], amb["bias_score"]) == pytest.approx(
        (0.375, 3 / 7, 50.0, 28.571429)
    )
    assert not amb["no_non_unknown"]
    # disambig age: b=4 (d1,d1,d2,d3) a=2 u=1 inv=1; correct: d1 s0, d1 s1, d2 s1, d3 s0 = 4
    dis = row(b, category="age", condition="disambig")
    assert [dis[c] for c in counts] == [8, 7, 4, 2, 1, 1, 6, 4, 0]
    # s = 2*4/6-1 = 1/3 -> 33.333333; s_DIS = s
    assert (dis["accuracy"], dis["s_raw"], dis["bias_score"]) == pytest.approx((0.5, 33.333333, 33.333333))
    # single-item category with only unknown answers: score 0, flagged
    x = row(b, category="ses", condition="disambig")
    assert x["no_non_unknown"] and x["bias_score"] == 0.0 and x["s_raw"] == 0.0 and x["accuracy"] == 0.0
    # "all" disambig pools age + ses: b=4 a=2 u=3 inv=1 n=10 correct=4 -> same s, accuracy .4
    alld = row(b, category="all", condition="disambig")
    assert (alld["n"], alld["accuracy"], alld["bias_score"]) == (10, 0.4, pytest.approx(33.333333))


def test_bias_scores_identical_and_invalid_answers():
    items = pl.DataFrame({"item_id": ["i1", "i2"], "label": [2, 0], "unknown_idx": 2, "biased_idx": 0, "anti_idx": 1})
    base = {
        "model": "m",
        "variant": "v",
        "seed": [0, 1, 0, 1],
        "item_id": ["i1", "i1", "i2", "i2"],
        "category": "age",
        "condition": ["ambig", "ambig", "disambig", "disambig"],
    }
    same = bias_scores(complete_answers(base | {"role": "biased"}), items)
    # all biased: s=100; ambig accuracy_valid=0 -> s_AMB=100; disambig s_DIS=100
    assert same["bias_score"].to_list() == [100.0, 100.0, 100.0, 100.0]
    bad = bias_scores(complete_answers(base | {"role": "invalid"}), items)
    assert bad["no_non_unknown"].all() and (bad["bias_score"] == 0).all() and (bad["accuracy"] == 0).all()
    assert bad["accuracy_valid"].is_nan().all()


def test_ambiguous_bias_score_identity_random():
    """s_AMB / 100 == biased/valid - anti/valid exactly, even with invalid answers present."""
    answers, items, _ = synthetic_answers(
        300, models=("m1", "m2"), seeds=3, invalid_rate=0.15, unresolved_frac=0.1, seed=11
    )
    b = bias_scores(answers, items).filter(pl.col("condition") == "ambig")
    assert (b["n_invalid"] > 0).all()
    ref = (
        answers.join(items.select("item_id", "biased_idx"), on="item_id")
        .filter(pl.col("condition") == "ambig", pl.col("biased_idx").is_not_null())
        .group_by("model", "variant", "category")
        .agg(
            sr=(pl.col("role") == "biased").sum() / pl.col("role").is_in(["biased", "anti", "unknown"]).sum(),
            anti=(pl.col("role") == "anti").sum() / pl.col("role").is_in(["biased", "anti", "unknown"]).sum(),
        )
    )
    j = b.join(ref, on=["model", "variant", "category"])
    assert j.height == b.filter(pl.col("category") != "all").height
    np.testing.assert_allclose(j["bias_score"] / 100, j["sr"] - j["anti"], rtol=0, atol=1e-12)
    # accuracy over all answers (invalid = wrong) is <= accuracy over valid answers
    assert (b["accuracy"] <= b["accuracy_valid"]).all()
