"""Merging per-seed answer shards and checkpoint manifests into study tables."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import polars as pl

from compbias.compress.checkpoints import read_manifest
from compbias.io import read_parquet


def merge_answers(
    paths: Sequence[str | Path], items: pl.DataFrame, placebo_seeds: Sequence[int], baseline: str
) -> pl.DataFrame:
    """Concatenate answer shards ``results/answers/{model}/{variant}/seed={s}/shard={k}.parquet``
    into one table with model, variant and placebo columns.

    Each shard must be readable and hold exactly the items its shard number has in ``items``;
    otherwise a ValueError names the file.
    """
    expected = items.group_by("shard").len().to_dict(as_series=False)
    expected = dict(zip(expected["shard"], expected["len"]))
    frames = []
    for path in map(Path, paths):
        model, variant = path.parts[-4], path.parts[-3]
        seed = int(path.parts[-2].split("=")[1])
        shard = int(path.stem.split("=")[1])
        df = read_parquet(path)
        want = expected.get(shard, 0)
        if df.height != want or df["item_id"].n_unique() != want:
            raise ValueError(f"{path}: {df.height} answers, expected {want} (shard {shard}); delete it and rerun")
        if (df["seed"] != seed).any():
            raise ValueError(f"{path}: seed column does not match the file name")
        frames.append(
            df.with_columns(
                model=pl.lit(model),
                variant=pl.lit(variant),
                placebo=pl.lit(variant == baseline and seed in set(placebo_seeds)),
            )
        )
    out = pl.concat(frames, how="vertical")
    return out.select("model", "variant", *[c for c in out.columns if c not in ("model", "variant")])


def variants_table(checkpoints: Sequence[str | Path], order: Sequence[str], baseline: str) -> pl.DataFrame:
    """One row per checkpoint manifest (docs/outputs.md, ``variants.parquet``); method, target_sparsity
    and sparsity come from its ``pruning`` section (None when unpruned)."""
    rows = []
    for path in map(Path, checkpoints):
        m = read_manifest(path)
        pruning = m.get("pruning") or {}
        rows.append(
            {
                "model": m["model"],
                "variant": m["variant"],
                "kind": m["kind"],
                "bits": float(m.get("bits", 16.0)),
                "group_size": m.get("group_size"),
                "mode": m.get("mode"),
                "dtype": m.get("dtype"),
                "size_bytes": m.get("size_bytes"),
                "n_params": m.get("n_params"),
                "is_baseline": m["variant"] == baseline,
                "order": list(order).index(m["variant"]),
                "method": pruning.get("method"),
                "target_sparsity": pruning.get("target_sparsity"),
                "sparsity": pruning.get("sparsity"),
                "like": m.get("like"),
            }
        )
    return pl.DataFrame(
        rows,
        schema_overrides={
            "group_size": pl.Int64,
            "mode": pl.String,
            "dtype": pl.String,
            "method": pl.String,
            "target_sparsity": pl.Float64,
            "sparsity": pl.Float64,
            "size_bytes": pl.Int64,
            "n_params": pl.Int64,
            "like": pl.String,
        },
    )
