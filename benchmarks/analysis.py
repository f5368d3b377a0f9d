"""Analysis at study scale: synthetic answers -> shards -> merge -> rates, transitions, regression.

    python -m benchmarks.analysis [--rows 911100] [--keep DIR]

The answer table of the full study (3 models x 5 precisions x 5 seeds x 12,148 items =
911,100 answers; ``--rows 9111000`` for ten times the items) is simulated with
``compbias.testing.synthetic.synthetic_answers``, written as the workflow writes it (one Parquet file per
model/variant/seed/shard), and run through the workflow's analysis functions:

* ``merge``: ``compbias.inference.merge.merge_answers`` over every shard file;
* ``rates``: ``compbias.stats.metrics.rates``;
* ``transitions``: ``compbias.stats.transitions.item_table`` + ``transitions``;
* ``regression``: ``compbias.stats.regression.dose_response`` (item-clustered logits, six specs).

Each step's wall time and peak RSS (VmHWM, reset before the step) are printed; the last line is
``RESULT rows=.. seconds=.. peak_rss_mb=..`` (seconds: the analysis steps merge through
regression, excluding simulation and shard writing; peak: the whole process).
"""

from __future__ import annotations

import argparse
import resource
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from benchmarks.memory import reset_hwm, vm_hwm_mb

MODELS = ("m1", "m2", "m3")
VARIANTS = {"bf16": 16.0, "q8": 8.0, "q6": 6.0, "q4": 4.0, "q3": 3.0}
SEEDS = (42, 123, 456, 789, 1024)
N_SHARDS = 8  # synthetic items carry shard = index % 8, as the study config's ``shards: 8``


@dataclass(frozen=True)
class Settings:
    rows: int = 911_100
    keep: str | None = None


@dataclass
class Measurement:
    """What :func:`run` measured: per step (name, wall seconds, peak RSS MB, note)."""

    n_answers: int
    steps: list[tuple[str, float, float, str]]
    seconds: float  # merge through regression
    coefficients: pl.DataFrame
    peak_rss_mb: float


def parse(argv=None) -> Settings:
    ap = argparse.ArgumentParser(
        prog="python -m benchmarks.analysis", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--rows", type=int, default=911_100, help="answers (default 911100 = the study; 9111000 = 10x the items)"
    )
    ap.add_argument("--keep", default=None, help="write the shards here and keep them")
    args = ap.parse_args(argv)
    return Settings(rows=args.rows, keep=args.keep)


def run(s: Settings) -> Measurement:
    """Simulate, write shards, then merge -> rates -> transitions -> regression, each timed.

    Prints one progress line per step as it finishes (the steps take seconds to minutes)."""
    from compbias.inference.merge import merge_answers
    from compbias.io import write_parquet
    from compbias.stats.metrics import rates
    from compbias.stats.regression import dose_response
    from compbias.stats.transitions import item_table, transitions
    from compbias.testing.synthetic import synthetic_answers

    per_item = len(MODELS) * len(VARIANTS) * len(SEEDS)
    n_items = max(1, round(s.rows / per_item))
    steps: list[tuple[str, float, float, str]] = []
    out: dict = {}

    def step(name, fn, note=lambda r: ""):
        reset_hwm()
        t = time.perf_counter()
        r = fn()
        dt = time.perf_counter() - t
        steps.append((name, dt, vm_hwm_mb(), note(r)))
        print(f"  {name:<14}{dt:>9.2f} s{steps[-1][2]:>10.0f} MB  {steps[-1][3]}", flush=True)
        return r

    root = Path(s.keep) if s.keep else Path(tempfile.mkdtemp(prefix="compbias-analysis-"))
    answers_dir = root / "results" / "answers"
    print(
        f"{n_items} items x {len(MODELS)} models x {len(VARIANTS)} variants x {len(SEEDS)} seeds "
        f"= {n_items * per_item} answers; shards under {answers_dir}"
    )
    print(f"  {'step':<14}{'seconds':>11}{'peak RSS':>13}  notes")
    try:
        answers, items, variants = step(
            "simulate",
            lambda: synthetic_answers(n_items, MODELS, VARIANTS, list(SEEDS), seed=1),
            lambda r: f"{r[0].height} rows, {r[0].estimated_size('mb'):.0f} MB in memory",
        )

        def write_shards():
            paths = []
            parts = answers.partition_by("model", "variant", "seed", "shard", as_dict=True)  # noqa: F821 (deleted after use)
            for (model, variant, seed, shard), df in parts.items():
                path = answers_dir / model / variant / f"seed={seed}" / f"shard={shard}.parquet"
                write_parquet(df.drop("model", "variant", "placebo"), path)
                paths.append(path)
            return sorted(paths)

        paths = step(
            "write shards", write_shards, lambda r: f"{len(r)} files, {sum(p.stat().st_size for p in r) / 2**20:.0f} MB"
        )
        del answers
        t_analysis = time.perf_counter()
        merged = step("merge", lambda: merge_answers(paths, items, [], "bf16"), lambda r: f"{r.height} rows")
        out["rates"] = step("rates", lambda: rates(merged), lambda r: f"{r.height} rows")

        def trans():
            tbl = item_table(merged)
            return tbl, transitions(tbl, "bf16")

        out["items"], out["transitions"] = step(
            "transitions", trans, lambda r: f"item table {r[0].height} rows, transitions {r[1].height}"
        )
        out["regression"] = step(
            "regression",
            lambda: dose_response(merged, variants),
            lambda r: f"{r['coefficients'].height} coefficients, {r['tests'].height} tests",
        )
        seconds = time.perf_counter() - t_analysis
    finally:
        if not s.keep:
            shutil.rmtree(root, ignore_errors=True)
    return Measurement(
        n_answers=n_items * per_item,
        steps=steps,
        seconds=seconds,
        coefficients=out["regression"]["coefficients"],
        peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    )


def report(m: Measurement) -> None:
    """The planted-slope check, the totals and the ``RESULT`` line."""
    coefs = m.coefficients
    slope = coefs.filter((pl.col("spec") == "bits_cluster") & (pl.col("term") == "bits"))
    if slope.height:
        r = slope.row(0, named=True)
        print(
            f"check: bits_cluster slope {r['coef']:.4f} (planted -0.2 conditional on item; "
            f"marginal is attenuated), se {r['se']:.4f}, clusters {r['n_clusters']}"
        )
    print(f"analysis (merge..regression) {m.seconds:.2f} s; process peak RSS {m.peak_rss_mb:.0f} MB")
    print(f"RESULT rows={m.n_answers} seconds={m.seconds:.2f} peak_rss_mb={m.peak_rss_mb:.0f}")


def main(argv=None) -> None:
    report(run(parse(argv)))


if __name__ == "__main__":
    main()
