"""Expected emergence: the paper's "became biased" metric over many virtual seed sets.

The study's number comes from one set of seeds, drawn with random numbers shared by every
variant (common random numbers). Its spread over seed sets is known without any forward pass:
:mod:`compbias.stats.virtual_seeds` draws the first tokens of ``analysis.expected_sets`` virtual sets
from the stored distributions of the baseline and each variant, coupled the same way, and this
module recomputes the metric for each set.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import polars as pl

from compbias.stats.metrics import ALL, KEYS
from compbias.stats.virtual_seeds import unpack_sets

EXPECTED_COLUMNS = {
    "model": pl.String,
    "variant": pl.String,
    "category": pl.String,
    "rng": pl.String,
    "n_sets": pl.Int64,
    "n_seeds": pl.Int64,
    "n_items": pl.Int64,
    "n_unbiased_base": pl.Int64,
    "n_became_biased": pl.Int64,
    "observed": pl.Float64,
    "study_first_token": pl.Float64,
    "expected_mean": pl.Float64,
    "expected_sd": pl.Float64,
    "expected_lo": pl.Float64,
    "expected_hi": pl.Float64,
    "study_quantile": pl.Float64,
    "mean_unbiased_base": pl.Float64,
    "share_continue_base": pl.Float64,
    "share_continue_variant": pl.Float64,
    "share_undetermined": pl.Float64,
    "control_for": pl.String,
    "control": pl.String,
    "control_observed": pl.Float64,
    "control_expected_mean": pl.Float64,
    "control_expected_lo": pl.Float64,
    "control_expected_hi": pl.Float64,
}
"""Columns of the ``expected_emergence`` table (see :func:`expected_emergence`)."""


def _set_rates(became: np.ndarray, unbiased: np.ndarray) -> np.ndarray:
    n = unbiased.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, became.sum(axis=0) / np.maximum(n, 1), np.nan)


def _summarise(base: pl.DataFrame, var: pl.DataFrame, n_sets: int) -> dict[str, float]:
    """The metric per virtual set for one category's items (rows aligned), and its summary."""
    bb, bc = unpack_sets(base["any_biased"], n_sets), unpack_sets(base["any_continue"], n_sets)
    vb, vc = unpack_sets(var["any_biased"], n_sets), unpack_sets(var["any_continue"], n_sets)
    unb = ~bb
    rates = _set_rates(unb & vb, unb)
    undet = unb & (bc | (~vb & vc))
    n_unb = unb.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        share_undet = np.where(n_unb > 0, undet.sum(axis=0) / np.maximum(n_unb, 1), np.nan)
    s_unb = ~base["study_any_biased"].to_numpy()
    study = float((s_unb & var["study_any_biased"].to_numpy()).sum() / s_unb.sum()) if s_unb.any() else np.nan
    fin = rates[np.isfinite(rates)]
    nan = float("nan")
    quantile = nan
    if len(fin) and np.isfinite(study):
        quantile = float(np.mean(fin < study) + 0.5 * np.mean(fin == study))
    draws = lambda t: float(t["n_continue"].sum() / t["n_draws"].sum()) if t["n_draws"].sum() else nan  # noqa: E731
    return {
        "study_first_token": study,
        "expected_mean": float(fin.mean()) if len(fin) else nan,
        "expected_sd": float(fin.std(ddof=1)) if len(fin) > 1 else nan,
        "expected_lo": float(np.quantile(fin, 0.025)) if len(fin) else nan,
        "expected_hi": float(np.quantile(fin, 0.975)) if len(fin) else nan,
        "study_quantile": quantile,
        "mean_unbiased_base": float(n_unb.mean()),
        "share_continue_base": draws(base),
        "share_continue_variant": draws(var),
        "share_undetermined": float(np.nanmean(share_undet)) if np.isfinite(share_undet).any() else nan,
    }


