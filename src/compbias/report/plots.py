"""Figures of a study (matplotlib, Agg canvas): every function writes ``{out}.png`` and ``{out}.pdf``.

Inputs are the tables of the README's "Outputs and their schemas" and of :mod:`compbias.stats.analysis`. Variants are shown
in config order (``variants.parquet`` column ``order``); pruning variants (with a ``method``) are
kept apart from quantization variants. Every function tolerates NaN rates (a variant or category
without valid answers), a single variant, missing tables and empty tables: it draws what exists
and says what is missing, and never raises on data.

Figures are drawn on :class:`matplotlib.figure.Figure` with an explicit Agg canvas (no pyplot,
no global state) and written to a temporary name, then renamed, so an existing file is complete.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import polars as pl
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

from compbias.io import temp_path
from compbias.stats.metrics import ALL
from compbias.stats.variants import (pruning_variants, quantization_variants, resolve_baseline,
                                     variant_order)

DPI = 150
FORMATS = ("png", "pdf")
#: colours of the answer roles (stereotype-reliance, unknown, anti-stereotype)
ROLE_COLORS = {"biased": "#c0392b", "unknown": "#7f8c8d", "anti": "#2471a3"}
ROLE_LABELS = {"biased": "stereotype reliance (biased)", "unknown": "unknown", "anti": "anti-stereotype"}
MODEL_COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf")
METHOD_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
DODGE = 1.5
"""Largest horizontal shift (percentage points of sparsity) separating overlapping pruning series."""


# --------------------------------------------------------------------------- helpers


def _stem(out: str | Path) -> Path:
    out = Path(out)
    return out.with_suffix("") if out.suffix.lower() in (".png", ".pdf") else out


def _new_figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig: Figure, out: str | Path) -> list[Path]:
    """Write ``fig`` to ``{out}.png`` (``DPI``) and ``{out}.pdf`` via temporary names."""
    stem = _stem(out)
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = []
    for fmt in FORMATS:
        path = stem.with_name(f"{stem.name}.{fmt}")
        tmp = temp_path(path)
        fig.savefig(tmp, format=fmt, dpi=DPI)
        os.replace(tmp, path)
        paths.append(path)
    return paths


def placeholder(out: str | Path, title: str, message: str) -> list[Path]:
    """A small figure that only says ``message`` (e.g. nothing to plot)."""
    fig = _new_figure(6, 2.4)
    ax = fig.add_subplot()
    ax.set_axis_off()
    ax.set_title(title)
    ax.text(0.5, 0.5, message, ha="center", va="center", fontsize=12, wrap=True, transform=ax.transAxes)
    return save_figure(fig, out)


def _empty(df: pl.DataFrame | None) -> bool:
    return df is None or df.is_empty()


def _num(x: object) -> float:
    """``x`` as float, NaN for None/NaN/non-numbers."""
    try:
        f = float(x)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return float("nan")
    return f


def _bits_label(variants: pl.DataFrame | None, variant: str) -> str:
    """Tick label ``variant`` plus its bits (and measured sparsity when pruned)."""
    if _empty(variants) or "bits" not in variants.columns:
        return variant
    row = variants.filter(pl.col("variant") == variant)
    if row.is_empty():
        return variant
    r = row.row(0, named=True)
    bits = _num(r.get("bits"))
    label = f"{variant}\n{bits:g}-bit" if math.isfinite(bits) else variant
    sp = _num(r.get("sparsity"))
    if r.get("method") is not None and math.isfinite(sp):
        label += f"\n{100 * sp:.0f}% sparse"
    return label


def _pooled_all(rates: pl.DataFrame) -> pl.DataFrame:
    return rates.filter(pl.col("pooled") & (pl.col("category") == ALL))


def _models(*tables: pl.DataFrame | None) -> list[str]:
    out: set[str] = set()
    for t in tables:
        if not _empty(t) and "model" in t.columns:
            out |= set(t["model"].drop_nulls().to_list())
    return sorted(out)


def _err(value: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Asymmetric error bar lengths (2 x n), 0 where undefined, never negative."""
    lower = np.where(np.isfinite(lo) & np.isfinite(value), value - lo, 0.0)
    upper = np.where(np.isfinite(hi) & np.isfinite(value), hi - value, 0.0)
    return np.clip(np.vstack([lower, upper]), 0.0, None)


