"""Faults on the .test study with real `snakemake` (issue 13): bad inputs stop the run before any
job with the results tree byte-identical; a run killed with SIGKILL resumes with the same
command; a corrupted shard is found by `compbias verify` and rebuilt by the command it prints.

Every case works on a copy of the session's built study (conftest.study)."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from base64 import urlsafe_b64encode
from pathlib import Path

import polars as pl
import pytest
import yaml
from conftest import SNAKEMAKE, snakemake

pytestmark = pytest.mark.slow

RUN = ("--cores", "2", "all")  # "the same command", every time
# the kill tests' command: the study up to the merged answers (the tables and figures after it
# are plain reruns of cheap jobs, left out to keep the suite short)
KILL_RUN = ("--cores", "2", "all", "--until", "merge")


@pytest.fixture
def work(study, tmp_path) -> Path:
    """A private copy of the built study (results, logs, Snakemake's metadata; mtimes kept)."""
    src, _ = study
    dst = tmp_path / "study"
    shutil.copytree(src, dst, symlinks=True)
    return dst


def snapshot(work: Path) -> dict[str, str]:
    """SHA-256 of every file under results/."""
    out = {}
    for path in sorted((work / "results").rglob("*")):
        if path.is_file():
            out[str(path.relative_to(work))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def config(work: Path) -> dict:
    return yaml.safe_load((work / "config.yaml").read_text())


def write_config(work: Path, cfg: dict) -> None:
    (work / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))


def answers(work: Path) -> pl.DataFrame:
    return pl.read_parquet(work / "results/answers.parquet").sort("model", "variant", "seed", "item_id")


def output(run: subprocess.CompletedProcess) -> str:
    return run.stdout + run.stderr


def assert_stopped_before_any_job(
    run: subprocess.CompletedProcess, before: dict, work: Path, message: str, regex: bool = False
):
    text = output(run)
    assert run.returncode != 0, text[-3000:]
    assert re.search(message, text) if regex else message in text, text[-3000:]
    assert "Finished job" not in text and "Error in rule" not in text, text[-3000:]
    assert snapshot(work) == before


# ---------------------------------------------------------------- bad inputs


def _edit_line(path: Path, lineno: int, edit) -> bytes:
    original = path.read_bytes()
    lines = original.splitlines(keepends=True)
    lines[lineno - 1] = edit(lines[lineno - 1])
    path.write_bytes(b"".join(lines))
    return original


def _drop_answer_info(line: bytes) -> bytes:
    rec = json.loads(line)
    del rec["answer_info"]
    return json.dumps(rec).encode() + b"\n"


@pytest.mark.parametrize(
    "lineno,edit,message",
    [
        (3, lambda line: line[:60] + b"\n", r"Age.jsonl:3: invalid JSON \(Expecting .+ at column \d+\)"),
        (2, _drop_answer_info, r"Age.jsonl:2: missing field\(s\) answer_info"),
    ],
    ids=["truncated-line", "record-without-answer_info"],
)
def test_broken_bbq_record_stops_before_any_job_and_costs_nothing(work, lineno, edit, message):
    """A broken record (here in the BBQ copy the study reads) is named with file and line before
    the DAG is built; after the fix, nothing reruns."""
    age = Path(config(work)["dataset"]["path"]) / "Age.jsonl"
    before = snapshot(work)
    original = _edit_line(age, lineno, edit)
    try:
        run = snakemake(work, *RUN)
        assert_stopped_before_any_job(run, before, work, message, regex=True)
        assert "invalid BBQ data (config key 'dataset.path')" in output(run)
    finally:
        age.write_bytes(original)
    rerun = snakemake(work, "-n", *RUN)
    assert rerun.returncode == 0 and "Nothing to be done" in output(rerun), output(rerun)[-3000:]


def test_touching_bbq_files_reruns_nothing_but_editing_a_used_record_reruns_items(work):
    data = Path(config(work)["dataset"]["path"])
    os.utime(data / "Age.jsonl")
    run = snakemake(work, "-n", *RUN)
    assert "Nothing to be done" in output(run), output(run)[-3000:]
    original = _edit_line(data / "Age.jsonl", 1, lambda line: line.replace(b'"context": "', b'"context": "Edited. ', 1))
    try:
        run = snakemake(work, "-n", *RUN)
        assert run.returncode == 0, output(run)[-3000:]
        assert "items" in output(run) and "Params have changed" in output(run)
    finally:
        (data / "Age.jsonl").write_bytes(original)


@pytest.mark.parametrize(
    "edit,message",
    [
        (
            lambda c: c["models"].update(tiny="tiny-llamma"),
            "config key 'models.tiny': 'tiny-llamma' is neither an existing local path nor a Hugging Face repo id (org/name)",
        ),
        (
            lambda c: c["models"].update(tiny="someorg/tiny-llama"),
            "config key 'models.tiny': Hugging Face repo 'someorg/tiny-llama' is not in the local cache and HF_HUB_OFFLINE is set",
        ),
        (
            lambda c: c["models"].update(tiny={"path": "/nonexistent/tiny-llama"}),
            "config key 'models.tiny.path': '/nonexistent/tiny-llama' does not exist",
        ),
        (
            lambda c: c["variants"].update(gg={"gguf": "/nonexistent/model.gguf"}),
            "config key 'variants.gg.gguf': GGUF file not found: /nonexistent/model.gguf",
        ),
        (
            lambda c: c["perplexity"].update(path="/nonexistent/corpus"),
            "config key 'perplexity.path': no text files at '/nonexistent/corpus'",
        ),
        (
            lambda c: c["variants"]["wanda-50"]["prune"]["calibration"].update(source="/nonexistent/calibration"),
            "config key 'variants.wanda-50.prune.calibration.source': local path '/nonexistent/calibration' does not exist",
        ),
    ],
    ids=[
        "model-typo",
        "hub-id-not-cached-offline",
        "missing-path",
        "missing-gguf",
        "missing-corpus",
        "missing-calibration",
    ],
)
def test_bad_model_or_corpus_stops_before_any_job(work, tmp_path, edit, message, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty-hf-home"))  # no cached models
    before = snapshot(work)
    cfg = config(work)
    edit(cfg)
    write_config(work, cfg)
    assert_stopped_before_any_job(snakemake(work, *RUN), before, work, message)


def test_a_changed_model_source_builds_beside_the_old_checkpoints(work, tmp_path):
    """An existing but wrong model directory: the checkpoint jobs fail, the completed checkpoints,
    scores and answers stay byte-identical, and restoring the config plans nothing."""
    before = snapshot(work)
    cfg = config(work)
    good = cfg["models"]["tiny"]
    (tmp_path / "not-a-model").mkdir()
    cfg["models"]["tiny"] = {"path": str(tmp_path / "not-a-model")}
    write_config(work, cfg)
    run = snakemake(work, *RUN)
    assert run.returncode != 0 and "Error in rule checkpoint" in output(run)
    after = snapshot(work)
    assert {k: after.get(k) for k in before} == before
    assert all(k.startswith("results/benchmarks/") for k in set(after) - set(before))
    cfg["models"]["tiny"] = good
    write_config(work, cfg)
    rerun = snakemake(work, "-n", *RUN)
    assert "Nothing to be done" in output(rerun), output(rerun)[-3000:]


def test_a_changed_variant_spec_plans_new_checkpoints_only_for_that_variant(work):
    cfg = config(work)
    cfg["variants"]["q3"]["quantize"]["group_size"] = 32
    write_config(work, cfg)
    run = snakemake(work, "-n", *RUN)
    assert run.returncode == 0, output(run)[-3000:]
    jobs = dict(
        line.split()[:2] for line in run.stdout.splitlines() if len(line.split()) == 2 and line.split()[1].isdigit()
    )
    assert jobs["checkpoint"] == "1"
    old = list((work / "results/checkpoints/tiny/q3").iterdir())
    assert len(old) == 1 and f"results/checkpoints/tiny/q3/{old[0].name}" not in run.stdout


def test_nested_config_values_are_coerced_and_runtime_never_reruns(work):
    run = snakemake(work, "-n", *RUN, "--config", "runtime={batch_tokens: 256, max_batch: 3, threads: 2}")
    assert run.returncode == 0, output(run)[-3000:]
    assert "Nothing to be done" in output(run), output(run)[-3000:]
    run = snakemake(work, "-n", *RUN, "--config", "runtime={batch_tokens: 8}")
    assert run.returncode != 0 and "config key 'runtime.batch_tokens': 8 is not valid" in output(run)


# ---------------------------------------------------------------- kill -9 and resume


def marker(work: Path, path: str) -> Path:
    return work / ".snakemake" / "incomplete" / urlsafe_b64encode(path.encode()).decode()


def job_log(work: Path, shard: str) -> Path:
    return work / shard.replace("results/", "logs/", 1).replace(".parquet", ".log")


def job_started(work: Path, shard: str) -> bool:
    """The answers job of ``shard`` runs: Snakemake marked its output incomplete and the job
    process itself has begun (it writes its log, which the test deleted). Snakemake marks the
    output before it spawns the job, so a signal sent on the marker alone can stop Snakemake
    before the job exists."""
    return marker(work, shard).exists() and job_log(work, shard).exists()


def wait_for(condition, timeout=240.0, what=""):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if condition():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def start(work: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [
            *SNAKEMAKE,
            "--directory",
            str(work),
            "--configfile",
            str(work / "config.yaml"),
            *KILL_RUN,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )


def resume_and_compare(work: Path, base: Path) -> str:
    rerun = snakemake(work, *KILL_RUN)
    text = output(rerun)
    assert rerun.returncode == 0, text[-5000:]
    assert "LockException" not in text and "IncompleteFilesException" not in text
    assert answers(work).equals(answers(base))
    check = subprocess.run([sys.executable, "-m", "compbias.cli", "verify", str(work)], text=True, capture_output=True)
    assert check.returncode == 0, check.stdout
    return text


def test_kill_during_a_scores_job_then_the_same_command_resumes(work, study):
    shard = "results/scores/tiny/q8/fixed/shard=0.parquet"
    (work / shard).unlink()
    for answers_shard in (work / "results/answers/tiny/q8").glob("seed=*/shard=0.parquet"):
        answers_shard.unlink()  # so that the scores shard is needed again
    proc = start(work)
    wait_for(lambda: marker(work, shard).exists(), what="the scores job")
    time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGKILL)  # snakemake and its job
    proc.wait()
    assert not (work / shard).exists()
    text = resume_and_compare(work, study[0])
    assert "removed the stale lock" in text


def test_kill_of_only_snakemake_during_an_answers_job_keeps_the_finished_shard(work, study):
    shard = "results/answers/tiny/q4/seed=42/shard=1.parquet"
    (work / shard).unlink()
    job_log(work, shard).unlink()
    proc = start(work)
    wait_for(lambda: job_started(work, shard), what="the answers job")
    os.kill(proc.pid, signal.SIGKILL)  # the main process only: the job finishes on its own
    proc.wait()
    wait_for(lambda: (work / shard).exists(), what="the orphaned job's output")
    wait_for(lambda: not list((work / shard).parent.glob(".shard=1.parquet.tmp*")), what="the rename")
    time.sleep(1)
    text = resume_and_compare(work, study[0])
    assert "verified complete and kept: " in text and shard in text
    assert f"output: {shard}" not in text  # kept, not rebuilt


def test_kill_right_after_a_rename_and_a_live_lock_is_respected(work, study):
    shard = "results/answers/tiny/bf16/seed=123/shard=0.parquet"
    (work / shard).unlink()
    job_log(work, shard).unlink()
    proc = start(work)
    wait_for(lambda: job_started(work, shard), what="the answers job")
    os.kill(proc.pid, signal.SIGSTOP)  # snakemake frozen: the job renames its output
    try:
        wait_for(lambda: (work / shard).exists(), what="the job's rename")
        second = snakemake(work, *KILL_RUN)  # the frozen run is alive: its lock holds
        text = output(second)
        assert second.returncode != 0, text[-3000:]
        assert f"compbias: this directory is locked by another snakemake run: 0.input.lock (pid {proc.pid} on" in text
        assert (work / shard).exists() and marker(work, shard).exists()  # left alone
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert marker(work, shard).exists()
    text = resume_and_compare(work, study[0])
    assert "removed the stale lock" in text and "verified complete and kept" in text


# ---------------------------------------------------------------- corruption


def corrupt(path: Path, keep_mtime: bool) -> None:
    st = path.stat()
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    if keep_mtime:
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def test_corrupted_shard_with_old_mtime_is_found_by_verify_and_rebuilt_by_its_command(work, study):
    shard = "results/answers/tiny/q8/seed=42/shard=0.parquet"
    corrupt(work / shard, keep_mtime=True)
    dry = snakemake(work, "-n", *RUN)  # older than its dependants: Snakemake sees nothing to do
    assert "Nothing to be done" in output(dry)
    assert f"compbias: corrupt shard: {shard}: unreadable Parquet footer" in output(dry)
    run = subprocess.run(
        [sys.executable, "-m", "compbias.cli", "verify", str(work), "--configfile", str(work / "config.yaml")],
        text=True,
        capture_output=True,
    )
    assert run.returncode == 1
    assert f"  {shard}: unreadable Parquet footer" in run.stdout, run.stdout
    command = run.stdout.strip().splitlines()[-1].strip()
    args = shlex.split(command)
    assert args[0] == "snakemake" and args[-2:] == ["--forcerun", shard]
    rebuild = subprocess.run(
        [sys.executable, "-m", *args], text=True, capture_output=True, env={**os.environ, "HF_HUB_OFFLINE": "1"}
    )
    assert rebuild.returncode == 0, output(rebuild)[-5000:]
    assert answers(work).equals(answers(study[0]))
    again = subprocess.run([sys.executable, "-m", "compbias.cli", "verify", str(work)], text=True, capture_output=True)
    assert again.returncode == 0 and "all complete" in again.stdout, again.stdout


def test_verify_target_reports_a_short_shard(work):
    shard = work / "results/scores/tiny/q4/fixed/shard=1.parquet"
    st = shard.stat()
    pl.read_parquet(shard).head(1).write_parquet(shard)
    os.utime(shard, ns=(st.st_atime_ns, st.st_mtime_ns))
    run = snakemake(work, "--cores", "1", "verify")
    assert run.returncode != 0
    assert "results/scores/tiny/q4/fixed/shard=1.parquet: 1 rows (1 items), expected the" in output(run)
    assert "--forcerun results/scores/tiny/q4/fixed/shard=1.parquet" in output(run)


def test_a_failing_merge_keeps_the_previous_merged_table(work):
    shard = "results/answers/tiny/q3/seed=456/shard=1.parquet"
    previous = (work / "results/answers.parquet").read_bytes()
    corrupt(work / shard, keep_mtime=False)  # newer than answers.parquet: the merge reruns
    run = snakemake(work, *RUN)
    assert run.returncode != 0
    assert f"{shard}: unreadable Parquet file" in output(run), output(run)[-3000:]
    assert (work / "results/answers.parquet").read_bytes() == previous
