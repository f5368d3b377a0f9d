import json

import polars as pl
import pytest

from compbias.data import bbq

CATS = ["age", "gender_identity", "race_ethnicity", "religion", "ses"]


def record(**kw):
    rec = {
        "example_id": 3,
        "question_index": "7",
        "question_polarity": "neg",
        "context_condition": "ambig",
        "category": "SES",
        "answer_info": {"ans0": ["banker", "highSES"], "ans1": ["Unknown", "unknown"], "ans2": ["janitor", "lowSES"]},
        "additional_metadata": {
            "subcategory": "Occupation",
            "stereotyped_groups": ["low SES"],
            "version": "a",
            "source": "x",
        },
        "context": "ctx",
        "question": "q?",
        "ans0": "The banker",
        "ans1": "Unknown",
        "ans2": "The janitor",
        "label": 1,
    }
    rec.update(kw)
    return rec


def test_negative_question_biased_answer_is_the_target():
    row = bbq.parse_record(record(), "mem:1")
    assert (row["target_idx"], row["unknown_idx"]) == (2, 1)
    assert (row["biased_idx"], row["anti_idx"]) == (2, 0)
    assert row["item_id"] == "ses-3"


def test_nonnegative_question_biased_answer_is_the_other_group():
    row = bbq.parse_record(record(question_polarity="nonneg"), "mem:1")
    assert (row["target_idx"], row["biased_idx"], row["anti_idx"]) == (2, 0, 2)


@pytest.mark.parametrize(
    "tag,group,expect",
    [
        ("F-Black", "Black", 0),
        ("woman", "F", 0),
        ("trans_F", "trans", 0),
        ("nonOld", "nonOld", 0),
        ("African", "African American", None),
    ],
)
def test_tag_normalisation(tag, group, expect):
    info = {"ans0": ["x", tag], "ans1": ["y", "zzz"], "ans2": ["?", "unknown"]}
    assert bbq.derive_target(info, [group])[0] == expect


def test_both_options_matching_leaves_target_unresolved():
    info = {"ans0": ["a", "lowSES"], "ans1": ["b", "lowSES"], "ans2": ["?", "unknown"]}
    assert bbq.derive_target(info, ["low SES"]) == (None, 2)
    row = bbq.parse_record(record(answer_info=info), "mem:1")
    assert row["biased_idx"] is None and row["anti_idx"] is None


def test_hf_style_record_with_target_label(tmp_path):
    hf = record(target_label=2, category="SES")
    row = bbq.parse_record(hf, "hf:0")
    assert row["source_target_idx"] == 2
    items = bbq.load_items([("hf:0", hf), ("hf:1", record(example_id=4, target_label=0))], ["ses"], ["ambig"], 2)
    unresolved, disagree = bbq.target_report(items)
    assert disagree["item_id"].to_list() == ["ses-4"]


def test_broken_record_names_file_and_line(tmp_path):
    path = tmp_path / "SES.jsonl"
    good = json.dumps(record())
    path.write_text(good + "\n" + json.dumps({k: v for k, v in record().items() if k != "label"}) + "\n")
    with pytest.raises(bbq.BBQRecordError, match=r"SES.jsonl:2: missing field\(s\) label"):
        bbq.load_items(bbq.jsonl_records(tmp_path, ["ses"]), ["ses"], ["ambig"], 1)
    path.write_text(good + "\n{not json\n")
    with pytest.raises(bbq.BBQRecordError, match=r"SES.jsonl:2: invalid JSON"):
        bbq.load_items(bbq.jsonl_records(tmp_path, ["ses"]), ["ses"], ["ambig"], 1)


def test_shard_is_stable_and_independent_of_order(shared_bbq):
    assert bbq.stable_shard("age-0", 8) == bbq.stable_shard("age-0", 8)
    items = bbq.load_items(bbq.jsonl_records(shared_bbq, ["age", "ses"]), ["age", "ses"], ["ambig", "disambig"], 4)
    rev = bbq.load_items(
        reversed(list(bbq.jsonl_records(shared_bbq, ["age", "ses"]))), ["age", "ses"], ["ambig", "disambig"], 4
    )
    assert dict(zip(items["item_id"], items["shard"])) == dict(zip(rev["item_id"], rev["shard"]))


def test_limit_and_conditions(shared_bbq):
    items = bbq.load_items(bbq.jsonl_records(shared_bbq, ["age"]), ["age"], ["ambig"], 1, limit_per_category=2)
    assert items["item_id"].to_list() == ["age-0", "age-2"]  # Age.jsonl alternates ambig/disambig
    assert set(items["condition"]) == {"ambig"}


@pytest.mark.realdata
def test_real_bbq_counts_and_unresolved_targets(shared_bbq):
    items = bbq.load_items(bbq.jsonl_records(shared_bbq, CATS), CATS, ["ambig"], 8)
    assert items.height == 12148
    counts = dict(items.group_by("category").len().iter_rows())
    assert counts == {"age": 1840, "gender_identity": 2836, "race_ethnicity": 3440, "religion": 600, "ses": 3432}
    assert (items["label"] == items["unknown_idx"]).all()
    # Independently: an item's target is unresolved exactly when zero or two of its group tags
    # match a stereotyped group (compared case- and punctuation-insensitively).
    raw = pl.concat(
        [pl.read_ndjson(shared_bbq / f"{bbq.CATEGORIES[c]}.jsonl") for c in CATS], how="diagonal_relaxed"
    ).filter(pl.col("context_condition") == "ambig")
    ambiguous = set()
    for r in raw.iter_rows(named=True):
        groups = {bbq._norm(g) for g in r["additional_metadata"]["stereotyped_groups"]}
        tags = [r["answer_info"][f"ans{i}"][1] for i in range(3)]
        hits = sum(1 for t in tags if t not in ("unknown", "") and bbq._norm(t) in groups)
        if hits != 1:
            ambiguous.add(f"{r['category'].lower()}-{r['example_id']}")
    unresolved, _ = bbq.target_report(items)
    assert set(unresolved["item_id"]) == ambiguous
    assert 0 < unresolved.height < 100
