"""Thin adapter: the five study figures (compbias.report.figures), each as .png and .pdf."""

from pathlib import Path

from compbias.io import read_parquet
from compbias.logs import log_to
from compbias.report import figures
from compbias.stats.controls import perturbation_controls

with log_to(snakemake.log[0]) as log:
    inp, out = snakemake.input, snakemake.output
    rates, variants = read_parquet(inp.rates), read_parquet(inp.variants)
    ppl = read_parquet(inp.perplexity[0]) if inp.perplexity else None
    baseline = snakemake.params.baseline

    def stem(png: str) -> Path:
        return Path(png).with_suffix("")

    written = [
        *figures.dose_response(rates, variants, stem(out.dose_response)),
        *figures.emergence_figure(
            read_parquet(inp.transitions),
            stem(out.transitions),
            expected=read_parquet(inp.expected),
            direction=read_parquet(inp.direction),
            noise_floor=read_parquet(inp.noise_floor),
            variants=variants,
            controls=perturbation_controls(snakemake.params.variants_cfg),
            baseline=baseline,
        ),
        *figures.perplexity_vs_bias(ppl, rates, stem(out.perplexity_vs_bias), variants=variants, baseline=baseline),
        *figures.category_heatmap(rates, stem(out.category_heatmap), variants=variants, baseline=baseline),
        *figures.pruning(rates, ppl, variants, stem(out.pruning), baseline=baseline),
    ]
    for path in written:
        log.info("wrote %s", path)
