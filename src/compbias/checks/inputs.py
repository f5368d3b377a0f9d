"""Checks of every study input before any job runs: BBQ files, model sources, GGUF files,
corpora. A bad input stops the run with a message naming the file, line and config key, so that
Snakemake never starts (and never deletes the outputs of) a job that would fail on it."""

from __future__ import annotations

import glob
import hashlib
import json
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from compbias.checks.hub import hub_problem
from compbias.compress.checkpoints import variant_kind
from compbias.config import ConfigError, model_source
from compbias.data.bbq import CATEGORIES, BBQRecordError, json_problem, parse_record, resolve_categories
from compbias.settings import Dataset, Perplexity, coerce_section

#: A Hugging Face repo id: ``org/name``.
#: At most this many problems are listed (the rest are counted).
MAX_PROBLEMS = 20


class InputError(ValueError):
    """A study input that would make a job fail; the message lists every problem found."""


@dataclass(frozen=True)
class DataCheck:
    """What :func:`check_bbq` read: records checked, items selected by the config, a digest of
    the selected records' text (it changes exactly when the items table would) and the time."""

    records: int
    selected: int
    digest: str
    seconds: float


def _raise(problems: list[str], what: str) -> None:
    if not problems:
        return
    shown = problems[:MAX_PROBLEMS]
    more = len(problems) - len(shown)
    tail = f"\n  ... and {more} more" if more > 0 else ""
    raise InputError(f"{what}:\n  " + "\n  ".join(shown) + tail)


def _jsonl_lines(path: Path) -> Iterator[tuple[int, bytes]]:
    with path.open("rb") as fh:
        for n, line in enumerate(fh, 1):
            if line.strip():
                yield n, line


def check_bbq(dataset: Dataset | Mapping[str, Any], n_shards: int = 1) -> DataCheck:
    """Parse and field-check every record of the configured categories' upstream JSONL files
    (``dataset.source: jsonl``), as the ``items`` job will; raise InputError listing each bad
    record as ``file:line: problem``.

    The digest covers the records the items table keeps (categories, conditions,
    ``limit_per_category``) and the settings that select them, so an edit to a kept record is
    noticed and an edit elsewhere is not. A Hugging Face source is not read (digest of its name,
    split and revision).
    """
    start = time.perf_counter()
    ds = coerce_section(Dataset, "dataset", dataset)
    h = hashlib.sha256()
    categories, conditions, limit = resolve_categories(ds), list(ds.conditions), ds.limit_per_category
    h.update(json.dumps([categories, conditions, limit, n_shards]).encode())
    if ds.source != "jsonl":
        h.update(json.dumps([ds.name, ds.split, ds.revision, ds.columns], default=str).encode())
        return DataCheck(0, 0, h.hexdigest()[:16], time.perf_counter() - start)
    directory = Path(ds.path)
    problems: list[str] = []
    counts: dict[str, int] = {}
    seen: dict[str, str] = {}
    n = 0
    for cat in categories:
        path = directory / f"{CATEGORIES[cat]}.jsonl"
        if not path.is_file():
            problems.append(f"{path}: not found (config key 'dataset.categories' has {cat!r})")
            continue
        try:
            lines = list(_jsonl_lines(path))
        except OSError as exc:
            problems.append(f"{path}: unreadable ({exc})")
            continue
        for lineno, line in lines:
            n += 1
            where = f"{path}:{lineno}"
            try:
                rec = json.loads(line.rstrip(b"\r\n"))
            except json.JSONDecodeError as exc:
                problems.append(f"{where}: invalid JSON ({json_problem(exc)})")
                continue
            except UnicodeDecodeError as exc:
                problems.append(f"{where}: not UTF-8 ({exc})")
                continue
            if not isinstance(rec, dict):
                problems.append(f"{where}: expected a JSON object, got {type(rec).__name__}")
                continue
            try:
                row = parse_record(rec, where, n_shards)
            except BBQRecordError as exc:
                problems.append(str(exc))
                continue
            if row["category"] != cat:
                problems.append(f"{where}: category {rec['category']!r} in the file of {cat!r}")
                continue
            if row["condition"] not in conditions or (limit is not None and counts.get(cat, 0) >= limit):
                continue
            counts[cat] = counts.get(cat, 0) + 1
            if row["item_id"] in seen:
                problems.append(f"{where}: duplicate item id {row['item_id']} (first at {seen[row['item_id']]})")
            seen[row["item_id"]] = where
            h.update(line.rstrip(b"\r\n") + b"\n")
    if not problems:
        empty = [c for c in categories if c not in counts]
        if empty:
            problems.append(f"{directory}: no items for categories {empty} with conditions {conditions}")
    _raise(problems, "invalid BBQ data (config key 'dataset.path')")
    return DataCheck(n, sum(counts.values()), h.hexdigest()[:16], time.perf_counter() - start)


