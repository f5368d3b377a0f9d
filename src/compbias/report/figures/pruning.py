"""The pruning figure: stereotype reliance and perplexity change vs the measured sparsity."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import polars as pl

from compbias.report.figures.common import (
    METHOD_MARKERS,
    MODEL_COLORS,
    _col,
    _empty,
    _err,
    _models,
    _new_figure,
    _note,
    _offsets,
    _pooled_all,
    placeholder,
    save_figure,
)
from compbias.report.numbers import as_float
from compbias.stats.variants import pruning_variants, resolve_baseline

DODGE = 1.5
"""Largest horizontal shift (percentage points of sparsity) separating overlapping pruning series."""


def pruning(
    rates: pl.DataFrame,
    perplexity: pl.DataFrame | None,
    variants: pl.DataFrame,
    out: str | Path,
    baseline: str | None = None,
) -> list[Path]:
    """Stereotype reliance (category ``all``, Wilson 95% CI) and perplexity change (paired 95% CI)
    vs the MEASURED sparsity, one line per pruning method (pruned-then-quantized variants as a
    separate, hollow series) starting at the baseline (sparsity 0). A placeholder when there is
    no pruning variant."""
    title = "Pruning: stereotype reliance and perplexity vs measured sparsity"
    pruned = pruning_variants(variants)
    if not pruned:
        return placeholder(out, "Pruning", "no pruning variants")
    if _empty(rates):
        return placeholder(out, title, "no rates to plot")
    present = rates["variant"].unique().to_list()
    baseline = resolve_baseline(variants, baseline, present)
    v = variants.select("model", "variant", "method", "bits", "sparsity")
    base_bits = variants.filter(pl.col("variant") == baseline).select("model", base_bits="bits")
    v = v.join(base_bits, on="model", how="left").with_columns(
        series=pl.when(pl.col("bits") < pl.col("base_bits"))
        .then(pl.format("{} + {}-bit", "method", pl.col("bits").cast(pl.Int64)))
        .otherwise("method"),
        quantized=(pl.col("bits") < pl.col("base_bits")).fill_null(False),
    )
    sr = _pooled_all(rates).select("model", "variant", "biased_rate", "biased_lo", "biased_hi")
    ppl = perplexity.select("model", "variant", "pct_change", "pct_lo", "pct_hi") if not _empty(perplexity) else None
    models = _models(v.filter(pl.col("variant").is_in(pruned)))
    methods = sorted(v.filter(pl.col("method").is_not_null())["method"].unique().to_list())
    marker = {m: METHOD_MARKERS[i % len(METHOD_MARKERS)] for i, m in enumerate(methods)}
    fig = _new_figure(12, 4.6 * len(models))
    axes = fig.subplots(len(models), 2, squeeze=False)
    n_series = 0
    for row, model in enumerate(models):
        ax_sr, ax_ppl = axes[row]
        mv = v.filter((pl.col("model") == model) & (pl.col("variant").is_in(pruned) | (pl.col("variant") == baseline)))
        mv = mv.join(sr, on=["model", "variant"], how="left")
        if ppl is not None:
            mv = mv.join(ppl, on=["model", "variant"], how="left")
        b = mv.filter(pl.col("variant") == baseline)
        b_row = b.row(0, named=True) if b.height else {}
        # (panel, value, lo, hi, scale) for SR and perplexity; the baseline is drawn once, as a star
        panels = [(ax_sr, "biased_rate", "biased_lo", "biased_hi", 100.0)]
        if ppl is not None:
            panels.append((ax_ppl, "pct_change", "pct_lo", "pct_hi", 1.0))
        b_ppl = 0.0 if ppl is not None and b_row else float("nan")
        for ax, col, lo_c, hi_c, scale in panels:
            by = scale * as_float(b_row.get(col)) if col == "biased_rate" else b_ppl
            if math.isfinite(by):
                blo = scale * as_float(b_row.get(lo_c)) if col == "biased_rate" else by
                bhi = scale * as_float(b_row.get(hi_c)) if col == "biased_rate" else by
                ax.errorbar(
                    [0.0],
                    [by],
                    yerr=_err(np.array([by]), np.array([blo]), np.array([bhi])),
                    fmt="*",
                    color="black",
                    ms=12,
                    capsize=4,
                    label=f"baseline {baseline} (sparsity 0)",
                    zorder=4,
                )
        no_valid: list[str] = []
        series = (
            mv.filter(pl.col("method").is_not_null()).sort("series")["series"].unique(maintain_order=True).to_list()
        )
        n_series = max(n_series, len(series))
        dodge = _offsets(len(series), DODGE)  # percentage points, to separate overlapping bars
        for k, s in enumerate(series):
            g = mv.filter(pl.col("series") == s).sort("sparsity")
            meth, quant = g["method"][0], bool(g["quantized"][0])
            color = MODEL_COLORS[k % len(MODEL_COLORS)]
            x = 100 * _col(g, "sparsity") + dodge[k]
            for ax, col, lo_c, hi_c, scale in panels:
                y, lo, hi = scale * _col(g, col), scale * _col(g, lo_c), scale * _col(g, hi_c)
                if col == "biased_rate":
                    no_valid += [n for n, yy in zip(g["variant"], y) if not np.isfinite(yy)]
                ok = np.isfinite(y) & np.isfinite(x)
                by = scale * as_float(b_row.get(col)) if col == "biased_rate" else b_ppl
                if not quant and math.isfinite(by) and ok.any():  # unquantized series start at the baseline
                    ax.plot(np.r_[0.0, x[ok]], np.r_[by, y[ok]], color=color, lw=1.6, ls="-")
                elif ok.sum() > 1:
                    ax.plot(x[ok], y[ok], color=color, lw=1.6, ls="--")
                ax.errorbar(
                    x[ok],
                    y[ok],
                    yerr=_err(y[ok], lo[ok], hi[ok]),
                    fmt=marker.get(meth, "o"),
                    color=color,
                    mfc="white" if quant else color,
                    ms=7,
                    capsize=4,
                    label=s,
                )
        for ax in (ax_sr, ax_ppl):
            ax.set_xlabel("measured sparsity (% of prunable weights set to zero)")
            sp = mv["sparsity"].drop_nulls()
            ax.set_xlim(-3, max(10.0, 100 * float(sp.max()) * 1.18) if sp.len() else 103)
            ax.grid(alpha=0.3)
            ax.set_title(f"model: {model}", fontsize=10)
        ax_sr.set_ylabel("stereotype reliance\n(% of valid answers, Wilson 95% CI)")
        ax_sr.set_ylim(-2, 102)
        ax_sr.legend(fontsize=7.5, loc="upper left")
        if no_valid:
            _note(ax_sr, "not shown, no valid answers: " + ", ".join(sorted(no_valid)))
        if ppl is not None:
            ax_ppl.axhline(0, color="black", lw=0.8, ls=":")
            ax_ppl.set_ylabel(f"perplexity change vs {baseline}\n(%, paired bootstrap 95% CI)")
            ax_ppl.legend(fontsize=7.5, loc="best")
        else:
            ax_ppl.text(0.5, 0.5, "perplexity was not measured", ha="center", va="center", transform=ax_ppl.transAxes)
    dodged = f" (series dodged horizontally by up to \u00b1{DODGE:g} pp)" if n_series > 1 else ""
    fig.suptitle(title + dodged, fontsize=12)
    return save_figure(fig, out)
