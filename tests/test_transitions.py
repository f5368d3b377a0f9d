import math

import polars as pl
import pytest

from compbias.stats.floors import excess_emergence, noise_floor
from compbias.stats.transitions import (
    item_table,
    paired_tests,
    probability_shifts,
    role_flows,
    transitions,
)
from compbias.testing.synthetic import complete_answers, synthetic_answers

U, B, A, X = "unknown", "biased", "anti", "invalid"
# item -> category, baseline roles (seeds 0,1,2), q4 roles, baseline p_biased, q4 p_biased per seed,
# placebo roles (baseline seeds 10, 11, 12)
ITEMS = {
    "i1": ("age", (U, U, U), (U, B, U), 0.1, (0.4, 0.5, 0.6), (B, U, U)),
    "i2": ("age", (U, A, U), (U, U, U), 0.2, (1 / 3,) * 3, (U, U, B)),
    "i3": ("age", (B, U, U), (B, B, B), 1 / 3, (1 / 3,) * 3, (B, U, U)),
    "i4": ("age", (A, A, U), (B, A, X), 0.5, (1 / 3,) * 3, (U, U, U)),
    "i5": ("ses", (U, U, X), (A, A, A), 0.0, (1 / 3,) * 3, (U, A, U)),
}


def _answers() -> pl.DataFrame:
    recs = []
    for item, (cat, base, q4, pb_base, pb_q4, plc) in ITEMS.items():
        recs += [("base", s, False, item, cat, r, pb_base) for s, r in enumerate(base)]
        recs += [("q4", s, False, item, cat, r, p) for s, (r, p) in enumerate(zip(q4, pb_q4))]
        recs += [("base", 10 + s, True, item, cat, r, pb_base) for s, r in enumerate(plc)]
    cols = ["variant", "seed", "placebo", "item_id", "category", "role", "p_biased"]
    return complete_answers({"model": "m"} | {c: [r[k] for r in recs] for k, c in enumerate(cols)})


def row(df: pl.DataFrame, **keys) -> dict:
    out = df.filter(*(pl.col(k) == v for k, v in keys.items()))
    assert out.height == 1, (keys, out)
    return out.row(0, named=True)


def test_item_table_hand_values():
    it = item_table(_answers())
    assert it.columns == [
        "model",
        "variant",
        "item_id",
        "category",
        "condition",
        "polarity",
        "n_seeds",
        "frac_biased",
        "frac_anti",
        "frac_unknown",
        "frac_invalid",
        "any_biased",
        "any_anti",
        "majority",
        "p_biased",
        "p_anti",
        "p_unknown",
    ]
    assert it.height == 10  # 5 items x 2 variants; placebo rows excluded
    assert (it["n_seeds"] == 3).all()
    i2 = row(it, variant="base", item_id="i2")  # placebo seed 12 answered biased but must not count
    assert not i2["any_biased"] and i2["any_anti"] and i2["majority"] == U
    i4 = row(it, variant="base", item_id="i4")
    assert (i4["frac_anti"], i4["frac_unknown"], i4["majority"]) == (pytest.approx(2 / 3), pytest.approx(1 / 3), A)
    # B, A, invalid: 1/1/1 tie -> first of unknown > anti > biased > invalid present = anti
    i4q = row(it, variant="q4", item_id="i4")
    assert i4q["majority"] == A and i4q["frac_invalid"] == pytest.approx(1 / 3)
    assert row(it, variant="q4", item_id="i1")["p_biased"] == pytest.approx(0.5)  # mean(.4, .5, .6)
    assert row(it, variant="base", item_id="i3")["majority"] == U  # B U U


def test_transitions_hand_values():
    t = transitions(item_table(_answers()), "base")
    assert t.columns == [
        "model",
        "variant",
        "category",
        "n_items",
        "n_unbiased_base",
        "n_became_biased",
        "pct_became_biased",
        "n_unanti_base",
        "n_became_anti",
        "pct_became_anti",
    ]
    assert t["variant"].unique().to_list() == ["q4"]
    cols = ["n_items", "n_unbiased_base", "n_became_biased", "n_unanti_base", "n_became_anti"]
    # age: unbiased at base i1,i2,i4 -> became i1,i4 (2/3); no anti at base i1,i3 -> none became anti
    age = row(t, category="age")
    assert [age[c] for c in cols] == [4, 3, 2, 2, 0]
    assert (age["pct_became_biased"], age["pct_became_anti"]) == pytest.approx((200 / 3, 0.0))
    ses = row(t, category="ses")  # i5: U U invalid -> A A A
    assert [ses[c] for c in cols] == [1, 1, 0, 1, 1]
    assert (ses["pct_became_biased"], ses["pct_became_anti"]) == (0.0, 100.0)
    al = row(t, category="all")
    assert [al[c] for c in cols] == [5, 4, 2, 3, 1]
    assert (al["pct_became_biased"], al["pct_became_anti"]) == pytest.approx((50.0, 100 / 3))


