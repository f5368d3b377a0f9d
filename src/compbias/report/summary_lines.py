"""The lines of ``summary.md`` about one model x variant: the headline (emergence, perplexity
change, stereotype reliance and invalid answers) and its sub-bullets (expected emergence over
virtual seed sets, the perturbation control, the direction test and the floor for independent
re-runs), read from the analysis tables (see :func:`compbias.report.summary.summary_markdown`)."""

from __future__ import annotations

from collections.abc import Mapping

import polars as pl

from compbias.report.numbers import UNDETERMINED, finite, fixed, interval, pct, stat
from compbias.stats.metrics import ALL

Tables = Mapping[str, "pl.DataFrame | None"]
"""Table name -> DataFrame (None or absent when not computed); ``controls`` may hold a mapping."""


def _row(df: pl.DataFrame | None, **eq: object) -> dict | None:
    """The first row of ``df`` matching ``eq`` (columns that ``df`` lacks are ignored), or None."""
    if df is None or df.is_empty():
        return None
    for k, v in eq.items():
        if k in df.columns:
            df = df.filter(pl.col(k) == v)
    return df.row(0, named=True) if df.height else None


def _controls(tables: Tables) -> dict[str, str]:
    """Perturbation control -> the variant it controls for: ``tables["controls"]`` (a mapping, from
    the config) or else the expected_emergence table's ``control_for``."""
    given = tables.get("controls")
    if isinstance(given, Mapping):
        return dict(given)  # type: ignore[arg-type]
    ee = tables.get("expected_emergence")
    if ee is None or ee.is_empty() or "control_for" not in ee.columns:
        return {}
    return dict(ee.filter(pl.col("control_for").is_not_null()).select("variant", "control_for").unique().iter_rows())


def headline_line(tables: Tables, model: str, variant: str, baseline: str, info: dict | None = None) -> str:
    """``at {variant}, X% (k/n) of {baseline}-unbiased items became biased; perplexity rose W%
    [lo, hi]; stereotype reliance A% -> B%; invalid answers C% -> D%`` (the nulls follow in
    :func:`detail_lines`)."""
    name = variant
    like = _controls(tables).get(variant)
    if like is not None:
        name += f" (perturbation control for {like})"
    if info and info.get("method") is not None:
        name += f" ({info['method']}, {pct(info.get('sparsity'))} sparse"
        bits = info.get("bits")
        name += f", {fixed(bits, 0)}-bit)" if finite(bits) and float(bits) < 16 else ")"
    t = _row(tables.get("transitions"), model=model, variant=variant, category=ALL)
    if t is None:
        parts = [f"at {name}, emergence n/a"]
    else:
        parts = [
            f"at {name}, {pct(t['pct_became_biased'], 1)} ({t['n_became_biased']}/{t['n_unbiased_base']}) "
            f"of {baseline}-unbiased items became biased"
        ]
    ppl_tbl = tables.get("perplexity")
    p = _row(ppl_tbl, model=model, variant=variant)
    if ppl_tbl is None:
        parts.append("perplexity not measured")
    elif p is None or not finite(p["pct_change"]):
        parts.append("perplexity change n/a")
    elif float(p["pct_change"]) >= 0:
        parts.append(f"perplexity rose {pct(p['pct_change'], 1)} {interval(p['pct_lo'], p['pct_hi'], 1)}")
    else:  # the interval of the fall, so that its signs match the number
        fall_lo = -float(p["pct_hi"]) if finite(p["pct_hi"]) else None
        fall_hi = -float(p["pct_lo"]) if finite(p["pct_lo"]) else None
        parts.append(f"perplexity fell {pct(-float(p['pct_change']), 1)} {interval(fall_lo, fall_hi, 1)}")
    rates = tables.get("rates")
    pooled = rates.filter(pl.col("pooled")) if rates is not None else None
    b = _row(pooled, model=model, variant=baseline, category=ALL)
    r = _row(pooled, model=model, variant=variant, category=ALL)
    biased_b, biased_v = pct(b and b["biased_rate"]), pct(r and r["biased_rate"])
    if r is not None and r.get("n_valid") == 0:
        biased_v += " (no valid answers)"
    parts.append(f"stereotype reliance {biased_b} -> {biased_v}")
    parts.append(f"invalid answers {pct(b and b['invalid_rate'])} -> {pct(r and r['invalid_rate'])}")
    return "; ".join(parts)


