"""End to end: real `snakemake` on the .test study (tiny random llama, 20 real BBQ items)."""

import subprocess

import polars as pl
import pytest
from conftest import snakemake

from compbias.data.bbq import ITEM_SCHEMA
from compbias.inference.answering import ANSWER_SCHEMA
from compbias.inference.merge import merge_answers

pytestmark = pytest.mark.slow


def planned(run: subprocess.CompletedProcess) -> dict[str, int]:
    """Job counts from the 'Job stats' table of a dry run."""
    out = {}
    for line in run.stdout.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].isdigit() and parts[0] != "total":
            out[parts[0]] = int(parts[1])
    return out


def test_items_and_answers_tables(study):
    work, cfg = study
    items = pl.read_parquet(work / "results/items.parquet")
    assert items.schema == pl.Schema(ITEM_SCHEMA)
    assert items.height == 20
    answers = pl.read_parquet(work / "results/answers.parquet")
    for col, dtype in ANSWER_SCHEMA.items():
        assert answers.schema[col] == dtype, col
    n_variants, n_seeds = len(cfg["variants"]), len(cfg["seeds"])
    expected = 20 * (n_variants * n_seeds + len(cfg["placebo_seeds"]))
    assert answers.height == expected
    assert answers.filter(pl.col("placebo"))["variant"].unique().to_list() == [cfg["baseline"]]
    assert set(answers["role"]) <= {"biased", "anti", "unknown", "invalid", "unresolved"}
    unresolved = set(items.filter(pl.col("target_idx").is_null())["item_id"])
    assert set(answers.filter(pl.col("role") == "biased")["item_id"]).isdisjoint(unresolved)
    assert answers["compute_dtype"].unique().to_list() == ["float32"]
    rates = pl.read_parquet(work / "results/rates.parquet")
    pooled = rates.filter(pl.col("pooled") & (pl.col("category") == "all"))
    assert pooled.height == n_variants


def test_deleting_a_shard_reruns_only_that_shard(study):
    work, cfg = study
    shard = work / "results/answers/tiny/q4/seed=123/shard=1.parquet"
    saved = shard.read_bytes()
    shard.unlink()
    try:
        jobs = planned(snakemake(work, "-n", "all"))
        assert jobs["answers"] == 1
        assert "scores" not in jobs and "checkpoint" not in jobs and "items" not in jobs
        assert jobs["merge"] == 1
    finally:
        shard.write_bytes(saved)


def test_corrupt_or_short_shard_is_named(tmp_path, study):
    work, _ = study
    items = pl.read_parquet(work / "results/items.parquet")
    good = work / "results/answers/tiny/bf16/seed=42/shard=0.parquet"
    bad = tmp_path / "answers/tiny/bf16/seed=42/shard=0.parquet"
    bad.parent.mkdir(parents=True)
    bad.write_bytes(good.read_bytes()[:100])
    with pytest.raises(ValueError, match=r"shard=0.parquet: unreadable Parquet"):
        merge_answers([bad], items, [], "bf16")
    pl.read_parquet(good).head(1).write_parquet(bad)
    with pytest.raises(ValueError, match=r"shard=0.parquet: 1 answers, expected"):
        merge_answers([bad], items, [], "bf16")


def test_figures_summary_and_report(study):
    work, cfg = study
    for name in ("dose_response", "transitions", "perplexity_vs_bias", "category_heatmap", "pruning"):
        for ext, magic in (("png", b"\x89PNG"), ("pdf", b"%PDF")):
            path = work / "results" / "figures" / f"{name}.{ext}"
            assert path.stat().st_size > 5000 and path.read_bytes().startswith(magic), path
    summary = (work / "results" / "summary.md").read_text()
    assert summary.startswith("# Summary") and "## Regression" in summary and "## Pruning" in summary
    heads = [line for line in summary.splitlines() if line.startswith("- at ")]
    assert len(heads) == len(cfg["variants"]) - 1 and all("items became biased; " in h for h in heads)
    expected = [line for line in summary.splitlines() if line.startswith("  - expected ")]
    assert len(expected) == len(heads) and all("virtual seed sets" in e for e in expected)
    assert "excess" not in summary
    # the .test study has disambiguated items: their section, and their table in the report
    assert "## Disambiguated contexts" in summary and "s_DIS" in summary
    tables = sorted(p.name for p in (work / "results" / "report_tables").iterdir())
    assert tables == sorted(
        f"{t}.csv"
        for t in (
            "rates",
            "transitions",
            "expected_emergence",
            "direction_tests",
            "excess_emergence",
            "bias_scores",
            "disambiguated",
            "regression_coefficients",
            "perplexity",
            "sparsity_coefficients",
        )
    )
    report = work / "report.html"
    run = snakemake(work, "--report", str(report))
    assert run.returncode == 0, run.stderr[-5000:]
    html = report.read_text()
    assert len(html) > 200_000  # the figures are embedded
    for text in (
        "compbias: does compressing",
        "Emergence of biased answers: the study seeds",
        "Answer-role rates",
        "dose_response.png",
        "pruning.png",
        "summary.md",
        "excess_emergence.csv",
    ):
        assert text in html, text
