"""Input checks, config coercion, YAML errors, checkpoint keys, stale locks and incomplete
markers (the fast parts of issue 13; tests/test_faults.py runs them through real snakemake)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from base64 import urlsafe_b64encode

import polars as pl
import pytest
import yaml
from conftest import ROOT

from compbias import resume
from compbias.checks.inputs import InputError, check_bbq, model_problems
from compbias.checks.verify import verify_output
from compbias.config import ConfigError, coerce, load_schema, load_yaml
from compbias.keys import checkpoint_key


def test_nested_config_strings_are_coerced_by_the_schema():
    schema = load_schema()
    cfg = {
        "runtime": {"batch_tokens": "256", "max_batch": "auto", "dequantize": "true"},
        "dataset": {"limit_per_category": "null", "path": "123"},
        "delete_checkpoints": "false",
        "models": {"m": "123"},
        "seeds": ["1", "2"],
        "variants": {"q": {"quantize": {"bits": "4"}}},
    }
    assert coerce(schema, cfg) == {
        "runtime": {"batch_tokens": 256, "max_batch": "auto", "dequantize": True},
        "dataset": {"limit_per_category": None, "path": "123"},
        "delete_checkpoints": False,
        "models": {"m": "123"},
        "seeds": [1, 2],
        "variants": {"q": {"quantize": {"bits": 4}}},
    }


def test_yaml_error_names_file_and_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("models:\n  tiny: {path: x\nvariants: [\n")
    with pytest.raises(ConfigError, match=r"bad.yaml:3:9: invalid YAML: expected ',' or '}', but got ':'"):
        load_yaml(bad)


def _dataset(path, **kw):
    return {
        "source": "jsonl",
        "path": str(path),
        "categories": ["age"],
        "conditions": ["ambig"],
        "limit_per_category": None,
        **kw,
    }


def _records(n=4):
    rec = {
        "example_id": 0,
        "question_index": "1",
        "question_polarity": "neg",
        "context_condition": "ambig",
        "category": "Age",
        "answer_info": {"ans0": ["old", "old"], "ans1": ["young", "nonOld"], "ans2": ["unknown", "unknown"]},
        "additional_metadata": {"subcategory": "None", "stereotyped_groups": ["old"]},
        "context": "c",
        "question": "q",
        "ans0": "a",
        "ans1": "b",
        "ans2": "c",
        "label": 2,
    }
    return [json.dumps({**rec, "example_id": i}) for i in range(n)]


def test_check_bbq_lists_every_bad_record_with_file_and_line(tmp_path):
    lines = _records()
    lines[1] = lines[1][:50]
    lines[3] = lines[3].replace('"context": "c"', '"context": "c\tx"')  # a raw control character
    broken = json.loads(lines[2])
    del broken["answer_info"]
    lines[2] = json.dumps(broken)
    (tmp_path / "Age.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(InputError) as err:
        check_bbq(_dataset(tmp_path))
    msg = str(err.value)
    assert re.search(rf"{tmp_path}/Age.jsonl:2: invalid JSON \(Unterminated string starting at column \d+\)", msg), msg
    assert f"{tmp_path}/Age.jsonl:3: missing field(s) answer_info" in msg
    assert re.search(rf"{tmp_path}/Age.jsonl:4: invalid JSON \(Invalid control character at column \d+\)", msg), msg


def test_bbq_digest_follows_the_selected_records_only(tmp_path):
    lines = _records()
    (tmp_path / "Age.jsonl").write_text("\n".join(lines) + "\n")
    first = check_bbq(_dataset(tmp_path, limit_per_category=2))
    lines[3] = lines[3].replace('"context": "c"', '"context": "edited"')
    (tmp_path / "Age.jsonl").write_text("\n".join(lines) + "\n")
    assert check_bbq(_dataset(tmp_path, limit_per_category=2)).digest == first.digest
    lines[0] = lines[0].replace('"context": "c"', '"context": "edited"')
    (tmp_path / "Age.jsonl").write_text("\n".join(lines) + "\n")
    assert check_bbq(_dataset(tmp_path, limit_per_category=2)).digest != first.digest


def test_check_bbq_of_all_nine_real_files_is_fast(shared_bbq):
    start = time.perf_counter()
    data = check_bbq(
        {
            "source": "jsonl",
            "path": str(shared_bbq),
            "categories": "all",  # the nine files of the shared copy
            "conditions": ["ambig", "disambig"],
        },
        8,
    )
    seconds = time.perf_counter() - start
    print(f"check_bbq: {data.records} records of 9 files in {seconds:.2f} s")
    assert data.records == data.selected > 30_000
    assert seconds < 10


def test_hub_ids_must_look_like_org_name_and_be_cached_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path))
    cfg = {"models": {"a": "tiny-llamma", "b": {"hf": "org/name"}}, "variants": {"bf16": {}}}
    assert model_problems(cfg) == [  # a dry run plans offline: the id's form only
        "config key 'models.a': 'tiny-llamma' is neither an existing local path nor a Hugging Face repo id (org/name)"
    ]
    problems = model_problems(cfg, check_hub=True)
    assert problems == [
        "config key 'models.a': 'tiny-llamma' is neither an existing local path nor a Hugging Face repo id (org/name)",
        "config key 'models.b.hf': Hugging Face repo 'org/name' is not in the local cache and HF_HUB_OFFLINE is set (nor is it an existing local path)",
    ]
    snap = tmp_path / "models--org--name" / "snapshots" / "abc"
    snap.mkdir(parents=True)
    (snap / "config.json").write_text("{}")
    (tmp_path / "models--org--name" / "refs").mkdir()
    (tmp_path / "models--org--name" / "refs" / "main").write_text("abc")
    assert model_problems(cfg, check_hub=True) == problems[:1]


def test_checkpoint_keys_follow_source_and_spec():
    cfg = yaml.safe_load((ROOT / ".test" / "config.yaml").read_text())
    keys = {v: checkpoint_key(cfg, "tiny", v) for v in cfg["variants"]}
    assert len(set(keys.values())) == len(keys)
    changed = yaml.safe_load(yaml.safe_dump(cfg))
    changed["variants"]["bf16"]["dtype"] = "float16"
    after = {v: checkpoint_key(changed, "tiny", v) for v in cfg["variants"]}
    # everything built from the baseline changes; nothing else does
    assert after["bf16"] != keys["bf16"] and after["q4"] == keys["q4"]
    assert after["wanda-50"] != keys["wanda-50"] and after["wanda-50-q4"] != keys["wanda-50-q4"]
    changed["models"]["tiny"] = {"path": "elsewhere"}
    assert checkpoint_key(changed, "tiny", "q4") != keys["q4"]


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_stale_locks_are_cleared_and_live_ones_kept(tmp_path):
    locks = tmp_path / "locks"
    locks.mkdir()
    for name in ("0.input.lock", "0.output.lock"):
        (locks / name).write_text("results/x\n")
    resume.record_lock_owner(tmp_path, pid=os.getpid())
    removed, held = resume.clear_stale_locks(tmp_path)
    assert removed == [] and [h.split()[0] for h in held] == ["0.input.lock", "0.output.lock"]
    assert f"(pid {os.getpid()} on " in held[0]
    resume.record_lock_owner(tmp_path, pid=_dead_pid())  # ours is live: not re-owned
    assert resume.clear_stale_locks(tmp_path)[0] == []
    owners = json.loads((tmp_path / resume.OWNERS).read_text())
    dead = _dead_pid()
    for lock in owners.values():
        lock["pid"] = dead
    (tmp_path / resume.OWNERS).write_text(json.dumps(owners))
    removed, held = resume.clear_stale_locks(tmp_path)
    assert removed == [f"0.input.lock (pid {dead})", f"0.output.lock (pid {dead})"] and held == []
    (locks / "1.input.lock").write_text("results/y\n")  # no recorded owner: respected
    assert resume.clear_stale_locks(tmp_path) == ([], ["1.input.lock (no recorded owner)"])


def test_incomplete_outputs_are_kept_when_verified_and_deleted_otherwise(tmp_path):
    state, work = tmp_path / ".snakemake", tmp_path
    good, bad = "results/a/shard=0.parquet", "results/b.parquet"
    for name in (good, bad):
        (work / name).parent.mkdir(parents=True, exist_ok=True)
        pl.DataFrame({"x": [1, 2]}).write_parquet(work / name)
        marker = state / "incomplete" / urlsafe_b64encode(name.encode()).decode()
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text("{}")
    (work / bad).write_bytes((work / bad).read_bytes()[:20])
    (work / "results/.b.parquet.tmp999999999").write_bytes(b"partial")
    kept, deleted = resume.settle_incomplete(verify_output, state, work)
    assert kept == [good] and deleted[0].startswith(f"{bad} (unreadable Parquet footer")
    assert (work / good).exists() and not (work / bad).exists()
    assert not (work / "results/.b.parquet.tmp999999999").exists()
    assert resume.incomplete_markers(state) == {}


def test_check_config_cli_names_the_yaml_line_and_validates(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("models:\n  tiny: {path: x\nvariants: [\n")
    run = subprocess.run(
        [sys.executable, "-m", "compbias.cli", "check-config", str(bad)], text=True, capture_output=True
    )
    assert run.returncode == 1 and f"{bad}:3:9: invalid YAML: expected ',' or '}}'" in run.stderr
    cfg = yaml.safe_load((ROOT / ".test" / "config.yaml").read_text())
    cfg["models"]["tiny"] = {"path": str(tmp_path)}
    cfg["dataset"]["path"] = str(tmp_path)
    good, override = tmp_path / "good.yaml", tmp_path / "override.yaml"
    good.write_text(yaml.safe_dump(cfg))
    override.write_text("decoding: {temperature: -1}\n")
    run = subprocess.run(
        [sys.executable, "-m", "compbias.cli", "check-config", str(good)], text=True, capture_output=True
    )
    assert run.returncode == 0 and "valid" in run.stdout, run.stderr
    run = subprocess.run(
        [sys.executable, "-m", "compbias.cli", "check-config", str(good), str(override)], text=True, capture_output=True
    )
    assert run.returncode == 1 and "config key 'decoding.temperature': -1 is less than the minimum of 0" in run.stderr