def _gguf_problem(key: str, spec: str) -> str | None:
    from compbias.compress.gguf import resolve_gguf

    try:
        resolve_gguf(spec)
    except (FileNotFoundError, ModuleNotFoundError) as exc:
        return f"config key '{key}': {exc}"
    return None


def _local_like(source: str) -> bool:
    return source.startswith((".", "/", "~")) or glob.has_magic(source)


def _text_files(source: str) -> list[Path]:
    """The files the corpus loader will read from ``source`` (:func:`compbias.data.corpus.text_files`)."""
    from compbias.data.corpus import text_files

    return text_files(source) or []


def _local_model_problem(key: str, spec: Any, kind: str, location: str) -> str | None:
    """The problem of a model source that names a missing local path (kind path, or a hub
    source that looks like a path), else None."""
    if kind == "path":
        return (
            None if Path(location).expanduser().exists() else (f"config key '{key}.path': {location!r} does not exist")
        )
    if kind == "hf" and _local_like(location):
        where = key if isinstance(spec, str) else f"{key}.hf"
        return f"config key '{where}': local path {location!r} does not exist"
    return None


def local_model_problems(models: Mapping[str, Any]) -> list[str]:
    """Missing local model paths of the ``models`` config section (checked offline, also by
    :func:`compbias.config.validate`)."""
    problems = []
    for name, spec in models.items():
        try:
            kind, location = model_source(spec)
        except ConfigError:
            continue  # reported by model_problems
        problem = _local_model_problem(f"models.{name}", spec, kind, location)
        if problem:
            problems.append(problem)
    return problems


def model_problems(config: Mapping[str, Any], check_hub: bool = False) -> list[str]:
    """Problems with the model sources, prebuilt checkpoints and GGUF files of ``config``.

    A local path must exist; a hub id must be ``org/name``. With ``check_hub`` (a real run, not
    a dry run, which plans offline) a hub id must also be in the local cache when
    ``HF_HUB_OFFLINE`` is set, and otherwise is looked up on the hub (a missing repo or an
    unreachable hub is a problem).
    """
    problems: list[str] = []
    for name, spec in config["models"].items():
        key = f"models.{name}"
        try:
            kind, location = model_source(spec)
        except ConfigError as exc:
            problems.append(f"config key '{key}': {exc}")
            continue
        local = _local_model_problem(key, spec, kind, location)
        if local or kind == "path":
            problems += [local] if local else []
        elif kind == "gguf":
            problem = _gguf_problem(f"{key}.gguf", location)
            if problem:
                problems.append(problem)
        else:
            problem = hub_problem(key if isinstance(spec, str) else f"{key}.hf", location, check_hub)
            if problem:
                problems.append(problem)
    for name, spec in config["variants"].items():
        kind = variant_kind(spec)
        key = f"variants.{name}.{kind}"
        if kind == "gguf":
            problem = _gguf_problem(key, spec["gguf"])
        elif kind == "checkpoint":
            src = spec["checkpoint"]
            problem = (
                None
                if Path(src).expanduser().exists()
                else (
                    f"config key '{key}': local path {src!r} does not exist"
                    if _local_like(src)
                    else hub_problem(key, src, check_hub)
                )
            )
        else:
            problem = None
        if problem:
            problems.append(problem)
    return problems


def corpus_problems(config: Mapping[str, Any]) -> list[str]:
    """Problems with the perplexity corpus and pruning calibration sources of ``config``."""
    problems: list[str] = []
    ppl = coerce_section(Perplexity, "perplexity", config["perplexity"])
    if ppl.enabled and ppl.source == "text":
        path = ppl.path
        if not path:
            problems.append("config key 'perplexity.path': required when perplexity.source is text")
        elif not _text_files(path):
            problems.append(f"config key 'perplexity.path': no text files at {path!r}")
    for name, spec in config["variants"].items():
        cal = (spec.get("prune") or {}).get("calibration") or {}
        source = cal.get("source")
        if spec.get("prune", {}).get("method") != "wanda" or not isinstance(source, str):
            continue
        if Path(source).expanduser().exists() or glob.has_magic(source):
            if not _text_files(source):
                problems.append(
                    f"config key 'variants.{name}.prune.calibration.source': no calibration files at {source!r}"
                )
        elif _local_like(source):
            problems.append(
                f"config key 'variants.{name}.prune.calibration.source': local path {source!r} does not exist"
            )
    return problems


def check_inputs(config: Mapping[str, Any], check_hub: bool = False) -> DataCheck:
    """Check every input of a validated study config (:func:`check_bbq`, :func:`model_problems`,
    :func:`corpus_problems`); raise InputError listing all problems; return the data check."""
    problems = model_problems(config, check_hub) + corpus_problems(config)
    try:
        data = check_bbq(config["dataset"], int(config["shards"]))
    except InputError as exc:
        if problems:
            raise InputError(f"{exc}\ninvalid inputs:\n  " + "\n  ".join(problems)) from exc
        raise
    _raise(problems, "invalid inputs")
    return data
