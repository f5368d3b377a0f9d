"""Thin adapter: the five study figures (compbias.plots), each as .png and .pdf."""

from pathlib import Path

from compbias import plots
from compbias.io import read_parquet
from compbias.logs import log_to

with log_to(snakemake.log[0]) as log:
    inp, out = snakemake.input, snakemake.output
    rates, variants = read_parquet(inp.rates), read_parquet(inp.variants)
    ppl = read_parquet(inp.perplexity[0]) if inp.perplexity else None
    baseline = snakemake.params.baseline

    def stem(png: str) -> Path:
        return Path(png).with_suffix("")

    written = [
        *plots.dose_response(rates, variants, stem(out.dose_response)),
        *plots.transitions_vs_floor(read_parquet(inp.transitions), read_parquet(inp.excess),
                                    read_parquet(inp.noise_floor), stem(out.transitions), variants=variants),
        *plots.perplexity_vs_bias(ppl, rates, stem(out.perplexity_vs_bias), variants=variants, baseline=baseline),
        *plots.category_heatmap(rates, stem(out.category_heatmap), variants=variants, baseline=baseline),
        *plots.pruning(rates, ppl, variants, stem(out.pruning), baseline=baseline),
    ]
    for path in written:
        log.info("wrote %s", path)