def _col(df: pl.DataFrame, name: str) -> np.ndarray:
    if name not in df.columns:
        return np.full(df.height, np.nan)
    return df[name].cast(pl.Float64).fill_null(float("nan")).to_numpy()


def _note(ax: Axes, text: str) -> None:
    """Append a remark (e.g. what is not shown) to the x-axis label, where it cannot hide data."""
    label = ax.get_xlabel()
    ax.set_xlabel(f"{label}\n[{text}]" if label else f"[{text}]")


_LABEL_OFFSETS = ((5, 5, "left", "bottom"), (5, -5, "left", "top"), (-5, 5, "right", "bottom"),
                  (-5, -5, "right", "top"), (0, 9, "center", "bottom"), (0, -9, "center", "top"))  # fmt: skip


def place_labels(ax: Axes, points: Sequence[tuple[float, float, str, str]], fontsize: float = 8.5) -> None:
    """Label points ``(x, y, text, color)``, trying a few offsets per label to avoid overlapping
    the labels already placed (greedy; good enough for a dozen points)."""
    fig = ax.get_figure()
    fig.canvas.draw()  # settle the autoscaled limits and the constrained layout first
    renderer = fig.canvas.get_renderer()
    placed: list = []
    for x, y, text, color in sorted(points, key=lambda p: (-p[1], p[0])):
        best = None
        for dx, dy, ha, va in _LABEL_OFFSETS:
            ann = ax.annotate(text, (x, y), xytext=(dx, dy), textcoords="offset points", ha=ha, va=va,
                              fontsize=fontsize, color=color)  # fmt: skip
            box = ann.get_window_extent(renderer)
            overlap = sum(box.overlaps(o) for o in placed)
            if best is None or overlap < best[0]:
                if best is not None:
                    best[1].remove()
                best = (overlap, ann, box)
            else:
                ann.remove()
            if overlap == 0:
                break
        placed.append(best[2])


def _offsets(n: int, width: float = 0.25) -> np.ndarray:
    """Horizontal offsets spreading ``n`` series around a category position."""
    return np.zeros(1) if n <= 1 else np.linspace(-width, width, n)


# --------------------------------------------------------------------------- dose response


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
            ax.errorbar(x, y, yerr=_err(y, lo, hi), color=color, marker="o", ms=6, lw=1.8, capsize=4,
                        label=f"{model}: pooled seeds, Wilson 95% CI")  # fmt: skip
            seeds = all_rows.filter(~pl.col("pooled") & (pl.col("model") == model))
            if not seeds.is_empty():
                sx = seeds["variant"].replace_strict(pos, default=None).to_numpy().astype(float) + offs[k]
                sx = sx + np.random.default_rng(0).uniform(-0.06, 0.06, len(sx))
                ax.scatter(sx, 100 * _col(seeds, f"{role}_rate"), s=16, facecolors="none", edgecolors=color,
                           alpha=0.7, linewidths=0.9, label=f"{model}: single seeds", zorder=3)  # fmt: skip
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


# --------------------------------------------------------------------------- perplexity vs bias


def _sr_change(rates: pl.DataFrame, baseline: str) -> pl.DataFrame:
    """Per model x variant: pooled all-category SR of the variant and its baseline, in %."""
    p = _pooled_all(rates).select("model", "variant", biased=100 * pl.col("biased_rate"))
    base = p.filter(pl.col("variant") == baseline).select("model", biased_base="biased")
    return p.join(base, on="model", how="left").with_columns(d_sr=pl.col("biased") - pl.col("biased_base"))


PPL_LINEAR = 1.0
"""Perplexity changes (%) within +- this are drawn on a linear scale, larger ones logarithmically."""


