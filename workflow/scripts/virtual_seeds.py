"""Thin adapter: the virtual seed outcomes of one (model, variant) shard (compbias.stats.virtual_seeds)."""

from pathlib import Path

import polars as pl

from compbias.io import read_parquet, write_parquet
from compbias.logs import log_to
from compbias.stats.virtual_seeds import check_seeds, virtual_outcomes

with log_to(snakemake.log[0]) as log:
    groups: dict[str, list] = {}
    for path in snakemake.input.scores:
        groups.setdefault(Path(path).parent.name, []).append(read_parquet(path))
    scores = {g: pl.concat(parts, how="diagonal_relaxed") for g, parts in groups.items()}
    p = snakemake.params
    check_seeds(p.placebo_seeds)  # the study seeds are checked by virtual_outcomes
    table = virtual_outcomes(
        scores, read_parquet(snakemake.input.items_table), p.rng, int(p.n_sets), p.seeds, threads=snakemake.threads
    )
    log.info(
        "%d items x %d sets of %d seeds (rng %s): %.2f%% of draws need continuing",
        table.height,
        int(p.n_sets),
        len(p.seeds),
        p.rng,
        100 * table["n_continue"].sum() / max(1, table["n_draws"].sum()),
    )
    write_parquet(table, snakemake.output[0])
