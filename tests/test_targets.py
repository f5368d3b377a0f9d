"""Bias-target derivation per category (compbias.data.targets): real Nationality records, the
other eight categories unchanged, synthetic intersectional records, ``categories: all``."""

import json

import polars as pl
import pytest

from compbias.config import ConfigError, validate
from compbias.data import bbq, targets

NINE = [c for c in bbq.CATEGORIES if not c.startswith("race_x_")]

# Resolved / unresolved targets per category (ambig and disambig together) on the shared copy,
# before and after Nationality's text rule: the other eight categories must not change.
UNRESOLVED_EIGHT = {
    "age": (3680, 0),
    "disability_status": (1556, 0),
    "gender_identity": (5652, 20),
    "physical_appearance": (1576, 0),
    "race_ethnicity": (6860, 20),
    "religion": (1200, 0),
    "ses": (6864, 0),
    "sexual_orientation": (864, 0),
}


@pytest.fixture(scope="module")
def nine_items(shared_bbq):
    return bbq.load_items(bbq.jsonl_records(shared_bbq, NINE), NINE, ["ambig", "disambig"], 1)


@pytest.mark.realdata
def test_every_category_resolves_and_the_eight_are_unchanged(nine_items):
    counts = bbq.target_counts(nine_items).filter(pl.col("category") != "all")
    per = counts.group_by("category").agg(pl.col("n_resolved").sum(), pl.col("n_unresolved").sum())
    got = {r["category"]: (r["n_resolved"], r["n_unresolved"]) for r in per.iter_rows(named=True)}
    assert got.pop("nationality") == (3080, 0)  # 0 of 3,080 with the tag rule
    assert got == UNRESOLVED_EIGHT
    rules = dict(counts.select("category", "target_rule").unique().iter_rows())
    assert rules["nationality"] == "text" and {rules[c] for c in UNRESOLVED_EIGHT} == {"tag"}


@pytest.mark.realdata
@pytest.mark.parametrize(
    "item_id,target,biased,anti",
    [
        ("nationality-0", 0, 0, 1),  # neg: the option naming the group is the biased answer
        ("nationality-3", 0, 1, 0),  # nonneg: the other group is the biased answer
        ("nationality-1000", 0, 0, 2),  # the group is one of three nationalities listed
        ("nationality-2002", 1, 0, 1),
        ("nationality-3076", 1, 1, 0),  # both options share one region tag: only the text tells
        ("nationality-3079", 1, 0, 1),
    ],
)
def test_nationality_items_checked_by_hand(nine_items, item_id, target, biased, anti):
    row = nine_items.filter(pl.col("item_id") == item_id).row(0, named=True)
    assert (row["target_idx"], row["biased_idx"], row["anti_idx"]) == (target, biased, anti)
    assert row["target_rule"] == "text" and row["unresolved_reason"] is None


@pytest.mark.realdata
def test_nationality_agrees_with_upstreams_substring_rule(shared_bbq):
    # upstream (BBQ_results_metadata.R): an option is the target when its lower-cased text occurs
    # in the lower-cased stereotyped groups
    for where, rec in bbq.iter_jsonl(shared_bbq / "Nationality.jsonl"):
        joined = ", ".join(rec["additional_metadata"]["stereotyped_groups"]).lower()
        info = rec["answer_info"]
        hits = [i for i in range(3) if info[f"ans{i}"][1] != "unknown" and info[f"ans{i}"][0].lower() in joined]
        assert [bbq.parse_record(rec, where)["target_idx"]] == hits, where


@pytest.mark.realdata
def test_every_unresolved_item_says_why(nine_items):
    unresolved, _ = bbq.target_report(nine_items)
    assert unresolved.height == 40 and unresolved["reason"].null_count() == 0
    both = unresolved.filter(pl.col("reason").str.starts_with("both options"))
    none = unresolved.filter(pl.col("reason").str.starts_with("no option"))
    assert (both.height, none.height) == (12, 28)
    assert set(both["category"]) == {"gender_identity"}


# --------------------------------------------------------------------------- intersectional


def rec(cat, eid, info, groups, polarity="neg", condition="ambig", label=1):
    """A BBQ-format record with invented names (no upstream text)."""
    return {
        "example_id": eid,
        "question_index": "1",
        "question_polarity": polarity,
        "context_condition": condition,
        "category": cat,
        "answer_info": {f"ans{i}": list(v) for i, v in enumerate(info)},
        "additional_metadata": {"subcategory": "None", "stereotyped_groups": groups, "version": "a", "source": "x"},
        "context": f"Zorvan and Quillet met at the plaza ({eid}).",
        "question": "Who left early?",
        "ans0": info[0][0],
        "ans1": info[1][0],
        "ans2": info[2][0],
        "label": label,
    }


