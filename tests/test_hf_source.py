"""``dataset.source: hf`` offline: the shared JSONL laid out as a local Hugging Face dataset
directory, loaded through ``datasets.load_dataset`` by the same code as the paper config's
``heegyu/bbq`` (one config per category, split ``test``), gives the JSONL path's items table."""

import shutil

import polars as pl
import pytest

from compbias.data import bbq

CATS = ["age", "nationality", "religion"]
CONDITIONS = ["ambig", "disambig"]


def readme(configs: dict[str, str]) -> str:
    """A dataset card whose YAML header declares one config per category (split test)."""
    lines = ["---", "configs:"]
    for name, path in configs.items():
        lines += [f"- config_name: {name}", "  data_files:", "  - split: test", f"    path: {path}"]
    return "\n".join([*lines, "---", ""])


@pytest.fixture
def hf_cache(tmp_path, monkeypatch):
    import datasets

    cache = tmp_path / "hf-cache"
    monkeypatch.setenv("HF_DATASETS_CACHE", str(cache))
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", cache)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    return cache


@pytest.fixture(scope="module")
def jsonl_items(shared_bbq):
    return bbq.build_items(
        {"source": "jsonl", "path": str(shared_bbq), "categories": CATS, "conditions": CONDITIONS}, 4
    )


@pytest.mark.realdata
def test_hub_layout_gives_the_jsonl_items_table(tmp_path, shared_bbq, hf_cache, jsonl_items):
    # heegyu/bbq: data/{Category}.jsonl, one config per category named like the file, split test
    repo = tmp_path / "heegyu-bbq"
    (repo / "data").mkdir(parents=True)
    for cat in CATS:
        shutil.copyfile(shared_bbq / f"{bbq.CATEGORIES[cat]}.jsonl", repo / "data" / f"{bbq.CATEGORIES[cat]}.jsonl")
    (repo / "README.md").write_text(readme({bbq.CATEGORIES[c]: f"data/{bbq.CATEGORIES[c]}.jsonl" for c in CATS}))
    ds = {"source": "hf", "name": str(repo), "split": "test", "categories": CATS, "conditions": CONDITIONS}
    items = bbq.build_items(ds, 4)
    assert items.equals(jsonl_items)
    assert items.filter(pl.col("category") == "nationality")["target_idx"].null_count() == 0


@pytest.mark.realdata
def test_a_source_target_label_is_compared_with_the_derived_target(tmp_path, shared_bbq, hf_cache, jsonl_items):
    # a Parquet copy per config ({Category}/test/0000.parquet, the hub's Parquet layout) that carries
    # its own target label (as the reference scripts' source does), under another column name
    # mapped by dataset.columns; two of its labels are wrong on purpose
    repo = tmp_path / "bbq-parquet"
    wrong = {"age-0", "religion-5"}
    for cat in CATS:
        name = bbq.CATEGORIES[cat]
        derived = jsonl_items.filter(pl.col("category") == cat).select("example_id", "target_idx")
        raw = pl.read_ndjson(shared_bbq / f"{name}.jsonl").join(derived, on="example_id", how="left")
        raw = raw.with_columns(
            target_loc=pl.when((pl.lit(cat + "-") + pl.col("example_id").cast(pl.String)).is_in(list(wrong)))
            .then((pl.col("target_idx").fill_null(0) + 1) % 3)
            .otherwise(pl.col("target_idx").fill_null(-1))
        ).drop("target_idx")
        (repo / name / "test").mkdir(parents=True)
        raw.write_parquet(repo / name / "test" / "0000.parquet")
    (repo / "README.md").write_text(readme({bbq.CATEGORIES[c]: f"{bbq.CATEGORIES[c]}/test/*.parquet" for c in CATS}))
    ds = {
        "source": "hf",
        "name": str(repo),
        "categories": CATS,
        "conditions": CONDITIONS,
        "columns": {"target_label": "target_loc"},
    }
    items = bbq.build_items(ds, 4)
    assert items.drop("source_target_idx").equals(jsonl_items.drop("source_target_idx"))
    assert items["source_target_idx"].null_count() == 0
    _, disagree = bbq.target_report(items)
    assert set(disagree["item_id"]) == wrong
    counts = bbq.target_counts(items).filter(pl.col("category") == "all")
    assert counts["n_source_label"].sum() == items.height
    assert counts["n_agree"].sum() == items.height - len(wrong)
    assert 0.999 < counts["agree_rate"].min() < 1
