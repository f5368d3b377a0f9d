"""Atomic table and JSON writers: a killed job never leaves a complete-looking file."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import polars as pl


def temp_path(path: Path) -> Path:
    """The temporary sibling ``path`` is written under before it is renamed into place."""
    return path.with_name(f".{path.name}.tmp{os.getpid()}")


def copy_file(src: str | Path, dst: str | Path) -> Path:
    """Copy ``src`` to ``dst`` through a temporary sibling, so ``dst`` appears only complete."""
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(dst)
    shutil.copyfile(src, tmp)
    os.replace(tmp, dst)
    return dst


@contextmanager
def atomic_dir(out: str | Path, replace: bool = True) -> Iterator[Path]:
    """Yield a not-yet-existing temporary sibling of directory ``out`` to build in; when the block
    succeeds it becomes ``out`` (replacing an existing one, or raising FileExistsError unless
    ``replace``), when it fails it is removed."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(out)
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        yield tmp
        if out.exists():
            if not replace:
                raise FileExistsError(f"output directory already exists: {out}")
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_parquet(df: pl.DataFrame, path: str | Path, csv: bool = False) -> None:
    """Write ``df`` to ``path`` (and a CSV beside it when ``csv``) via a temporary name."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path)
    df.write_parquet(tmp)
    if csv:
        csv_path = path.with_suffix(".csv")
        tmp_csv = temp_path(csv_path)
        flat = df.select(
            pl.col(c).cast(pl.List(pl.String)).list.join(";") if isinstance(t, pl.List) else pl.col(c)
            for c, t in df.schema.items()
        )
        flat.write_csv(tmp_csv)
        os.replace(tmp_csv, csv_path)
    os.replace(tmp, path)


def write_csv(df: pl.DataFrame, path: str | Path) -> None:
    """Write ``df`` as CSV to ``path`` via a temporary name."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path)
    df.write_csv(tmp)
    os.replace(tmp, path)


def write_json(obj: Any, path: str | Path) -> None:
    """Write ``obj`` as indented JSON to ``path`` via a temporary name."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path)
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")
    os.replace(tmp, path)


def write_text(text: str, path: str | Path) -> None:
    """Write ``text`` to ``path`` via a temporary name."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path)
    tmp.write_text(text)
    os.replace(tmp, path)


def read_parquet(path: str | Path) -> pl.DataFrame:
    """Read a Parquet file; a missing or corrupt file raises an error naming it."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: missing")
    try:
        return pl.read_parquet(path)
    except Exception as exc:  # polars raises several types for corrupt files
        raise ValueError(f"{path}: unreadable Parquet file ({exc}); delete it and rerun") from exc
