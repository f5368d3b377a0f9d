"""Thin adapter: the five study figures (compbias.report.plots), each as .png and .pdf."""

from pathlib import Path

from compbias.report import plots
from compbias.stats.controls import perturbation_controls
from compbias.report.emergence_plot import emergence_figure
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
        *emergence_figure(read_parquet(inp.transitions), stem(out.transitions), expected=read_parquet(inp.expected),
                          direction=read_parquet(inp.direction), noise_floor=read_parquet(inp.noise_floor),
                          variants=variants, controls=perturbation_controls(snakemake.params.variants_cfg),
                          baseline=baseline),
        *plots.perplexity_vs_bias(ppl, rates, stem(out.perplexity_vs_bias), variants=variants, baseline=baseline),
        *plots.category_heatmap(rates, stem(out.category_heatmap), variants=variants, baseline=baseline),
        *plots.pruning(rates, ppl, variants, stem(out.pruning), baseline=baseline),
    ]
    for path in written:
        log.info("wrote %s", path)
