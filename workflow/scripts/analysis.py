from pathlib import Path

import polars as pl

from compbias.analysis import analyse
from compbias.io import read_parquet, write_parquet
from compbias.logs import log_to

with log_to(snakemake.log[0]) as log:
    ppl = None
    if snakemake.input.perplexity:
        ppl = pl.concat([
            read_parquet(p).with_columns(model=pl.lit(Path(p).parent.name), variant=pl.lit(Path(p).stem))
            for p in snakemake.input.perplexity])
    tables = analyse(read_parquet(snakemake.input.answers), read_parquet(snakemake.input.items_table),
                     read_parquet(snakemake.input.variants), ppl, snakemake.params.baseline,
                     snakemake.params.n_seeds, snakemake.params.cfg)
    for name, table in tables.items():
        log.info("%s: %d rows", name, table.height)
        write_parquet(table, Path(snakemake.params.outdir) / f"{name}.parquet", csv=True)
