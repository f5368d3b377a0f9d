"""The perplexity-vs-bias figure: perplexity change against the change in stereotype reliance,
one labelled point per model x variant."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import polars as pl
from matplotlib.ticker import FuncFormatter

from compbias.report.figures.common import (
    MODEL_COLORS,
    _empty,
    _err,
    _models,
    _new_figure,
    _note,
    _pooled_all,
    place_labels,
    placeholder,
    save_figure,
)
from compbias.report.numbers import as_float, pct_tick
from compbias.stats.variants import pruning_variants, resolve_baseline


def _sr_change(rates: pl.DataFrame, baseline: str) -> pl.DataFrame:
    """Per model x variant: pooled all-category SR of the variant and its baseline, in %."""
    p = _pooled_all(rates).select("model", "variant", biased=100 * pl.col("biased_rate"))
    base = p.filter(pl.col("variant") == baseline).select("model", biased_base="biased")
    return p.join(base, on="model", how="left").with_columns(d_sr=pl.col("biased") - pl.col("biased_base"))


PPL_LINEAR = 1.0
"""Perplexity changes (%) within +- this are drawn on a linear scale, larger ones logarithmically."""


def perplexity_vs_bias(
    perplexity: pl.DataFrame | None,
    rates: pl.DataFrame,
    out: str | Path,
    variants: pl.DataFrame | None = None,
    baseline: str | None = None,
) -> list[Path]:
    """Perplexity % change vs the baseline (paired bootstrap 95% interval, horizontal bars) against
    the change in stereotype-reliance rate from the baseline (percentage points, category
    ``all``), one labelled point per model x variant (pruning variants as triangles).

    The perplexity axis is symmetric-logarithmic (linear within +-:data:`PPL_LINEAR` %), so a
    +0.1% and a +700% change are both readable."""
    title = "Perplexity change vs change in stereotype reliance"
    if _empty(perplexity):
        return placeholder(out, title, "perplexity was not measured (perplexity.enabled: false)")
    if _empty(rates):
        return placeholder(out, title, "no rates to plot")
    present = rates["variant"].unique().to_list()
    baseline = resolve_baseline(variants, baseline, present)
    if baseline is None:
        return placeholder(out, title, "no baseline")
    pruned = set(pruning_variants(variants))
    d = perplexity.join(_sr_change(rates, baseline), on=["model", "variant"], how="left").filter(
        pl.col("variant") != baseline
    )
    if d.is_empty():
        return placeholder(out, title, "only the baseline variant: nothing to compare")
    models = _models(d)
    fig = _new_figure(7.5, 5.6)
    ax = fig.add_subplot()
    ax.axhline(0, color="#444444", lw=0.8)
    ax.axvline(0, color="#444444", lw=0.8)
    missing, labels = [], []
    for k, model in enumerate(models):
        color = MODEL_COLORS[k % len(MODEL_COLORS)]
        m = d.filter(pl.col("model") == model)
        for r in m.iter_rows(named=True):
            x, y = as_float(r["pct_change"]), as_float(r["d_sr"])
            if not (math.isfinite(x) and math.isfinite(y)):
                missing.append(f"{model}/{r['variant']}")
                continue
            lo, hi = as_float(r["pct_lo"]), as_float(r["pct_hi"])
            xerr = _err(np.array([x]), np.array([lo]), np.array([hi]))
            marker = "^" if r["variant"] in pruned else "o"
            ax.errorbar([x], [y], xerr=xerr, fmt=marker, color=color, ms=7, capsize=4)
            labels.append((x, y, r["variant"], color))
    ax.set_xscale("symlog", linthresh=PPL_LINEAR, linscale=0.6)
    ax.xaxis.set_major_formatter(FuncFormatter(pct_tick))
    ax.margins(x=0.12, y=0.1)
    place_labels(ax, labels)
    for k, model in enumerate(models):
        ax.plot([], [], "o", color=MODEL_COLORS[k % len(MODEL_COLORS)], label=f"model {model}")
    if pruned:
        ax.plot([], [], "o", color="#777777", label="quantization variant")
        ax.plot([], [], "^", color="#777777", label="pruning variant")
    ax.legend(fontsize=8, loc="best")
    ax.set_xlabel(
        f"perplexity change vs {baseline} (%, paired bootstrap 95% CI; log scale beyond \u00b1{PPL_LINEAR:g}%)"
    )
    ax.set_ylabel(f"stereotype-reliance change vs {baseline}\n(percentage points of valid answers)")
    ax.grid(alpha=0.3)
    if missing:
        _note(ax, "not shown (no valid answers or no perplexity): " + ", ".join(sorted(missing)))
    ax.set_title(title, fontsize=12)
    return save_figure(fig, out)