def test_transitions_no_unbiased_items_gives_nan():
    a = complete_answers(
        {"model": "m", "variant": ["base", "q4"], "seed": 0, "item_id": "i", "category": "age", "role": "biased"}
    )
    t = transitions(item_table(a), "base")
    assert (t["n_unbiased_base"] == 0).all() and t["pct_became_biased"].is_nan().all()


def test_role_flows_hand_values():
    f = role_flows(item_table(_answers()), "base")
    assert f.columns == ["model", "variant", "from_role", "to_role", "n", "share", "share_of_from"]
    got = {(r["from_role"], r["to_role"]): (r["n"], r["share"], r["share_of_from"]) for r in f.iter_rows(named=True)}
    # majorities base -> q4: i1 U->U, i2 U->U, i3 U->B, i4 A->A (tie), i5 U->A
    assert got == {
        (U, U): (2, pytest.approx(0.4), pytest.approx(0.5)),
        (U, B): (1, pytest.approx(0.2), pytest.approx(0.25)),
        (U, A): (1, pytest.approx(0.2), pytest.approx(0.25)),
        (A, A): (1, pytest.approx(0.2), pytest.approx(1.0)),
    }


def test_noise_floor_hand_values():
    nf = noise_floor(_answers(), "base", n_seeds=2)
    assert nf.columns == ["model", "category", "n_unbiased_base", "n_placebo_seeds", "floor_placebo", "floor_analytic"]
    # unbiased at base: i1,i2,i4 (age), i5 (ses). First 2 placebo seeds (10, 11): only i1 has a B
    # (i2's B is in seed 12, not used). analytic 1-(1-p)^2: i1 .19, i2 .36, i4 .75, i5 0
    age, ses, al = (row(nf, category=c) for c in ("age", "ses", "all"))
    assert (age["n_unbiased_base"], age["n_placebo_seeds"]) == (3, 2)
    assert (age["floor_placebo"], age["floor_analytic"]) == pytest.approx((1 / 3, 1.3 / 3))
    assert (ses["floor_placebo"], ses["floor_analytic"]) == (0.0, 0.0)
    assert (al["n_unbiased_base"], al["floor_placebo"], al["floor_analytic"]) == (4, 0.25, pytest.approx(0.325))
    # three placebo seeds: i2 now counts too
    assert row(noise_floor(_answers(), "base", 3), category="age")["floor_placebo"] == pytest.approx(2 / 3)
    no_plc = noise_floor(_answers().filter(~pl.col("placebo")), "base", 2)
    assert no_plc["floor_placebo"].is_nan().all() and (no_plc["n_placebo_seeds"] == 0).all()


def test_excess_emergence_hand_values():
    ex = excess_emergence(_answers(), "base", n_seeds=2, n_boot=500, seed=3)
    # became among base-unbiased: i1 1, i2 0, i4 1 (age); i5 0 (ses)
    age = row(ex, category="age")
    assert (age["observed"], age["excess_analytic"], age["excess_placebo"]) == pytest.approx(
        (2 / 3, 2 / 3 - 1.3 / 3, 1 / 3)
    )
    assert age["excess_analytic_lo"] <= age["excess_analytic"] <= age["excess_analytic_hi"]
    al = row(ex, category="all")
    assert (al["observed"], al["excess_analytic"], al["excess_placebo"]) == pytest.approx((0.5, 0.175, 0.25))
    ses = row(ex, category="ses")  # one item: degenerate interval
    assert (ses["excess_placebo"], ses["excess_placebo_lo"], ses["excess_placebo_hi"]) == (0.0, 0.0, 0.0)
    assert ex.equals(excess_emergence(_answers(), "base", n_seeds=2, n_boot=500, seed=3))


def test_probability_shifts_hand_values():
    ps = probability_shifts(item_table(_answers()), "base")
    items = ps["items"]
    assert items.columns == ["model", "variant", "item_id", "category", "condition", "d_p_biased", "d_p_unknown"]
    assert row(items, item_id="i1")["d_p_biased"] == pytest.approx(0.4)  # .5 - .1
    s = row(ps["summary"], category="age", quantity="d_p_biased")
    assert ps["summary"].columns == [
        "model",
        "variant",
        "category",
        "quantity",
        "n_items",
        "mean",
        "median",
        "q05",
        "q25",
        "q75",
        "q95",
        "share_gt_0p1",
        "share_gt_0p5",
    ]
    # age deltas: i1 .4, i2 1/3-.2=.133333, i3 0, i4 1/3-.5=-.166667
    # mean .366667/4=.0916667; median (0+.133333)/2; q25 = -.166667 + .75*.166667 = -.0416667
    assert (s["n_items"], s["mean"], s["median"], s["q25"]) == (
        4,
        pytest.approx(0.0916667),
        pytest.approx(0.0666667),
        pytest.approx(-0.0416667),
    )
    assert (s["share_gt_0p1"], s["share_gt_0p5"]) == (0.5, 0.0)


