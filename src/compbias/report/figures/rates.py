"""The dose-response figure: answer-role rates (category ``all``) vs precision, per model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from compbias.report.figures.common import (
    MODEL_COLORS,
    ROLE_COLORS,
    ROLE_LABELS,
    _bits_label,
    _col,
    _empty,
    _err,
    _models,
    _new_figure,
    _note,
    _offsets,
    placeholder,
    save_figure,
)
from compbias.stats.metrics import ALL
from compbias.stats.variants import quantization_variants


def dose_response(rates: pl.DataFrame, variants: pl.DataFrame, out: str | Path) -> list[Path]:
    """Stereotype-reliance, unknown and anti rates (category ``all``) vs precision, per model.

    One panel per role; x = quantization variants in config order (baseline first); one line per
    model with Wilson 95% intervals of the seed-pooled rate and the per-seed rates as small
    points. Pruning variants are left out (see :func:`pruning`).
    """
    title = "Answer roles vs precision (category: all)"
    if _empty(rates) or _empty(variants):
        return placeholder(out, title, "no rates to plot")
    order = quantization_variants(variants)
    present = set(rates["variant"].unique().to_list())
    order = [v for v in order if v in present]
    if not order:
        return placeholder(out, title, "no quantization variants with answers")
    pos = {v: i for i, v in enumerate(order)}
    models = _models(rates)
    all_rows = rates.filter((pl.col("category") == ALL) & pl.col("variant").is_in(order))
    fig = _new_figure(min(18.0, max(10.5, 1.5 + 0.75 * len(order) * 3)), 4.3)
    axes = fig.subplots(1, 3, sharey=True)
    offs = _offsets(len(models), 0.12)
    no_valid: set[str] = set()
    for ax, role in zip(axes, ("biased", "unknown", "anti")):
        for k, model in enumerate(models):
            color = MODEL_COLORS[k % len(MODEL_COLORS)]
            pooled = all_rows.filter(pl.col("pooled") & (pl.col("model") == model))
            pooled = pooled.with_columns(_x=pl.col("variant").replace_strict(pos, default=None)).sort("_x")
            x = pooled["_x"].to_numpy().astype(float) + offs[k]
            y = 100 * _col(pooled, f"{role}_rate")
            lo, hi = 100 * _col(pooled, f"{role}_lo"), 100 * _col(pooled, f"{role}_hi")
            no_valid |= {f"{model}/{v}" for v, yy in zip(pooled["variant"], y) if not np.isfinite(yy)}
            ax.errorbar(
                x,
                y,
                yerr=_err(y, lo, hi),
                color=color,
                marker="o",
                ms=6,
                lw=1.8,
                capsize=4,
                label=f"{model}: pooled seeds, Wilson 95% CI",
            )
            seeds = all_rows.filter(~pl.col("pooled") & (pl.col("model") == model))
            if not seeds.is_empty():
                sx = seeds["variant"].replace_strict(pos, default=None).to_numpy().astype(float) + offs[k]
                sx = sx + np.random.default_rng(0).uniform(-0.06, 0.06, len(sx))
                ax.scatter(
                    sx,
                    100 * _col(seeds, f"{role}_rate"),
                    s=16,
                    facecolors="none",
                    edgecolors=color,
                    alpha=0.7,
                    linewidths=0.9,
                    label=f"{model}: single seeds",
                    zorder=3,
                )
        ax.set_title(ROLE_LABELS[role], color=ROLE_COLORS[role], fontsize=11)
        ax.set_xticks(range(len(order)), [_bits_label(variants, v) for v in order], fontsize=8.5)
        ax.set_xlim(-0.5, len(order) - 0.5)
        ax.set_xlabel("precision (config order, baseline first)")
        ax.grid(axis="y", alpha=0.3)
    axes[0].set_ylabel("rate (% of valid answers)")
    axes[0].set_ylim(-2, 102)
    handles, labels = axes[0].get_legend_handles_labels()
    axes[-1].legend(handles, labels, fontsize=7.5, loc="upper right")
    if no_valid:
        _note(axes[1], "not shown, no valid answers: " + ", ".join(sorted(no_valid)))
    fig.suptitle(title + "; valid = biased + anti + unknown", fontsize=12)
    return save_figure(fig, out)
