from compbias.inference.jobs import hold_to_budget, log_peak_memory
from compbias.inference.perplexity import sequence_losses
from compbias.inference.runtime import load_model, resolve_runtime, set_threads
from compbias.io import read_parquet, write_parquet
from compbias.logs import log_to
from compbias.settings import study

with log_to(snakemake.log[0]) as log:
    set_threads(snakemake.threads)
    cfg = study(snakemake.config).runtime
    runtime = resolve_runtime(cfg.compute_dtype, cfg.dequantize)
    budget = snakemake.resources.gpu_mem_mb
    hold_to_budget(runtime, snakemake.input.checkpoint, budget, "perplexity")
    model, _, _ = load_model(snakemake.input.checkpoint, runtime)
    corpus = read_parquet(snakemake.input.corpus)
    table = sequence_losses(model, corpus["tokens"].to_list(), snakemake.params.batch_size)
    log.info(
        "nll per token %.4f over %d sequences", table["nll_sum"].sum() / max(table["n_tokens"].sum(), 1), table.height
    )
    log_peak_memory(budget)
    write_parquet(table, snakemake.output[0])
