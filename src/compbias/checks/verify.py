"""Verification of a results tree: every shard and table readable, with its schema and the rows
and items it must hold, and every checkpoint's files matching its manifest.

``compbias verify`` (and ``snakemake verify``) lists the corrupt or short files and prints the
command that rebuilds them; the resume logic (:mod:`compbias.resume`) uses
:func:`verify_output` to keep complete outputs that Snakemake marked incomplete.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from compbias.compress.checkpoints import MANIFEST, read_manifest

SHARD = re.compile(r"shard=(\d+)\.parquet$")
SCORE_COLUMNS = ("item_id", "p_A", "p_B", "p_C")


@dataclass
class Expected:
    """What the shards must hold: item ids per shard (from ``results/items.parquet``)."""

    items_by_shard: dict[int, set[str]] = field(default_factory=dict)

    @classmethod
    def from_items(cls, items: pl.DataFrame) -> Expected:
        out: dict[int, set[str]] = {}
        for shard, item_id in items.select("shard", "item_id").iter_rows():
            out.setdefault(int(shard), set()).add(item_id)
        return cls(out)


def parquet_problem(
    path: Path, columns: Mapping[str, pl.DataType] | Sequence[str] = (), full: bool = False
) -> tuple[str | None, pl.DataFrame | None]:
    """(problem or None, the table when ``full``): the footer must parse and name ``columns``
    (with their dtypes when a mapping); with ``full`` every page is read as well."""
    try:
        schema = pl.read_parquet_schema(path)
    except Exception as exc:  # polars raises several types for corrupt files
        return f"unreadable Parquet footer ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})", None
    missing = [c for c in columns if c not in schema]
    if missing:
        return f"missing columns {missing}", None
    if isinstance(columns, Mapping):
        wrong = [f"{c} is {schema[c]}, expected {t}" for c, t in columns.items() if schema[c] != t]
        if wrong:
            return "wrong column types: " + "; ".join(wrong), None
    if not full:
        return None, None
    try:
        return None, pl.read_parquet(path)
    except Exception as exc:
        return f"unreadable Parquet data ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})", None


def shard_problem(path: Path, kind: str, expected: Expected | None, full: bool = True) -> str | None:
    """Problem with an answers (``kind`` answers) or scores shard, or None."""
    from compbias.inference.answering import ANSWER_SCHEMA

    columns = ANSWER_SCHEMA if kind == "answers" else SCORE_COLUMNS
    need_table = full or expected is not None
    problem, df = parquet_problem(path, columns, full=need_table)
    if problem or df is None or expected is None:
        return problem
    m = SHARD.search(path.name)
    want = expected.items_by_shard.get(int(m.group(1)), set()) if m else None
    if want is None:
        return None
    got = df["item_id"]
    if df.height != len(want) or got.n_unique() != len(want) or set(got) != want:
        return f"{df.height} rows ({got.n_unique()} items), expected the {len(want)} items of its shard"
    if kind == "answers":
        seed = re.search(r"seed=(\d+)", str(path))
        if seed and (df["seed"] != int(seed.group(1))).any():
            return "seed column does not match the file name"
    return None


def checkpoint_problem(path: Path) -> str | None:
    """Problem with a checkpoint directory (manifest, config and weight files), or None."""
    if not (path / MANIFEST).is_file():
        return f"no {MANIFEST} (the build did not finish)"
    try:
        m = read_manifest(path)
    except ValueError as exc:
        return f"{MANIFEST} is not valid JSON ({exc})"
    if m.get("kind") == "prune" and "sparsity" not in (m.get("pruning") or {}):
        return f"{MANIFEST} of a pruned checkpoint has no pruning section"
    if not (path / "config.json").is_file():
        return "no config.json"
    weights = sorted(path.glob("*.safetensors"))
    if not weights:
        return "no .safetensors weight files"
    try:
        size = sum(f.resolve().stat().st_size for f in weights)
    except OSError as exc:
        return f"weight file missing ({exc})"
    if m.get("size_bytes") is not None and size != m["size_bytes"]:
        return f"weights are {size} bytes, the manifest says {m['size_bytes']}"
    return None


def _kind(path: Path) -> str:
    parts = path.parts
    if "answers" in parts and SHARD.search(path.name):
        return "answers"
    if "scores" in parts and SHARD.search(path.name):
        return "scores"
    return "table"


def verify_output(path: str | Path, expected: Expected | None = None, full: bool = False) -> str | None:
    """Problem with one workflow output, or None when it is complete: a Parquet file must be
    readable with its schema (answer and score shards: the items of their shard when
    ``expected`` is given), a checkpoint directory must match its manifest; other files are
    written by a rename, so existing means complete."""
    from compbias.data.bbq import ITEM_SCHEMA

    path = Path(path)
    if path.is_dir():
        return checkpoint_problem(path) if "checkpoints" in path.parts else None
    if path.suffix != ".parquet":
        return None
    kind = _kind(path)
    if kind != "table":
        return shard_problem(path, kind, expected, full)
    if path.name == "items.parquet":
        return parquet_problem(path, ITEM_SCHEMA, full)[0]
    return parquet_problem(path, (), full)[0]


@dataclass
class Report:
    """Result of :func:`verify_tree`: files checked and (path, problem) of the bad ones."""

    checked: int = 0
    problems: list[tuple[str, str]] = field(default_factory=list)


def verify_tree(root: str | Path = ".", results: str = "results") -> Report:
    """Check every shard, table and checkpoint under ``root/results`` (reading every page)."""
    root = Path(root)
    base = root / results
    report = Report()

    def add(path: Path, problem: str | None) -> None:
        report.checked += 1
        if problem:
            report.problems.append((str(path.relative_to(root)), problem))

    expected = None
    items = base / "items.parquet"
    if items.exists():
        problem = verify_output(items, full=True)
        add(items, problem)
        if problem is None:
            expected = Expected.from_items(pl.read_parquet(items))
    shard_rows, shards_ok = 0, True
    for kind in ("scores", "answers"):
        for path in sorted((base / kind).rglob("shard=*.parquet")) if (base / kind).is_dir() else []:
            problem = shard_problem(path, kind, expected, full=True)
            add(path, problem)
            if kind == "answers":
                shards_ok = shards_ok and problem is None
                shard_rows += _rows(path) if problem is None else 0
    merged = base / "answers.parquet"
    if merged.exists():
        from compbias.inference.answering import ANSWER_SCHEMA

        problem, df = parquet_problem(merged, ANSWER_SCHEMA, full=True)
        if problem is None and df is not None and shards_ok and shard_rows and df.height != shard_rows:
            problem = f"{df.height} answers, the shards hold {shard_rows}"
        add(merged, problem)
    ckpts = base / "checkpoints"
    for manifest in sorted(ckpts.rglob(MANIFEST)) if ckpts.is_dir() else []:
        add(manifest.parent, checkpoint_problem(manifest.parent))
    skip = {items, merged}
    for path in sorted(base.rglob("*.parquet")):
        if path in skip or _kind(path) != "table" or "checkpoints" in path.parts or path.name.startswith("."):
            continue
        add(path, parquet_problem(path, (), full=True)[0])
    return report


def _rows(path: Path) -> int:
    import pyarrow.parquet as pq

    return pq.ParquetFile(path).metadata.num_rows


def rebuild_command(paths: Sequence[str], snakemake_args: Sequence[str] = ()) -> str:
    """The command that rebuilds ``paths`` (and what depends on them) with the study's config:
    ``snakemake_args`` are the Snakefile, directory and config arguments of the study."""
    return shlex.join(["snakemake", *snakemake_args, "--cores", "1", "all", "--forcerun", *paths])


def study_args(
    snakefile: str | Path | None, workdir: str | Path | None, configfiles: Sequence[str | Path] = ()
) -> list[str]:
    """Snakemake arguments naming the Snakefile, working directory and config files."""
    args: list[str] = []
    if snakefile is not None:
        args += ["-s", str(snakefile)]
    if workdir is not None:
        args += ["--directory", str(workdir)]
    if configfiles:
        args += ["--configfile", *map(str, configfiles)]
    return args


def format_report(report: Report, snakemake_args: Sequence[str] = ()) -> str:
    """Human-readable verification result, ending with the rebuild command when needed."""
    if not report.problems:
        return f"verify: {report.checked} files checked, all complete"
    lines = [f"verify: {len(report.problems)} of {report.checked} files are corrupt or incomplete:"]
    lines += [f"  {path}: {problem}" for path, problem in report.problems]
    lines += [
        "rebuild them (and what depends on them) with:",
        "  " + rebuild_command([p for p, _ in report.problems], snakemake_args),
    ]
    return "\n".join(lines)