def _expected_text(e: dict, baseline: str, variant: str) -> str:
    cont = (
        f"first tokens that need continuing, counted as their own outcome: {pct(e['share_continue_base'])} "
        f"of {baseline} draws, {pct(e['share_continue_variant'])} of {variant} draws "
        f"({pct(e['share_undetermined'])} of the items undetermined)"
    )
    if finite(e["share_undetermined"]) and float(e["share_undetermined"]) > UNDETERMINED:
        return f"expected n/a over {e['n_sets']} virtual seed sets (rng {e['rng']}): {cont}"
    text = (
        f"expected {pct(e['expected_mean'])} {interval(e['expected_lo'], e['expected_hi'])} over "
        f"{e['n_sets']} virtual seed sets of {e['n_seeds']} (rng {e['rng']}); the study's seeds by the same "
        f"first-token rule: {pct(e['study_first_token'])}"
    )
    if finite(e["study_quantile"]):
        text += f" (percentile {fixed(100 * float(e['study_quantile']), 0)})"
    return f"{text}; {cont}"


def _direction_text(d: pl.DataFrame | None, model: str, variant: str, baseline: str) -> str:
    parts = []
    for pop in ("unbiased", "unknown"):
        r = _row(d, model=model, variant=variant, category=ALL, population=pop)
        if r is None:
            continue
        parts.append(
            f"of {r['n_items']} {baseline}-{pop} items {r['n_to_biased']} moved to biased, "
            f"{r['n_to_anti']} to anti (one way only: {r['n_biased_only']} vs {r['n_anti_only']}; "
            f"exact paired {stat('p', r['p_value'])}, {stat('q', r['q_value'])})"
        )
    return "direction: " + ("; ".join(parts) if parts else "n/a")


def detail_lines(tables: Tables, model: str, variant: str, baseline: str) -> list[str]:
    """Sub-bullets of a headline: expected emergence over virtual seed sets, the perturbation
    control's emergence, the direction test and the floor for independent re-runs."""
    out = []
    ee = tables.get("expected_emergence")
    e = _row(ee, model=model, variant=variant, category=ALL)
    out.append(_expected_text(e, baseline, variant) if e is not None else "expected emergence n/a")
    for control, like in _controls(tables).items():
        if like != variant:
            continue
        c = _row(ee, model=model, variant=control, category=ALL)
        t = _row(tables.get("transitions"), model=model, variant=control, category=ALL)
        obs = f"{pct(t['pct_became_biased'], 1)} ({t['n_became_biased']}/{t['n_unbiased_base']})" if t else "n/a"
        exp = ""
        if c is not None and not (finite(c["share_undetermined"]) and float(c["share_undetermined"]) > UNDETERMINED):
            exp = f", expected {pct(c['expected_mean'])} {interval(c['expected_lo'], c['expected_hi'])}"
        mine = pct(e["observed"]) if e is not None else "n/a"
        out.append(f"{variant} {mine} vs perturbation control {control} {obs} became biased{exp}")
    out.append(_direction_text(tables.get("direction_tests"), model, variant, baseline))
    f = _row(tables.get("noise_floor"), model=model, category=ALL)
    out.append(
        f"floor for independent re-runs of {baseline} (fresh seeds, not coupled; a different null): "
        + (f"{pct(f['floor_analytic'])} analytic, {pct(f['floor_placebo'])} placebo" if f else "n/a")
    )
    return ["  - " + x for x in out]