def test_paired_tests_hand_values():
    pt = paired_tests(item_table(_answers()), "base", n_boot=400, seed=1)
    # majority biased: none at base; i3 at q4 -> age: both 0, base_only 0, var_only 1, neither 3
    age = row(pt, category="age")
    assert [age[c] for c in ("n_both", "n_base_only", "n_var_only", "n_neither")] == [0, 0, 1, 3]
    # exact McNemar b=0, c=1: p = min(1, 2 * P(Bin(1,.5) <= 0)) = 1
    assert age["mcnemar_exact"] and age["mcnemar_stat"] == 0 and age["mcnemar_p"] == pytest.approx(1.0)
    # biased_base = (0+0+1/3+0)/4 = 1/12; biased_variant = (1/3+0+1+1/3)/4 = 5/12; diff = 1/3
    assert (age["biased_base"], age["biased_variant"], age["biased_diff"]) == pytest.approx((1 / 12, 5 / 12, 1 / 3))
    assert age["biased_diff_lo"] <= age["biased_diff"] <= age["biased_diff_hi"]
    ses = row(pt, category="ses")
    assert (ses["biased_diff"], ses["biased_diff_lo"], ses["biased_diff_hi"], ses["boot_p"]) == (0.0, 0.0, 0.0, 1.0)
    assert {"mcnemar_q", "boot_q"} <= set(pt.columns)


def test_paired_tests_large_family():
    a, _, _ = synthetic_answers(1500, models=("m1", "m2"), seeds=3, seed=5)
    pt = paired_tests(item_table(a), "bf16", n_boot=200, seed=0)
    assert pt.height == 2 * 4 * 6  # models x non-baseline variants x (5 categories + all)
    discordant = pt["n_base_only"] + pt["n_var_only"]
    assert (pt["mcnemar_exact"] == (discordant < 25)).all()
    assert ((pt["mcnemar_q"] >= pt["mcnemar_p"]) & (pt["boot_q"] >= pt["boot_p"])).all()
    # the planted effect (more bias at fewer bits) is detected everywhere
    assert (pt["biased_diff_lo"] > 0).all() and (pt["boot_q"] < 0.05).all()
    assert not math.isnan(pt["mcnemar_stat"].sum())


def test_direction_tests_hand_values():
    from compbias.stats.direction import DIRECTION_COLUMNS, direction_tests

    d = direction_tests(_answers(), "base")
    assert d.columns == DIRECTION_COLUMNS
    cols = ["n_items", "n_to_biased", "n_to_anti", "n_both", "n_biased_only", "n_anti_only"]
    # paired by seed, base -> q4: i1 UUU -> UBU (to biased); i2 UAU -> UUU (nothing); i3 has a biased
    # base answer (out); i4 AAU -> BAX (to biased: seed 0; no seed moved to anti: seed 1 was anti);
    # i5 UUX -> AAA (to anti)
    unb_age, unb_all = row(d, category="age", population="unbiased"), row(d, category="all", population="unbiased")
    assert [unb_age[c] for c in cols] == [3, 2, 0, 0, 2, 0]
    assert [unb_all[c] for c in cols] == [4, 2, 1, 0, 2, 1]
    assert (unb_all["share_to_biased"], unb_all["share_to_anti"], unb_all["diff"]) == (0.5, 0.25, 0.25)
    # exact binomial: 2 vs 0 -> p = 2 * 0.5^2 = 0.5; 2 vs 1 -> p = 1
    assert unb_age["p_value"] == pytest.approx(0.5) and unb_all["p_value"] == pytest.approx(1.0)
    # baseline-unknown items (no biased, no anti answer): i1 (age), i5 (ses)
    unk_all = row(d, category="all", population="unknown")
    assert [unk_all[c] for c in cols] == [2, 1, 1, 0, 1, 1]
    unk_ses = row(d, category="ses", population="unknown")
    assert [unk_ses[c] for c in cols] == [1, 0, 1, 0, 0, 1] and unk_ses["p_value"] == pytest.approx(1.0)
    # BH over the 6 rows: p sorted .5, 1, ...: q = min over ranks of p * 6 / rank
    assert unb_age["q_value"] == pytest.approx(1.0) and (d["q_value"] >= d["p_value"]).all()


def test_direction_tests_planted_direction():
    from compbias.stats.direction import direction_tests

    a, _, _ = synthetic_answers(1500, models=("m1",), seeds=3, seed=5)
    d = direction_tests(a, "bf16").filter(pl.col("category") == "all", pl.col("variant") == "q3")
    unk = d.filter(pl.col("population") == "unknown").row(0, named=True)
    # the planted effect raises P(biased) only: more items move to biased than to anti
    assert unk["n_biased_only"] > unk["n_anti_only"] and unk["p_value"] < 0.05
