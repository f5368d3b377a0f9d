from pathlib import Path

import polars as pl

from compbias.io import read_parquet, write_parquet
from compbias.logs import log_to
from compbias.stats.analysis import analyse


def _by_model_variant(paths) -> pl.DataFrame | None:
    """Tables at .../{model}/{variant}.parquet, with model and variant columns."""
    if not paths:
        return None
    return pl.concat(
        [read_parquet(p).with_columns(model=pl.lit(Path(p).parent.name), variant=pl.lit(Path(p).stem)) for p in paths]
    )


def _virtual(paths) -> pl.DataFrame | None:
    """The virtual seed shards at .../{model}/{variant}/shard={k}.parquet, with model and variant columns."""
    if not paths:
        return None
    parts = [
        read_parquet(p).with_columns(model=pl.lit(Path(p).parent.parent.name), variant=pl.lit(Path(p).parent.name))
        for p in paths
    ]
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
        virtual=_virtual(snakemake.input.virtual),
        variants_cfg=snakemake.params.variants_cfg,
    )
    for name, table in tables.items():
        log.info("%s: %d rows", name, table.height)
        write_parquet(table, Path(snakemake.params.outdir) / f"{name}.parquet", csv=True)
