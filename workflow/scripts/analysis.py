from pathlib import Path

import polars as pl

from compbias.io import read_parquet, write_parquet
from compbias.logs import log_to
from compbias.stats.analysis import analyse


def _by_model_variant(paths, sharded: bool = False) -> pl.DataFrame | None:
    """Tables at .../{model}/{variant}.parquet, or with ``sharded`` at
    .../{model}/{variant}/shard={k}.parquet, with model and variant columns."""
    if not paths:
        return None
    parts = []
    for p in paths:
        variant_dir = Path(p).parent if sharded else Path(p).with_suffix("")
        parts.append(
            read_parquet(p).with_columns(model=pl.lit(variant_dir.parent.name), variant=pl.lit(variant_dir.name))
        )
    return pl.concat(parts)


with log_to(snakemake.log[0]) as log:
    tables = analyse(
        read_parquet(snakemake.input.answers),
        read_parquet(snakemake.input.items_table),
        read_parquet(snakemake.input.variants),
        _by_model_variant(snakemake.input.perplexity),
        snakemake.params.baseline,
        snakemake.params.n_seeds,
        snakemake.params.cfg,
        virtual=_by_model_variant(snakemake.input.virtual, sharded=True),
        variants_cfg=snakemake.params.variants_cfg,
    )
    for name, table in tables.items():
        log.info("%s: %d rows", name, table.height)
        write_parquet(table, Path(snakemake.params.outdir) / f"{name}.parquet", csv=True)
