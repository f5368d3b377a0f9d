#!/usr/bin/env python3
"""Cluster status command of profiles/slurm: `status.py JOBID` prints success, running or failed.

Called by snakemake-executor-plugin-cluster-generic for every submitted job at each status check.
It works without SLURM accounting (no slurmdbd; Debian's SLURM 22.05 sacct then rejects the
options of snakemake-executor-plugin-slurm): it asks, in order,

1. ``squeue`` (queued, running and recently finished jobs),
2. ``scontrol show job`` (slurmctld keeps a finished job for MinJobAge seconds, default 300),
3. ``sacct`` (accounting, where the cluster has it), then ``sacct --completion`` (a jobcomp log).

A job that none of them knows any more is reported failed (Snakemake then retries it, see
``retries`` in the profile); a SLURM that does not answer at all (a controller restart, a
timeout) is reported as running, so that a blip never fails a job; Snakemake asks again at the
next status check. Standard library only: it runs with whatever python3 the submit host has.
"""

from __future__ import annotations

import subprocess
import sys

RUNNING = {
    "PENDING",
    "CONFIGURING",
    "RUNNING",
    "COMPLETING",
    "SUSPENDED",
    "REQUEUED",
    "REQUEUE_FED",
    "REQUEUE_HOLD",
    "RESIZING",
    "SIGNALING",
    "STAGE_OUT",
    "STOPPED",
    "RESV_DEL_HOLD",
    "POWER_UP_NODE",
}
SUCCESS = {"COMPLETED"}
FAILED = {
    "FAILED",
    "CANCELLED",
    "TIMEOUT",
    "NODE_FAIL",
    "OUT_OF_MEMORY",
    "PREEMPTED",
    "BOOT_FAIL",
    "DEADLINE",
    "SPECIAL_EXIT",
    "REVOKED",
}


class NoAnswer(Exception):
    """SLURM did not answer (the command failed for a reason other than an unknown job)."""


def _run(cmd: list[str]) -> str:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise NoAnswer(f"{cmd[0]}: {exc}") from exc
    if out.returncode != 0:
        if "Invalid job id" in out.stderr:
            return ""
        raise NoAnswer(f"{' '.join(cmd)}: {out.stderr.strip()}")
    return out.stdout


def _state(raw: str) -> str:
    # "CANCELLED by 0" -> CANCELLED; "COMPLETED+" -> COMPLETED
    return raw.strip().split()[0].rstrip("+").upper() if raw.strip() else ""


def squeue(jobid: str) -> str:
    lines = _run(["squeue", "-h", "--states=all", "-j", jobid, "-o", "%T"]).splitlines()
    return _state(lines[0]) if lines else ""


def scontrol(jobid: str) -> str:
    for line in _run(["scontrol", "show", "job", "-o", jobid]).splitlines():
        for field in line.split():
            if field.startswith("JobState="):
                return _state(field.split("=", 1)[1])
    return ""


def sacct(jobid: str, *extra: str) -> str:
    # the allocation's own line (-X) or, with --completion, the line of that job id
    for line in _run(["sacct", *extra, "-n", "-P", "-X", "-j", jobid, "-o", "JobID,State"]).splitlines():
        parts = line.split("|")
        if len(parts) >= 2 and parts[0].split(".")[0] == jobid:
            return _state(parts[1])
    return ""


def status(jobid: str) -> str:
    jobid = jobid.strip().split(".")[0]  # a step id "123.batch" -> its job
    notes, controller_answered = [], False
    for name, ask in (
        ("squeue", squeue),
        ("scontrol", scontrol),
        ("sacct", sacct),
        ("sacct --completion", lambda j: sacct(j, "--completion")),
    ):
        if name.startswith("sacct") and not controller_answered:
            break  # SLURM is unreachable: do not wait for sacct's timeouts too
        try:
            state = ask(jobid)
        except NoAnswer as exc:
            notes.append(str(exc))
            continue
        controller_answered |= name in ("squeue", "scontrol")
        if state in RUNNING:
            return "running"
        if state in SUCCESS:
            return "success"
        if state in FAILED:
            return "failed"
        notes.append(f"{name}: {'state ' + repr(state) if state else 'no record'}")
    if not controller_answered:
        # neither squeue nor scontrol answered: SLURM is unreachable; ask again next time
        print(f"status.py: job {jobid}: no answer from SLURM ({'; '.join(notes[:2])})", file=sys.stderr)
        return "running"
    print(f"status.py: job {jobid}: unknown to SLURM ({'; '.join(notes)}); reporting failed", file=sys.stderr)
    return "failed"


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: status.py JOBID")
    print(status(sys.argv[1]))
