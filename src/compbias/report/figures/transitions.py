"""The transitions figure: emergence with its expected range, the perturbation controls and the
direction of the moves (tables of :mod:`compbias.stats.transitions`, :mod:`compbias.stats.emergence` and
:mod:`compbias.stats.direction`). Same conventions as :mod:`compbias.report.figures.common`."""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import polars as pl
from matplotlib.axes import Axes

from compbias.report.figures.common import (
    ROLE_COLORS,
    _bits_label,
    _col,
    _empty,
    _err,
    _models,
    _new_figure,
    placeholder,
    save_figure,
)
from compbias.report.numbers import UNDETERMINED, as_float
from compbias.stats.metrics import ALL
from compbias.stats.variants import pruning_variants, study_order

TITLE = "Became biased: study seeds vs the expected range over virtual seed sets,\nand the direction of the moves"
CONTROL_COLOR = "#e6b0aa"


def _order(present: list[str], variants: pl.DataFrame | None, controls: Mapping[str, str]) -> tuple[list[str], int]:
    """Variants to show (:func:`compbias.stats.variants.study_order`: quantization, then pruning;
    each control right after the variant it controls for) and the number of non-pruning ones."""
    order = study_order(variants, sorted(present), controls=controls)
    pruned = set(pruning_variants(variants))
    return order, len([v for v in order if v not in pruned])


def _label(variants: pl.DataFrame | None, v: str, controls: Mapping[str, str]) -> str:
    return f"{v}\ncontrol of {controls[v]}" if v in controls else _bits_label(variants, v)


def _annotate(ax: Axes, x: np.ndarray, y: np.ndarray) -> None:
    for xx, val in zip(x, y):
        ax.annotate(
            "n/a" if not np.isfinite(val) else f"{val:.1f}",
            (xx, val if np.isfinite(val) else 0),
            xytext=(0, 2),
            textcoords="offset points",
            ha="center",
            va="bottom",
            fontsize=7,
        )


def _emergence_panel(
    ax: Axes,
    t: pl.DataFrame,
    e: pl.DataFrame | None,
    floors: pl.DataFrame | None,
    pos: dict[str, int],
    controls: Mapping[str, str],
) -> list[str]:
    """Bars, expected ranges and floors; returns the variants whose expected range is not drawn."""
    x = t["variant"].replace_strict(pos).to_numpy().astype(float)
    y = _col(t, "pct_became_biased")
    is_ctl = np.array([v in controls for v in t["variant"]])
    w = 0.6
    ax.bar(x[~is_ctl], y[~is_ctl], w, color=ROLE_COLORS["biased"], label="became biased (study seeds)")
    if is_ctl.any():
        ax.bar(
            x[is_ctl],
            y[is_ctl],
            w,
            color=CONTROL_COLOR,
            hatch="//",
            edgecolor=ROLE_COLORS["biased"],
            label="perturbation control (same-size random weight noise)",
        )
    _annotate(ax, x - w / 4, y)
    tops = [*y, 5.0]
    vague: list[str] = []
    if e is not None and e.height:
        e = e.filter(pl.col("variant").is_in(list(pos)))
        n_sets = int(e["n_sets"].max() or 0)
        if "share_undetermined" in e.columns:  # most items rest on draws that need continuing
            undetermined = pl.col("share_undetermined") > UNDETERMINED
            vague = [v for v in pos if v in set(e.filter(undetermined)["variant"])]
            e = e.filter(~undetermined)
        if e.height:
            ex = e["variant"].replace_strict(pos).to_numpy().astype(float)
            m, lo, hi = (100 * _col(e, c) for c in ("expected_mean", "expected_lo", "expected_hi"))
            ax.errorbar(
                ex + w / 4,
                m,
                yerr=_err(m, lo, hi),
                fmt="D",
                color="black",
                ms=5,
                capsize=4,
                zorder=4,
                label=f"expected over {n_sets} virtual seed sets: mean, 95% range",
            )
            tops += [*hi]
    if floors is not None and floors.height:
        for col, ls, color, name in (
            ("floor_analytic", "--", "#555555", "analytic"),
            ("floor_placebo", ":", "#8e44ad", "placebo seeds"),
        ):
            f = as_float(floors[col][0])
            if math.isfinite(f):
                ax.axhline(100 * f, color=color, ls=ls, lw=1.2, label=f"floor for independent re-runs ({name})")
                tops.append(100 * f)
    ax.set_ylabel("became biased\n(% of baseline-unbiased items)")
    ax.set_ylim(0, min(105.0, 1.15 * float(np.nanmax(np.asarray(tops, float))) + 4))
    ax.grid(axis="y", alpha=0.3)
    return vague


