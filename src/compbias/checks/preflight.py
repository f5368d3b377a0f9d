"""What the workflow does before Snakemake builds its DAG and before the first job: check the
inputs, clear stale locks, settle outputs that a killed run left marked incomplete.

Called from ``workflow/rules/common.smk`` (:func:`before_dag`) and its ``onstart`` handler
(:func:`on_start`); messages go to stderr, prefixed ``compbias:``.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from compbias import resume
from compbias.checks.inputs import DataCheck, InputError, check_inputs, model_problems
from compbias.checks.verify import Expected, verify_output

STATE = Path(".snakemake")


def say(message: str) -> None:
    print(f"compbias: {message}", file=sys.stderr, flush=True)


def _expected(workdir: Path) -> Expected | None:
    import polars as pl

    items = workdir / "results" / "items.parquet"
    if items.exists() and verify_output(items) is None:
        return Expected.from_items(pl.read_parquet(items, columns=["item_id", "shard"]))
    return None


def settle(workdir: str | Path = ".") -> None:
    """Clear stale locks; when no live run holds a lock, keep verified-complete outputs marked
    incomplete and delete the others (:mod:`compbias.resume`)."""
    workdir = Path(workdir)
    state = workdir / STATE
    removed, held = resume.clear_stale_locks(state)
    for lock in removed:
        say(f"removed the stale lock {lock} of a killed run (its process is gone)")
    if held:  # a live run (or one on another host, or an unknown owner): respected
        say(
            "this directory is locked by another snakemake run: " + ", ".join(held) + ". A real "
            "run here is refused (LockException, or IncompleteFilesException naming the outputs the "
            "other run is writing); do not --unlock or --rerun-incomplete while it runs"
        )
        return
    markers = resume.incomplete_markers(state)
    if not markers:
        return
    items = next((name for name in markers if Path(name).name == "items.parquet"), None)
    if items:  # verify it first: the shards' expected rows come from it
        resume.settle_incomplete(verify_output, state, workdir, only=[items])
    expected = _expected(workdir)
    kept, deleted = resume.settle_incomplete(lambda path: verify_output(path, expected), state, workdir)
    if kept:
        say(
            f"{len(kept)} output(s) of an interrupted run verified complete and kept: "
            + ", ".join(kept[:5])
            + (" ..." if len(kept) > 5 else "")
        )
    for name in deleted:
        say(f"incomplete output of an interrupted run deleted, to be rebuilt: {name}")


def unreadable_shards(workdir: str | Path = ".") -> list[tuple[str, str]]:
    """(path, problem) of answer and score shards whose Parquet footer or schema is broken: a
    cheap check (footers only) of files Snakemake considers up to date by their mtimes."""
    from compbias.checks.verify import shard_problem

    workdir = Path(workdir)
    bad = []
    for kind in ("scores", "answers"):
        root = workdir / "results" / kind
        for path in sorted(root.rglob("shard=*.parquet")) if root.is_dir() else []:
            problem = shard_problem(path, kind, None, full=False)
            if problem:
                bad.append((str(path.relative_to(workdir)), problem))
    return bad


def before_dag(config: Mapping[str, Any], main: bool = True, workdir: str | Path = ".") -> DataCheck:
    """Check every input of ``config`` (raising InputError before any job), settle the state
    a killed run left and warn about shards with a broken footer; a job subprocess (``main``
    False) does none of it."""
    if not main:
        return DataCheck(0, 0, "", 0.0)
    data = check_inputs(config)
    settle(workdir)
    bad = unreadable_shards(workdir)
    for path, problem in bad:
        say(f"corrupt shard: {path}: {problem}")
    if bad:
        say(
            "rebuild with the study's command plus: --forcerun "
            + " ".join(p for p, _ in bad)
            + " (compbias verify checks every file in full)"
        )
    return data


def on_start(config: Mapping[str, Any], workdir: str | Path = ".") -> None:
    """Record this process as the owner of the lock it holds, then check the hub models (their
    local cache when offline, else the hub): raise InputError before the first job."""
    resume.record_lock_owner(Path(workdir) / STATE)
    problems = model_problems(config, check_hub=True)
    if problems:
        raise InputError("invalid inputs:\n  " + "\n  ".join(problems))
