"""Disambiguated contexts: accuracy, s_DIS, the split of errors and the paired tests vs the
baseline (compbias.stats.disambig), by hand."""

import math

import polars as pl
import pytest

from compbias.stats.disambig import disambiguated, exact_mcnemar

ITEMS = pl.DataFrame(
    {
        "item_id": ["d1", "d2", "a1"],
        "condition": ["disambig", "disambig", "ambig"],
        "label": [0, 1, 2],  # d1: the biased option is correct; d2: the anti option is
        "unknown_idx": [2, 2, 2],
        "biased_idx": [0, 0, 0],
        "anti_idx": [1, 1, 1],
    }
)


def answers() -> pl.DataFrame:
    rows = [  # (variant, seed, item, choice, placebo)
        ("bf16", 0, "d1", 0, False),
        ("bf16", 1, "d1", 0, False),
        ("bf16", 0, "d2", 1, False),
        ("bf16", 1, "d2", 1, False),
        ("bf16", 9, "d2", 0, True),  # placebo: excluded
        ("bf16", 0, "a1", 0, False),  # ambiguous: not in this table
        ("q4", 0, "d1", 1, False),  # anti error
        ("q4", 1, "d1", 2, False),  # unknown error
        ("q4", 0, "d2", 0, False),  # biased error
        ("q4", 1, "d2", None, False),  # invalid
        ("q4", 0, "a1", 1, False),
    ]
    v, s, i, c, p = zip(*rows)
    cond = ["ambig" if x == "a1" else "disambig" for x in i]
    return pl.DataFrame(
        {"model": "m", "variant": v, "category": "age", "condition": cond, "seed": s, "item_id": i, "choice": c}
    ).with_columns(placebo=pl.Series(p), choice=pl.col("choice").cast(pl.Int64))


def test_hand_values():
    t = disambiguated(answers(), ITEMS, "bf16")
    assert set(t["category"]) == {"age", "all"}
    base = t.filter(pl.col("variant") == "bf16", pl.col("category") == "all").row(0, named=True)
    q = t.filter(pl.col("variant") == "q4", pl.col("category") == "all").row(0, named=True)
    assert (base["n"], base["n_correct"], base["accuracy"], base["s_dis"], base["n_errors"]) == (4, 4, 1.0, 0.0, 0)
    assert math.isnan(base["share_err_biased"]) and base["acc_p"] is None and base["n_pairs"] is None
    assert (q["n"], q["n_valid"], q["n_invalid"], q["n_correct"], q["accuracy"]) == (4, 3, 1, 0, 0.0)
    # valid non-unknown: one biased (d2 -> 0), one anti (d1 -> 1): s_DIS = 100 * (2 * 1/2 - 1) = 0
    assert q["s_dis"] == 0.0
    assert (q["n_errors"], q["n_err_biased"], q["n_err_anti"], q["n_err_unknown"]) == (3, 1, 1, 1)
    assert q["share_err_biased"] == pytest.approx(1 / 3) and q["share_err_anti"] == pytest.approx(1 / 3)
    assert (q["n_pairs"], q["acc_gained"], q["acc_lost"]) == (4, 0, 4)
    assert q["acc_p"] == pytest.approx(0.125)  # exact: 2 x 0.5^4
    assert (q["err_biased_new"], q["err_biased_gone"], q["err_biased_p"]) == (1, 0, 1.0)
    assert (q["err_anti_new"], q["err_anti_gone"]) == (1, 0)
    assert q["direction_p"] == 1.0 and q["n_non_unknown"] == 2


def test_no_disambiguated_items_gives_an_empty_table():
    t = disambiguated(answers().filter(pl.col("item_id") == "a1"), ITEMS, "bf16")
    assert t.is_empty() and "s_dis" in t.columns


def test_exact_mcnemar():
    assert exact_mcnemar(0, 0) == 1.0
    assert exact_mcnemar(0, 5) == pytest.approx(2 * 0.5**5)
    assert exact_mcnemar(3, 3) == 1.0


def test_summary_lines():
    from compbias.report.summary import summary_markdown

    t = disambiguated(answers(), ITEMS, "bf16")
    text = summary_markdown({"disambiguated": t}, "bf16")
    lines = [x for x in text.splitlines() if x.startswith("- m ")]
    assert lines == [
        "- m bf16: accuracy 100.0%; s_DIS 0.0 (of 4 valid non-unknown answers); no valid wrong answers",
        "- m q4: accuracy 0.0% (bf16 100.0%; 4 answers became wrong, 0 correct, exact McNemar p = 0.125); "
        "s_DIS 0.0 (of 2 valid non-unknown answers); errors: 33.3% biased, 33.3% anti, 33.3% unknown "
        "(of 3 valid wrong answers); new errors 1 biased vs 1 anti (exact paired p = 1); "
        "biased errors 0 -> 1 (exact McNemar p = 1), anti errors 0 -> 1 (p = 1)",
    ]
    assert "## Disambiguated contexts" in text
    assert "## Disambiguated contexts" not in summary_markdown({}, "bf16")


def test_headline_analyses_use_the_ambiguous_contexts_only():
    # With both conditions the rates (and emergence, direction, regressions) are those of the
    # ambiguous items alone; a disambiguated-only study keeps its rows.
    from compbias.stats.metrics import headline_rows, rates

    both = answers().with_columns(role=pl.lit("biased"), p_biased=pl.lit(0.5))
    ambig = both.filter(pl.col("condition") == "ambig")
    assert headline_rows(both).equals(ambig)
    assert rates(both).equals(rates(ambig))
    only_disambig = both.filter(pl.col("condition") == "disambig")
    assert headline_rows(only_disambig).equals(only_disambig)
    assert headline_rows(ITEMS)["item_id"].to_list() == ["a1"]
