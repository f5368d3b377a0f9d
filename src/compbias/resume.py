"""Resuming a killed run with the same command: stale Snakemake locks and verified "incomplete"
outputs.

Snakemake writes ``.snakemake/locks/N.{input,output}.lock`` (lists of files, no owner) and, per
output of a running job, a marker in ``.snakemake/incomplete/`` (the base64 of the path). A run
killed with SIGKILL leaves both: the next run stops with ``LockException`` (asking for
``--unlock``) or ``IncompleteFilesException`` (asking for ``--rerun-incomplete``, which rebuilds
even complete files). The workflow records which process holds each lock
(:func:`record_lock_owner`, called from ``onstart``), and before the DAG is built
:func:`clear_stale_locks` removes locks whose owner on this host is gone, and
:func:`settle_incomplete` keeps marked outputs that :func:`compbias.checks.verify.verify_output` finds
complete (clearing the marker) and deletes the others so that they are rebuilt.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
from base64 import urlsafe_b64decode
from collections.abc import Callable, Iterable
from pathlib import Path

OWNERS = "compbias/lock_owners.json"


def _start_time(pid: int) -> str | None:
    """The kernel's start time of process ``pid`` (Linux), to tell a reused pid apart."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def _alive(pid: int, start: str | None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    now = _start_time(pid)
    return start is None or now is None or now == start


def _lock_files(state: Path) -> list[Path]:
    locks = state / "locks"
    return sorted(p for p in locks.glob("*.lock") if p.is_file()) if locks.is_dir() else []


def _read_owners(state: Path) -> dict[str, dict]:
    try:
        return json.loads((state / OWNERS).read_text())
    except (OSError, ValueError):
        return {}


def record_lock_owner(state: str | Path = ".snakemake", pid: int | None = None) -> list[str]:
    """Record ``pid`` (this process) as the owner of the lock files that no live process owns:
    the ones this run has just written. Returns their names."""
    state = Path(state)
    pid = os.getpid() if pid is None else pid
    owners = _read_owners(state)
    host = socket.gethostname()
    mine = []
    for lock in _lock_files(state):
        owner = owners.get(lock.name)
        if owner and owner.get("host") == host and owner.get("pid") != pid and _alive(owner["pid"], owner.get("start")):
            continue
        owners[lock.name] = {"pid": pid, "host": host, "start": _start_time(pid)}
        mine.append(lock.name)
    live = {p.name for p in _lock_files(state)}
    owners = {k: v for k, v in owners.items() if k in live}
    path = state / OWNERS
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(owners, indent=1))
    os.replace(tmp, path)
    return mine


def clear_stale_locks(state: str | Path = ".snakemake") -> tuple[list[str], list[str]]:
    """Remove lock files whose recorded owner was a process on this host that no longer runs.

    Returns (removed lock names with their dead pids, lock names still held, with their owner: a
    live process, one on another host, or none recorded; these are respected).
    """
    state = Path(state)
    owners = _read_owners(state)
    host = socket.gethostname()
    removed, held = [], []
    for lock in _lock_files(state):
        owner = owners.get(lock.name)
        if owner and owner.get("host") == host and not _alive(int(owner["pid"]), owner.get("start")):
            lock.unlink(missing_ok=True)
            removed.append(f"{lock.name} (pid {owner['pid']})")
        elif owner:
            held.append(f"{lock.name} (pid {owner['pid']} on {owner.get('host')})")
        else:
            held.append(f"{lock.name} (no recorded owner)")
    return removed, held


def incomplete_markers(state: str | Path = ".snakemake") -> dict[str, Path]:
    """Output path -> marker file of Snakemake's incomplete markers (long paths are split into
    ``@``-prefixed directory components)."""
    root = Path(state) / "incomplete"
    out: dict[str, Path] = {}
    if not root.is_dir():
        return out
    for marker in root.rglob("*"):
        if not marker.is_file() or marker.name == "migration_underway":
            continue
        parts = [p.removeprefix("@") for p in marker.relative_to(root).parts]
        try:
            out[urlsafe_b64decode("".join(parts).encode()).decode()] = marker
        except (ValueError, UnicodeDecodeError):
            continue
    return out


def settle_incomplete(
    verify: Callable[[Path], str | None],
    state: str | Path = ".snakemake",
    workdir: str | Path = ".",
    only: Iterable[str] | None = None,
) -> tuple[list[str], list[str]]:
    """For every output Snakemake marked incomplete (or those in ``only``): keep it and clear the
    marker when ``verify(path)`` returns None (complete), delete it and the marker when it returns
    a problem (so the job is rebuilt); a missing output just loses its marker. Temporary siblings
    (``.NAME.tmpPID``) left by dead processes are removed.

    Returns (kept paths, deleted paths with their problem). Call only when no live run holds a
    lock in this directory.
    """
    kept, deleted = [], []
    markers = incomplete_markers(state)
    for name in markers if only is None else [n for n in only if n in markers]:
        marker = markers[name]
        path = Path(workdir) / name
        if path.exists() or path.is_symlink():
            problem = verify(path)
            if problem is None:
                kept.append(name)
            else:
                _remove(path)
                deleted.append(f"{name} ({problem})")
        for tmp in path.parent.glob(f".{path.name}.tmp*") if path.parent.is_dir() else []:
            pid = tmp.name.rsplit(".tmp", 1)[1]
            if pid.isdigit() and not _alive(int(pid), None):
                _remove(tmp)
        marker.unlink(missing_ok=True)
        _prune_empty(marker.parent, Path(state) / "incomplete")
    return kept, deleted


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _prune_empty(directory: Path, stop: Path) -> None:
    while directory != stop and directory.is_dir() and not any(directory.iterdir()):
        directory.rmdir()
        directory = directory.parent