def _pct_tick(x: float, _pos: object = None) -> str:
    return "0" if x == 0 else f"{x:+g}%"


def perplexity_vs_bias(
    perplexity: pl.DataFrame | None, rates: pl.DataFrame, out: str | Path,
    variants: pl.DataFrame | None = None, baseline: str | None = None,
) -> list[Path]:  # fmt: skip
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
            x, y = _num(r["pct_change"]), _num(r["d_sr"])
            if not (math.isfinite(x) and math.isfinite(y)):
                missing.append(f"{model}/{r['variant']}")
                continue
            lo, hi = _num(r["pct_lo"]), _num(r["pct_hi"])
            xerr = _err(np.array([x]), np.array([lo]), np.array([hi]))
            marker = "^" if r["variant"] in pruned else "o"
            ax.errorbar([x], [y], xerr=xerr, fmt=marker, color=color, ms=7, capsize=4)
            labels.append((x, y, r["variant"], color))
    ax.set_xscale("symlog", linthresh=PPL_LINEAR, linscale=0.6)
    ax.xaxis.set_major_formatter(FuncFormatter(_pct_tick))
    ax.margins(x=0.12, y=0.1)
    place_labels(ax, labels)
    for k, model in enumerate(models):
        ax.plot([], [], "o", color=MODEL_COLORS[k % len(MODEL_COLORS)], label=f"model {model}")
    if pruned:
        ax.plot([], [], "o", color="#777777", label="quantization variant")
        ax.plot([], [], "^", color="#777777", label="pruning variant")
    ax.legend(fontsize=8, loc="best")
    ax.set_xlabel(f"perplexity change vs {baseline} (%, paired bootstrap 95% CI; log scale beyond "
                  f"\u00b1{PPL_LINEAR:g}%)")
    ax.set_ylabel(f"stereotype-reliance change vs {baseline}\n(percentage points of valid answers)")
    ax.grid(alpha=0.3)
    if missing:
        _note(ax, "not shown (no valid answers or no perplexity): " + ", ".join(sorted(missing)))
    ax.set_title(title, fontsize=12)
    return save_figure(fig, out)


# --------------------------------------------------------------------------- category heatmap


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
        lookup = {(r["category"], r["variant"]): _num(r["d"]) for r in m.iter_rows(named=True)}
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


# --------------------------------------------------------------------------- pruning


def pruning(
    rates: pl.DataFrame, perplexity: pl.DataFrame | None, variants: pl.DataFrame, out: str | Path,
    baseline: str | None = None,
) -> list[Path]:  # fmt: skip
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
            by = scale * _num(b_row.get(col)) if col == "biased_rate" else b_ppl
            if math.isfinite(by):
                blo = scale * _num(b_row.get(lo_c)) if col == "biased_rate" else by
                bhi = scale * _num(b_row.get(hi_c)) if col == "biased_rate" else by
                ax.errorbar([0.0], [by], yerr=_err(np.array([by]), np.array([blo]), np.array([bhi])), fmt="*",
                            color="black", ms=12, capsize=4, label=f"baseline {baseline} (sparsity 0)", zorder=4)  # fmt: skip
        no_valid: list[str] = []
        series = mv.filter(pl.col("method").is_not_null()).sort("series")["series"].unique(maintain_order=True).to_list()
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
                by = scale * _num(b_row.get(col)) if col == "biased_rate" else b_ppl
                if not quant and math.isfinite(by) and ok.any():  # unquantized series start at the baseline
                    ax.plot(np.r_[0.0, x[ok]], np.r_[by, y[ok]], color=color, lw=1.6, ls="-")
                elif ok.sum() > 1:
                    ax.plot(x[ok], y[ok], color=color, lw=1.6, ls="--")
                ax.errorbar(x[ok], y[ok], yerr=_err(y[ok], lo[ok], hi[ok]), fmt=marker.get(meth, "o"), color=color,
                            mfc="white" if quant else color, ms=7, capsize=4, label=s)  # fmt: skip
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
