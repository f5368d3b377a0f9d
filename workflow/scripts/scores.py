from compbias.inference.answering import scores_job
from compbias.io import read_parquet, write_parquet
from compbias.logs import log_to
from compbias.settings import study

with log_to(snakemake.log[0]) as log:
    cfg = study(snakemake.config)
    scores = scores_job(
        read_parquet(snakemake.input.items_table),
        snakemake.input.checkpoint,
        int(snakemake.wildcards.shard),
        snakemake.wildcards.group,
        cfg.decoding,
        cfg.prompt,
        cfg.runtime,
        snakemake.threads,
    )
    log.info(
        "%d items scored; mean letter mass %.4f",
        scores.height,
        (scores["p_A"] + scores["p_B"] + scores["p_C"]).mean() if scores.height else float("nan"),
    )
    write_parquet(scores, snakemake.output[0])
