"""Shared fixtures: the repository, the real BBQ copy, a tiny model, and the fast-BLAS check."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
import yaml

from compbias.data import bbq

ROOT = Path(__file__).resolve().parents[1]
SHARED_BBQ = ROOT.parent / "shared" / "bbq" / "data"
#: The command line of a real `snakemake` on this workflow (arguments follow).
SNAKEMAKE = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "workflow" / "Snakefile")]


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    from compbias.testing.tiny import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("models") / "tiny-llama")


@pytest.fixture(scope="session")
def shared_bbq() -> Path:
    if not SHARED_BBQ.is_dir():
        pytest.skip(f"real BBQ data not found at {SHARED_BBQ}")
    return SHARED_BBQ


def study_items(data: Path, n_shards: int = 1) -> pl.DataFrame:
    """The items of the .test study (its categories, conditions and per-category limit) from the
    BBQ copy in ``data``."""
    dataset = yaml.safe_load((ROOT / ".test" / "config.yaml").read_text())["dataset"]
    cats = dataset["categories"]
    return bbq.load_items(
        bbq.jsonl_records(data, cats), cats, dataset["conditions"], n_shards, dataset["limit_per_category"]
    )


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")


def snakemake(workdir: Path, *args: str) -> subprocess.CompletedProcess:
    """Real `snakemake` on the study in ``workdir`` (its config.yaml), offline."""
    return subprocess.run(
        [
            *SNAKEMAKE,
            "--directory",
            str(workdir),
            "--configfile",
            str(workdir / "config.yaml"),
            *args,
        ],
        text=True,
        capture_output=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )


@pytest.fixture(scope="session")
def study(tmp_path_factory, tiny_model, shared_bbq):
    """The .test study run end to end once per session: (working directory, config). Its BBQ
    files are a temporary copy of the four categories (so fault tests can edit them in place);
    tests that change the tree work on a copy (tests/test_faults.py)."""
    work = tmp_path_factory.mktemp("study")
    cfg = yaml.safe_load((ROOT / ".test" / "config.yaml").read_text())
    cfg["models"]["tiny"] = {"path": str(tiny_model)}
    data = tmp_path_factory.mktemp("bbq")
    for cat in cfg["dataset"]["categories"]:
        shutil.copyfile(shared_bbq / f"{bbq.CATEGORIES[cat]}.jsonl", data / f"{bbq.CATEGORIES[cat]}.jsonl")
    cfg["dataset"]["path"] = str(data)
    for spec in cfg["variants"].values():
        cal = spec.get("prune", {}).get("calibration")
        if cal:
            cal["source"] = str(ROOT / cal["source"])
    if "perplexity" in cfg and "path" in cfg["perplexity"]:
        cfg["perplexity"]["path"] = str(ROOT / cfg["perplexity"]["path"])
    (work / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    run = snakemake(work, "--cores", "2", "all")
    assert run.returncode == 0, run.stderr[-5000:]
    return work, cfg


def role_of(choice: int | None, unknown: int, biased: int | None) -> str:
    """Role of one answer by its definition (compbias.inference.answering.role, one value)."""
    if choice is None:
        return "invalid"
    if choice == unknown:
        return "unknown"
    if biased is None:
        return "unresolved"
    return "biased" if choice == biased else "anti"
