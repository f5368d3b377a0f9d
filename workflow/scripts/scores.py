from compbias.inference.jobs import group_seeds, log_peak_memory, scores_job
from compbias.io import read_parquet, write_parquet
from compbias.logs import log_to
from compbias.settings import study

with log_to(snakemake.log[0]) as log:
    cfg = study(snakemake.config)
    wc = snakemake.wildcards
    # the seeds this scores group serves are answered here too; read from the config, not a
    # param, so that a seed added later reruns no scores job (its answers job decodes itself)
    seeds = group_seeds(wc.group, cfg.variant_seeds(wc.variant))
    scores = scores_job(
        read_parquet(snakemake.input.items_table),
        snakemake.input.checkpoint,
        int(wc.shard),
        wc.group,
        cfg.decoding,
        cfg.prompt,
        cfg.runtime,
        snakemake.threads,
        seeds,
        snakemake.resources.gpu_mem_mb,
    )
    log.info(
        "%d items scored and answered for seeds %s; mean letter mass %.4f",
        scores.height,
        seeds,
        (scores["p_A"] + scores["p_B"] + scores["p_C"]).mean() if scores.height else float("nan"),
    )
    log_peak_memory(snakemake.resources.gpu_mem_mb)
    write_parquet(scores, snakemake.output[0])
