"""What every figure of :mod:`compbias.report.figures` shares: the canvas, :func:`save_figure`,
:func:`placeholder`, the colours and labels, and the small helpers the figure modules import
(underscored: internal to the subpackage). Every figure function writes ``{out}.png`` and
``{out}.pdf``.

Inputs are the tables of docs/outputs.md and of :mod:`compbias.stats.analysis`. Variants are shown
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

from compbias.io import temp_path
from compbias.report.numbers import as_float
from compbias.stats.metrics import ALL

DPI = 150
FORMATS = ("png", "pdf")
#: colours of the answer roles (stereotype-reliance, unknown, anti-stereotype)
ROLE_COLORS = {"biased": "#c0392b", "unknown": "#7f8c8d", "anti": "#2471a3"}
ROLE_LABELS = {"biased": "stereotype reliance (biased)", "unknown": "unknown", "anti": "anti-stereotype"}
MODEL_COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf")
METHOD_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")


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


def _bits_label(variants: pl.DataFrame | None, variant: str) -> str:
    """Tick label ``variant`` plus its bits (and measured sparsity when pruned)."""
    if _empty(variants) or "bits" not in variants.columns:
        return variant
    row = variants.filter(pl.col("variant") == variant)
    if row.is_empty():
        return variant
    r = row.row(0, named=True)
    bits = as_float(r.get("bits"))
    label = f"{variant}\n{bits:g}-bit" if math.isfinite(bits) else variant
    sp = as_float(r.get("sparsity"))
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


_LABEL_OFFSETS = (
    (5, 5, "left", "bottom"),
    (5, -5, "left", "top"),
    (-5, 5, "right", "bottom"),
    (-5, -5, "right", "top"),
    (0, 9, "center", "bottom"),
    (0, -9, "center", "top"),
)


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
            ann = ax.annotate(
                text, (x, y), xytext=(dx, dy), textcoords="offset points", ha=ha, va=va, fontsize=fontsize, color=color
            )
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