UNK = ("Not known", "unknown")
RACE_X_GENDER = [
    rec("Race_x_gender", 0, [("Zorvan Quillet", "F-Black"), UNK, ("Brisk Amato", "M-White")], ["F-Black"]),
    rec("Race_x_gender", 1, [("Brisk Amato", "M-White"), UNK, ("Zorvan Quillet", "F-Black")], ["F-Black"]),
    # same race, other gender: only the gender tells
    rec("Race_x_gender", 2, [("Ilse Marrow", "M-Black"), UNK, ("Zorvan Quillet", "F-Black")], ["F-Black"]),
    # plain groups combine (gender + race); a tag without gender takes it from the text
    rec("Race_x_gender", 3, [("the Latino woman", "Latino"), UNK, ("the White man", "M-White")], ["F", "Latino"]),
    # a plain race group with both options of that race: undecidable
    rec("Race_x_gender", 4, [("Ilse Marrow", "M-Black"), UNK, ("Zorvan Quillet", "F-Black")], ["Black"]),
]
RACE_X_SES = [
    rec("Race_x_SES", 0, [("Vell Ostrin", "lowSES-F-Black"), UNK, ("Orm Tace", "highSES-M-White")], ["Black"]),
    # same race, other SES: a plain race group means its low-SES members
    rec("Race_x_SES", 1, [("Orm Tace", "highSES-Black"), UNK, ("Vell Ostrin", "lowSES-Black")], ["Black"]),
    rec("Race_x_SES", 2, [("Orm Tace", "highSES-Asian"), UNK, ("Vell Ostrin", "lowSES-F-Latino")], ["lowSES-Latino"]),
    rec("Race_x_SES", 3, [("Orm Tace", "highSES-Asian"), UNK, ("Vell Ostrin", "Latino")], ["Latino"]),
]


@pytest.mark.parametrize(
    "records,expect",
    [(RACE_X_GENDER, [0, 2, 2, 0, None]), (RACE_X_SES, [0, 2, 2, None])],
    ids=["race_x_gender", "race_x_ses"],
)
def test_intersectional_target_rules(records, expect):
    rows = [bbq.parse_record(r, f"mem:{n}") for n, r in enumerate(records)]
    assert [r["target_idx"] for r in rows] == expect
    assert {r["target_rule"] for r in rows} == {rows[0]["category"]}
    assert all((r["unresolved_reason"] is None) == (r["target_idx"] is not None) for r in rows)


def test_intersectional_reasons():
    assert "both options" in targets.resolve_target("race_x_gender", RACE_X_GENDER[4]["answer_info"], ["Black"]).reason
    r = targets.resolve_target("race_x_ses", RACE_X_SES[3]["answer_info"], ["Latino"])
    assert r.target is None and "not of the form lowSES" in r.reason


def write_jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


@pytest.fixture
def data_dir(tmp_path):
    d = tmp_path / "bbq"
    d.mkdir()
    age = rec("Age", 0, [("grandparent", "old"), UNK, ("teen", "nonOld")], ["old"])
    write_jsonl(d / "Age.jsonl", [age, {**age, "example_id": 1, "context_condition": "disambig", "label": 0}])
    write_jsonl(d / "Race_x_gender.jsonl", RACE_X_GENDER)
    write_jsonl(d / "Race_x_SES.jsonl", RACE_X_SES)
    return d


def test_categories_all_means_every_file_present(data_dir):
    ds = {"source": "jsonl", "path": str(data_dir), "categories": "all", "conditions": ["ambig", "disambig"]}
    assert bbq.resolve_categories(ds) == ["age", "race_x_ses", "race_x_gender"]
    items = bbq.build_items(ds, 2)
    counts = dict(items.group_by("category").len().iter_rows())
    assert counts == {"age": 2, "race_x_gender": 5, "race_x_ses": 4}
    assert items.filter(pl.col("item_id") == "race_x_gender-2")["target_idx"].item() == 2
    assert bbq.resolve_categories({**ds, "categories": ["age"]}) == ["age"]
    assert bbq.resolve_categories({**ds, "source": "hf"}) == list(bbq.CATEGORIES)


def test_categories_all_resolved_at_validation(data_dir):
    cfg = {
        "models": {"m": "org/m"},
        "variants": {"bf16": {"dtype": "bfloat16"}},
        "baseline": "bf16",
        "seeds": [1],
        "shards": 1,
        "dataset": {"source": "jsonl", "path": str(data_dir), "categories": "all"},
    }
    assert validate(cfg)["dataset"]["categories"] == ["age", "race_x_ses", "race_x_gender"]
    write_jsonl(data_dir / "Extra_things.jsonl", RACE_X_SES[:1])
    cfg["dataset"]["categories"] = "all"
    with pytest.raises(ConfigError, match=r"dataset.categories.*Extra_things.jsonl name\(s\) no known category"):
        validate(cfg)


def test_a_record_of_an_unknown_category_names_it(data_dir):
    write_jsonl(data_dir / "Race_x_SES.jsonl", [{**RACE_X_SES[0], "category": "Race_x_age"}])
    with pytest.raises(bbq.BBQRecordError, match=r"Race_x_SES.jsonl:1: unknown category 'Race_x_age'"):
        bbq.build_items({"source": "jsonl", "path": str(data_dir), "categories": ["race_x_ses"]}, 1)