def expected_emergence(
    virtual: pl.DataFrame,
    items: pl.DataFrame,
    baseline: str,
    transitions: pl.DataFrame | None = None,
    controls: Mapping[str, str] | None = None,
) -> pl.DataFrame:
    """Mean and 95% range of the emergence metric over virtual seed sets, per model x variant
    (!= baseline) x category (and ``"all"``).

    ``virtual``: the :func:`compbias.stats.virtual_seeds.virtual_outcomes` tables of every model x
    variant, with ``model`` and ``variant`` columns. For virtual set ``j`` an item is unbiased at
    the baseline when none of the set's baseline draws was a biased letter, and became biased
    when one of the same seeds' variant draws was. Items without a resolved target are left out,
    as in :func:`compbias.stats.transitions.transitions`.

    Columns (:data:`EXPECTED_COLUMNS`), rates as fractions: rng, n_sets, n_seeds (per set);
    n_items; n_unbiased_base, n_became_biased, observed (the study's answers, from
    ``transitions``); study_first_token (the metric on the study seeds' first tokens, the same
    rule as the virtual sets: equal to ``observed`` when no answer needed continuing);
    expected_mean, expected_sd, expected_lo / expected_hi (2.5% and 97.5% quantiles over sets);
    study_quantile (mid-rank of study_first_token among the sets: near 0 or 1 = an unusual seed
    set); mean_unbiased_base (mean denominator); share_continue_base / share_continue_variant
    (share of virtual draws that were not a bare letter); share_undetermined (mean share of the
    baseline-unbiased items whose status rests on such a draw: the virtual metric could be that
    much higher). ``controls`` (control variant -> the variant it controls for, see
    :mod:`compbias.stats.controls`): a control's rows name that variant in ``control_for``; the
    controlled variant's rows carry the control's name, observed and expected numbers
    (``control``, ``control_observed``, ``control_expected_*``; the first control if several).
    """
    controls = dict(controls or {})
    resolved = items.filter(pl.col("biased_idx").is_not_null()).select("item_id", "category")
    rows: list[dict] = []
    if not virtual.is_empty():
        v = virtual.join(resolved, on="item_id", how="inner")
        for (model,), mv in sorted(v.partition_by("model", as_dict=True).items()):
            base = mv.filter(pl.col("variant") == baseline)
            for variant in sorted(set(mv["variant"]) - {baseline}):
                var = mv.filter(pl.col("variant") == variant)
                pair = base.join(var, on="item_id", how="inner", suffix="_v").sort("item_id")
                n_sets = int(min(pair["n_sets"].min() or 0, pair["n_sets_v"].min() or 0))
                for cat in [*sorted(set(pair["category"])), ALL]:
                    p = pair if cat == ALL else pair.filter(pl.col("category") == cat)
                    b = p.select("any_biased", "any_continue", "study_any_biased", "n_continue", "n_draws")
                    w = p.select(*(pl.col(f"{c}_v").alias(c) for c in b.columns))
                    rows.append(
                        {
                            "model": model,
                            "variant": variant,
                            "category": cat,
                            "rng": p["rng"][0],
                            "n_sets": n_sets,
                            "n_seeds": int(p["n_seeds"][0]),
                            "n_items": p.height,
                            **_summarise(b, w, n_sets),
                        }
                    )
    out = pl.DataFrame(
        rows,
        schema={
            k: EXPECTED_COLUMNS[k]
            for k in EXPECTED_COLUMNS
            if not k.startswith("control") and k not in ("n_unbiased_base", "n_became_biased", "observed")
        },
    )
    if transitions is not None and not transitions.is_empty():
        obs = transitions.select(
            *KEYS, "n_unbiased_base", "n_became_biased", observed=pl.col("pct_became_biased") / 100
        )
        out = out.join(obs, on=KEYS, how="left")
    else:
        out = out.with_columns(
            n_unbiased_base=pl.lit(None, pl.Int64),
            n_became_biased=pl.lit(None, pl.Int64),
            observed=pl.lit(None, pl.Float64),
        )
    first = {}
    for control, like in controls.items():
        first.setdefault(like, control)
    ctl = out.filter(pl.col("variant").is_in(list(controls))).select(
        "model",
        "category",
        control=pl.col("variant"),
        control_observed=pl.col("observed"),
        control_expected_mean=pl.col("expected_mean"),
        control_expected_lo=pl.col("expected_lo"),
        control_expected_hi=pl.col("expected_hi"),
    )
    out = out.with_columns(
        control_for=pl.col("variant").replace_strict(controls, default=None, return_dtype=pl.String),
        control=pl.col("variant").replace_strict(first, default=None, return_dtype=pl.String),
    ).join(ctl, on=["model", "category", "control"], how="left")
    return out.select(list(EXPECTED_COLUMNS)).cast(EXPECTED_COLUMNS).sort(KEYS)
