"""Thin adapter: results/summary.md (compbias.report.summary)."""

from compbias.io import read_parquet, write_text
from compbias.logs import log_to
from compbias.report.summary import summary_markdown

with log_to(snakemake.log[0]) as log:
    tables = {
        name: read_parquet(path)
        for name, path in snakemake.input.items()
        if name != "report_tables" and isinstance(path, str)
    }
    text = summary_markdown(tables, snakemake.params.baseline, snakemake.params.variants_cfg)
    write_text(text, snakemake.output[0])
    log.info("summary: %d lines", text.count("\n"))
