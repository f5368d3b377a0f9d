"""Checkpoint builds (compbias.compress.checkpoints): the one manifest per checkpoint, its
``pruning`` section and its readers (variants table, verify), and prebuilt checkpoint sources."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from compbias.checks.verify import checkpoint_problem
from compbias.compress import checkpoints
from compbias.compress.checkpoints import MANIFEST, PRUNE_FIELDS, build_checkpoint, read_manifest
from compbias.inference.merge import variants_table

ORDER = ["bf16", "magnitude-50", "magnitude-50-q4"]


@pytest.fixture(scope="module")
def built(tmp_path_factory, tiny_model) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("ckpts")
    out = {v: root / v for v in ORDER}
    build_checkpoint(str(tiny_model), out["bf16"], {"dtype": "bfloat16"}, "tiny", "bf16")
    build_checkpoint(
        str(out["bf16"]),
        out["magnitude-50"],
        {"prune": {"method": "magnitude", "sparsity": 0.5}},
        "tiny",
        "magnitude-50",
    )
    build_checkpoint(
        str(out["magnitude-50"]),
        out["magnitude-50-q4"],
        {"base": "magnitude-50", "quantize": {"bits": 4, "group_size": 64}},
        "tiny",
        "magnitude-50-q4",
    )
    return out


def test_one_manifest_with_a_pruning_section(built):
    pruned = built["magnitude-50"]
    assert sorted(p.name for p in pruned.glob("*manifest*.json")) == [MANIFEST]
    m = json.loads((pruned / MANIFEST).read_text())
    assert (m["kind"], m["variant"], m["source"]) == ("prune", "magnitude-50", str(built["bf16"]))
    p = m["pruning"]
    assert (p["method"], p["target_sparsity"], p["granularity"], p["calibration"]) == ("magnitude", 0.5, "row", None)
    assert abs(p["sparsity"] - 0.5) <= 0.001 and p["zeroed"] == round(p["sparsity"] * p["prunable"])
    assert p["layer_sparsity"] and p["seconds"] > 0
    assert not {"method", "sparsity", "layer_sparsity"} & set(m)  # nothing of it at the top level
    q4 = json.loads((built["magnitude-50-q4"] / MANIFEST).read_text())
    assert q4["pruning"] == {k: p[k] for k in PRUNE_FIELDS} and q4["base_variant"] == "magnitude-50"
    assert "pruning" not in json.loads((built["bf16"] / MANIFEST).read_text())
    assert all(checkpoint_problem(built[v]) is None for v in ORDER)


def test_variants_table_reads_the_pruning_section(built):
    t = variants_table([built[v] for v in ORDER], ORDER, "bf16")
    assert t.columns == [
        "model",
        "variant",
        "kind",
        "bits",
        "group_size",
        "mode",
        "dtype",
        "size_bytes",
        "n_params",
        "is_baseline",
        "order",
        "method",
        "target_sparsity",
        "sparsity",
        "like",
    ]
    rows = {r["variant"]: r for r in t.iter_rows(named=True)}
    assert rows["bf16"]["method"] is None and rows["bf16"]["sparsity"] is None
    for v in ("magnitude-50", "magnitude-50-q4"):
        assert (rows[v]["method"], rows[v]["target_sparsity"]) == ("magnitude", 0.5)
        assert abs(rows[v]["sparsity"] - 0.5) <= 0.001
    assert t.schema["sparsity"] == pl.Float64 and rows["magnitude-50-q4"]["bits"] == 4.0


def test_manifest_from_before_the_pruning_section(tmp_path):
    flat = {
        "model": "tiny",
        "variant": "w",
        "kind": "prune",
        "bits": 16.0,
        "method": "wanda",
        "target_sparsity": 0.5,
        "sparsity": 0.5002,
        "layer_sparsity": {"a": 0.5},
        "zeroed": 5,
        "prunable": 10,
        "granularity": "row",
        "mask_seed": None,
        "calibration": {"seed": 0},
        "seconds": 1.0,
    }
    (tmp_path / MANIFEST).write_text(json.dumps(flat))
    m = read_manifest(tmp_path)
    assert m["pruning"]["method"] == "wanda" and m["pruning"]["sparsity"] == 0.5002 and "method" not in m
    row = variants_table([tmp_path], ["w"], "bf16").row(0, named=True)
    assert (row["method"], row["target_sparsity"], row["sparsity"]) == ("wanda", 0.5, 0.5002)


def test_verify_needs_the_pruning_section_of_a_pruned_checkpoint(built, tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    for f in built["magnitude-50"].iterdir():
        (broken / f.name).symlink_to(f)
    (broken / MANIFEST).unlink()
    m = json.loads((built["magnitude-50"] / MANIFEST).read_text())
    del m["pruning"]
    (broken / MANIFEST).write_text(json.dumps(m))
    assert "no pruning section" in checkpoint_problem(broken)


def test_checkpoint_dir_local_path_or_hub_snapshot(tmp_path, monkeypatch):
    import huggingface_hub
    from mlx_lm.utils import DEFAULT_ALLOW_PATTERNS

    calls = []

    def snapshot_download(repo_id, **kwargs):
        calls.append((repo_id, kwargs))
        return str(tmp_path)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    assert checkpoints.checkpoint_dir(str(tmp_path)) == tmp_path and not calls  # local stays local
    assert checkpoints.checkpoint_dir("mlx-community/some-model-4bit") == tmp_path
    assert calls == [("mlx-community/some-model-4bit", {"allow_patterns": DEFAULT_ALLOW_PATTERNS})]
    (tmp_path / "config.json").write_text("{}")
    checkpoints.link_checkpoint("mlx-community/some-model-4bit", tmp_path / "linked")
    assert (tmp_path / "linked" / "config.json").resolve() == (tmp_path / "config.json").resolve()