def _direction_panel(ax: Axes, d: pl.DataFrame | None, pos: dict[str, int], population: str, baseline: str) -> None:
    if d is None or not d.height:
        ax.text(0.5, 0.5, "no direction-test table", ha="center", va="center", transform=ax.transAxes)
        return
    d = d.filter((pl.col("population") == population) & pl.col("variant").is_in(list(pos)))
    x = d["variant"].replace_strict(pos).to_numpy().astype(float)
    w = 0.36
    yb, ya = 100 * _col(d, "share_to_biased"), 100 * _col(d, "share_to_anti")
    ax.bar(x - w / 2, yb, w, color=ROLE_COLORS["biased"], label="moved to biased")
    ax.bar(x + w / 2, ya, w, color=ROLE_COLORS["anti"], label="moved to anti-stereotyped")
    top = float(np.nanmax(np.r_[yb, ya, 5.0]))
    for xx, b, a, q in zip(x, yb, ya, _col(d, "q_value")):
        text = ("q<0.001" if q < 0.001 else f"q={q:.2g}") if np.isfinite(q) else "q n/a"
        ax.annotate(
            text,
            (xx, np.nanmax([b, a, 0.0])),
            xytext=(0, 3),
            textcoords="offset points",
            ha="center",
            va="bottom",
            fontsize=7,
        )
    ax.set_ylim(0, 1.2 * top + 8)
    what = "no biased answer" if population == "unbiased" else "no biased and no anti answer"
    ax.set_ylabel(f"% of {baseline}-{population} items\n({what} at baseline)")
    n = sorted(set(d["n_items"].to_list()))
    items = f"the {n[0]}" if len(n) == 1 else "the"
    ax.set_title(
        f"direction of the moves among {items} {baseline}-{population} items"
        + (
            " (exact paired test, BH q)"
            if population == "unbiased"
            else " (symmetric: equal if only 'unknown' answers became rarer)"
        ),
        fontsize=9,
    )
    ax.grid(axis="y", alpha=0.3)


def emergence_figure(
    transitions: pl.DataFrame,
    out: str | Path,
    *,
    expected: pl.DataFrame | None = None,
    direction: pl.DataFrame | None = None,
    noise_floor: pl.DataFrame | None = None,
    variants: pl.DataFrame | None = None,
    controls: Mapping[str, str] | None = None,
    baseline: str = "baseline",
) -> list[Path]:
    """Per model (one column), category ``all``, variants in config order (quantization, then
    pruning; each perturbation control, hatched, right after the variant it controls for):

    * top: % of baseline-unbiased items that became biased with the study seeds (bars), the
      expected value and 95% range over virtual seed sets (``expected_emergence``), and the floors
      for independent re-runs of the baseline (``noise_floor``; horizontal lines);
    * middle / bottom: among baseline-unbiased / baseline-unknown items, the % that moved to the
      biased vs to the anti-stereotyped option, with the direction test's q-value
      (``direction_tests``).
    """
    controls = dict(controls or {})
    if _empty(transitions):
        return placeholder(out, TITLE.replace("\n", " "), "no transitions (no variant besides the baseline?)")
    tr = transitions.filter(pl.col("category") == ALL)
    pick = lambda df: df.filter(pl.col("category") == ALL) if not _empty(df) else None  # noqa: E731
    ee, dt, nf = pick(expected), pick(direction), pick(noise_floor)
    models = _models(tr)
    order, n_quant = _order(tr["variant"].unique().to_list(), variants, controls)
    pos = {v: i for i, v in enumerate(order)}
    fig = _new_figure(max(9.0, len(models) * max(6.0, 1.6 + 1.1 * len(order))), 11.0)
    axes = fig.subplots(3, len(models), sharex=True, squeeze=False)
    for j, model in enumerate(models):
        sel = lambda df, model=model: df.filter(pl.col("model") == model) if df is not None else None  # noqa: E731
        t = tr.filter((pl.col("model") == model) & pl.col("variant").is_in(order))
        vague = _emergence_panel(axes[0, j], t, sel(ee), sel(nf), pos, controls)
        n_unb = sorted(set(t["n_unbiased_base"].to_list()))
        items = f"{n_unb[0]} {baseline}-unbiased items" if len(n_unb) == 1 else f"{baseline}-unbiased items vary"
        title = f"model: {model} ({items}); the floors hold for independent re-runs only, not for the coupled draws"
        if vague:
            which = "any variant" if len(vague) == len(order) else ", ".join(vague)
            title += f"\nexpected range not drawn for {which}: most first tokens need continuing (undetermined)"
        axes[0, j].set_title(title, fontsize=9)
        for row, pop in ((1, "unbiased"), (2, "unknown")):
            _direction_panel(axes[row, j], sel(dt), pos, pop, baseline)
        bottom = axes[2, j]
        bottom.set_xticks(range(len(order)), [_label(variants, v, controls) for v in order], fontsize=8)
        bottom.set_xlim(-0.6, len(order) - 0.4)
        bottom.set_xlabel("variant" + (" (quantization | pruning)" if 0 < n_quant < len(order) else ""))
        if 0 < n_quant < len(order):
            for ax in axes[:, j]:
                ax.axvline(n_quant - 0.5, color="#999999", lw=1, ls="-.")
    handles: dict = {}
    for ax in axes[:, 0]:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(lab, h)
    fig.legend(list(handles.values()), list(handles), loc="outside lower center", ncols=3, fontsize=8)
    fig.suptitle(TITLE + " (category: all)", fontsize=12)
    return save_figure(fig, out)
