"""The category heatmap: the stereotype-reliance change vs the baseline per category x variant."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from compbias.report.figures.common import _empty, _models, _new_figure, placeholder, save_figure
from compbias.report.numbers import as_float
from compbias.stats.metrics import ALL
from compbias.stats.variants import pruning_variants, resolve_baseline, variant_order


def category_heatmap(
    rates: pl.DataFrame, out: str | Path, variants: pl.DataFrame | None = None, baseline: str | None = None
) -> list[Path]:
    """Category x variant heatmap of the stereotype-reliance change vs the baseline (percentage
    points of valid answers; seeds pooled), cells annotated; one panel per model. Cells without
    valid answers are grey ("n/a")."""
    title = "Stereotype-reliance change vs baseline by category"
    if _empty(rates):
        return placeholder(out, title, "no rates to plot")
    present = rates["variant"].unique().to_list()
    baseline = resolve_baseline(variants, baseline, present)
    pooled = rates.filter(pl.col("pooled"))
    base = pooled.filter(pl.col("variant") == baseline).select("model", "category", biased_base="biased_rate")
    d = (
        pooled.filter(pl.col("variant") != baseline)
        .join(base, on=["model", "category"], how="left")
        .with_columns(d=100 * (pl.col("biased_rate") - pl.col("biased_base")))
    )
    if d.is_empty():
        return placeholder(out, title, "only the baseline variant: nothing to compare")
    pruned = [v for v in pruning_variants(variants) if v in present]
    cols = [v for v in variant_order(variants, present) if v in present and v != baseline and v not in pruned]
    cols += [v for v in pruned if v != baseline]
    cats = sorted(c for c in d["category"].unique().to_list() if c != ALL)
    rows = cats + ([ALL] if ALL in d["category"].to_list() else [])
    models = _models(d)
    vals = d["d"].fill_null(float("nan")).to_numpy()
    vmax = float(np.nanmax(np.abs(vals))) if np.isfinite(vals).any() else 1.0
    vmax = max(vmax, 1.0)
    fig = _new_figure(max(6.0, 1.8 + 0.95 * len(cols)), 0.6 + (0.9 + 0.5 * len(rows)) * len(models))
    axes = fig.subplots(len(models), 1, squeeze=False)[:, 0]
    im = None
    for ax, model in zip(axes, models):
        m = d.filter(pl.col("model") == model)
        grid = np.full((len(rows), len(cols)), np.nan)
        lookup = {(r["category"], r["variant"]): as_float(r["d"]) for r in m.iter_rows(named=True)}
        for i, c in enumerate(rows):
            for j, v in enumerate(cols):
                grid[i, j] = lookup.get((c, v), np.nan)
        ax.set_facecolor("#d9d9d9")
        im = ax.imshow(np.ma.masked_invalid(grid), cmap="RdBu_r", vmin=-vmax, vmax=vmax, aspect="auto")
        for i in range(len(rows)):
            for j in range(len(cols)):
                val = grid[i, j]
                text = "n/a" if not np.isfinite(val) else f"{val:+.1f}"
                color = "white" if np.isfinite(val) and abs(val) > 0.6 * vmax else "black"
                ax.text(j, i, text, ha="center", va="center", fontsize=8.5, color=color)
        ax.set_xticks(range(len(cols)), cols, fontsize=8.5, rotation=30, ha="right")
        ax.set_yticks(range(len(rows)), rows, fontsize=9)
        if ALL in rows and len(rows) > 1:
            ax.axhline(len(rows) - 1.5, color="black", lw=1.2)
        if pruned and len(cols) > len(pruned):
            ax.axvline(len(cols) - len(pruned) - 0.5, color="black", lw=1.2, ls="-.")
        ax.set_title(f"model: {model} (baseline {baseline}; grey n/a = no valid answers)", fontsize=10)
        ax.set_ylabel("category")
    axes[-1].set_xlabel("variant" + (" (quantization | pruning)" if pruned and len(cols) > len(pruned) else ""))
    if im is not None:
        fig.colorbar(im, ax=list(axes), label="stereotype-reliance change\n(percentage points)", shrink=0.9)
    fig.suptitle(title, fontsize=12)
    return save_figure(fig, out)
