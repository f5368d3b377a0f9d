"""Per-rule wall time of a workflow run from Snakemake's benchmark files.

    python -m benchmarks.rule_times [RESULTS_DIR]   (default: results)

Prints a Markdown table: rule, jobs, total / mean / max seconds, max RSS.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import polars as pl


def rule_times(results: Path) -> pl.DataFrame:
    """One row per rule with the jobs' summed, mean and max wall seconds and max RSS (MB)."""
    rows = []
    root = results / "benchmarks"
    for tsv in sorted(root.rglob("*.tsv")):
        rule = tsv.relative_to(root).parts[0].removesuffix(".tsv")
        df = pl.read_csv(tsv, separator="\t", null_values=["NA", "-"])
        rows.append({"rule": rule, "s": float(df["s"][0]), "max_rss": df["max_rss"].cast(pl.Float64)[0]})
    return (
        pl.DataFrame(rows)
        .group_by("rule", maintain_order=True)
        .agg(
            jobs=pl.len(),
            total_s=pl.col("s").sum(),
            mean_s=pl.col("s").mean(),
            max_s=pl.col("s").max(),
            max_rss_mb=pl.col("max_rss").max(),
        )
        .sort("total_s", descending=True)
    )


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(
        prog="python -m benchmarks.rule_times",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("results", nargs="?", default="results", help="results directory (default: results)")
    table = rule_times(Path(ap.parse_args(argv).results))
    print("| rule | jobs | total s | mean s | max s | max RSS MB |\n|---|---:|---:|---:|---:|---:|")
    for r in table.iter_rows(named=True):
        print(
            f"| {r['rule']} | {r['jobs']} | {r['total_s']:.0f} | {r['mean_s']:.1f} | "
            f"{r['max_s']:.1f} | {r['max_rss_mb'] or 0:.0f} |"
        )
    print(f"\nRESULT jobs={table['jobs'].sum()} rule_seconds={table['total_s'].sum():.0f}")


if __name__ == "__main__":
    main()
