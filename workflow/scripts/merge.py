from compbias.inference.merge import merge_answers
from compbias.io import read_parquet, write_parquet
from compbias.logs import log_to

with log_to(snakemake.log[0]) as log:
    answers = merge_answers(
        snakemake.input.shards,
        read_parquet(snakemake.input.items_table),
        snakemake.params.placebo_seeds,
        snakemake.params.baseline,
    )
    log.info("%d answers from %d shards", answers.height, len(snakemake.input.shards))
    write_parquet(answers, snakemake.output[0])
