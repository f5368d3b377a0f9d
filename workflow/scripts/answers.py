from compbias.inference.jobs import answers_job, log_peak_memory
from compbias.io import read_parquet, write_parquet
from compbias.logs import log_to
from compbias.settings import study

with log_to(snakemake.log[0]) as log:
    cfg = study(snakemake.config)
    answers = answers_job(
        read_parquet(snakemake.input.items_table),
        read_parquet(snakemake.input.scores),
        snakemake.input.checkpoint,
        int(snakemake.wildcards.shard),
        int(snakemake.wildcards.seed),
        cfg.decoding,
        cfg.prompt,
        cfg.runtime,
        snakemake.threads,
        snakemake.resources.gpu_mem_mb,
    )
    log.info(
        "roles %s; methods %s",
        dict(answers["role"].value_counts().iter_rows()),
        dict(answers["method"].value_counts().iter_rows()),
    )
    log_peak_memory(snakemake.resources.gpu_mem_mb)
    write_parquet(answers, snakemake.output[0])
