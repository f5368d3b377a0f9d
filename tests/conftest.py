"""Shared fixtures: the repository, the real BBQ copy, a tiny model, and the fast-BLAS check."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest
import yaml

from compbias import bbq

ROOT = Path(__file__).resolve().parents[1]
SHARED_BBQ = ROOT.parent / "shared" / "bbq" / "data"


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    from compbias.tiny import build_tiny_model

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
    return bbq.load_items(bbq.jsonl_records(data, cats), cats, dataset["conditions"], n_shards,
                          dataset["limit_per_category"])


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
