"""``results/summary.md``: the headline numbers of a study, one line per model x variant.

Everything is read from the tables of the README's "Outputs and their schemas" and :mod:`compbias.stats.analysis` (no
statistics are recomputed, except the odds ratio of the pruning slope per +10 points of
sparsity, a power of the table's odds ratio). Percentages have one decimal; NaN or missing
values print as ``n/a``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import polars as pl

from compbias.stats.controls import perturbation_controls
from compbias.stats.metrics import ALL

Tables = Mapping[str, "pl.DataFrame | None"]


# --------------------------------------------------------------------------- formatting


def _f(x: object, digits: int = 1) -> str:
    """``x`` with ``digits`` decimals; ``n/a`` for None/NaN; never ``-0.0``."""
    try:
        v = float(x)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return "n/a"
    if not math.isfinite(v):
        return "n/a"
    s = f"{v:.{digits}f}"
    return s[1:] if s.startswith("-") and float(s) == 0 else s


def _pct(x: object, scale: float = 100.0) -> str:
    """A percentage with one decimal (``x`` a fraction when ``scale`` is 100, else already in %)."""
    s = _f(None if x is None else float(x) * scale) if _finite(x) else "n/a"
    return s if s == "n/a" else s + "%"


def _interval(lo: object, hi: object, scale: float = 100.0) -> str:
    if not (_finite(lo) and _finite(hi)):
        return "[n/a]"
    return f"[{_f(float(lo) * scale)}, {_f(float(hi) * scale)}]"


def _p(p: object) -> str:
    return f"p = {float(p):.3g}" if _finite(p) else "p = n/a"


def _or(x: object) -> str:
    return _f(x, 3)


def _finite(x: object) -> bool:
    try:
        return x is not None and math.isfinite(float(x))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False


def _row(df: pl.DataFrame | None, **eq: object) -> dict | None:
    """The first row of ``df`` matching ``eq`` (columns that ``df`` lacks are ignored), or None."""
    if df is None or df.is_empty():
        return None
    for k, v in eq.items():
        if k in df.columns:
            df = df.filter(pl.col(k) == v)
    return df.row(0, named=True) if df.height else None


def _get(tables: Tables, name: str) -> pl.DataFrame | None:
    t = tables.get(name)
    return None if t is None else t


# --------------------------------------------------------------------------- variants


def _variant_info(tables: Tables, baseline: str) -> tuple[list[str], dict[str, list[str]], dict]:
    """Models, per-model non-baseline variants in config order (quantization first, then pruning)
    and ``(model, variant) -> variants row``."""
    variants = _get(tables, "variants")
    rows: dict = {}
    seen: dict[str, list[str]] = {}
    if variants is not None and not variants.is_empty():
        order = variants.sort("order", "variant") if "order" in variants.columns else variants.sort("variant")
        for r in order.iter_rows(named=True):
            rows[(r["model"], r["variant"])] = r
            seen.setdefault(r["model"], []).append(r["variant"])
    for name in ("transitions", "rates", "expected_emergence"):  # variants not in the variants table
        t = _get(tables, name)
        if t is not None and not t.is_empty():
            for m, v in t.select("model", "variant").unique().sort("model", "variant").iter_rows():
                if v not in seen.setdefault(m, []):
                    seen[m].append(v)
    per_model = {}
    controls = _controls(tables)
    for m, vs in seen.items():
        vs = [v for v in vs if v != baseline]
        pruned = [v for v in vs if (rows.get((m, v)) or {}).get("method") is not None]
        ordered = [v for v in vs if v not in pruned and v not in controls] + [v for v in pruned if v not in controls]
        for c, like in controls.items():  # a perturbation control right after the variant it controls for
            if c in vs:
                ordered.insert(ordered.index(like) + 1 if like in ordered else len(ordered), c)
        per_model[m] = ordered
    return sorted(per_model), per_model, rows


def _controls(tables: Tables) -> dict[str, str]:
    """Perturbation control -> the variant it controls for: ``tables["controls"]`` (a mapping, from
    the config) or else the expected_emergence table's ``control_for``."""
    given = tables.get("controls")
    if isinstance(given, Mapping):
        return dict(given)  # type: ignore[arg-type]
    ee = _get(tables, "expected_emergence")
    if ee is None or ee.is_empty() or "control_for" not in ee.columns:
        return {}
    return dict(ee.filter(pl.col("control_for").is_not_null()).select("variant", "control_for").unique().iter_rows())


# --------------------------------------------------------------------------- sections


def headline_line(tables: Tables, model: str, variant: str, baseline: str, info: dict | None = None) -> str:
    """``at {variant}, X% (k/n) of {baseline}-unbiased items became biased; perplexity rose W%
    [lo, hi]; stereotype reliance A% -> B%; invalid answers C% -> D%`` (the nulls follow in
    :func:`detail_lines`)."""
    name = variant
    like = _controls(tables).get(variant)
    if like is not None:
        name += f" (perturbation control for {like})"
    if info and info.get("method") is not None:
        name += f" ({info['method']}, {_pct(info.get('sparsity'))} sparse"
        bits = info.get("bits")
        name += f", {_f(bits, 0)}-bit)" if _finite(bits) and float(bits) < 16 else ")"
    t = _row(_get(tables, "transitions"), model=model, variant=variant, category=ALL)
    if t is None:
        parts = [f"at {name}, emergence n/a"]
    else:
        parts = [f"at {name}, {_pct(t['pct_became_biased'], 1)} ({t['n_became_biased']}/{t['n_unbiased_base']}) "
                 f"of {baseline}-unbiased items became biased"]  # fmt: skip
    ppl_tbl = _get(tables, "perplexity")
    p = _row(ppl_tbl, model=model, variant=variant)
    if ppl_tbl is None:
        parts.append("perplexity not measured")
    elif p is None or not _finite(p["pct_change"]):
        parts.append("perplexity change n/a")
    elif float(p["pct_change"]) >= 0:
        parts.append(f"perplexity rose {_pct(p['pct_change'], 1)} {_interval(p['pct_lo'], p['pct_hi'], 1)}")
    else:  # the interval of the fall, so that its signs match the number
        fall_lo = -float(p["pct_hi"]) if _finite(p["pct_hi"]) else None
        fall_hi = -float(p["pct_lo"]) if _finite(p["pct_lo"]) else None
        parts.append(f"perplexity fell {_pct(-float(p['pct_change']), 1)} {_interval(fall_lo, fall_hi, 1)}")
    rates = _get(tables, "rates")
    pooled = rates.filter(pl.col("pooled")) if rates is not None else None
    b = _row(pooled, model=model, variant=baseline, category=ALL)
    r = _row(pooled, model=model, variant=variant, category=ALL)
    biased_b, biased_v = _pct(b and b["biased_rate"]), _pct(r and r["biased_rate"])
    if r is not None and r.get("n_valid") == 0:
        biased_v += " (no valid answers)"
    parts.append(f"stereotype reliance {biased_b} -> {biased_v}")
    parts.append(f"invalid answers {_pct(b and b['invalid_rate'])} -> {_pct(r and r['invalid_rate'])}")
    return "; ".join(parts)


UNDETERMINED = 0.5
"""Above this share of undetermined baseline-unbiased items the expected emergence prints as n/a."""


def _expected_text(e: dict, baseline: str, variant: str) -> str:
    cont = (f"first tokens that need continuing, counted as their own outcome: {_pct(e['share_continue_base'])} "
            f"of {baseline} draws, {_pct(e['share_continue_variant'])} of {variant} draws "
            f"({_pct(e['share_undetermined'])} of the items undetermined)")  # fmt: skip
    if _finite(e["share_undetermined"]) and float(e["share_undetermined"]) > UNDETERMINED:
        return f"expected n/a over {e['n_sets']} virtual seed sets (rng {e['rng']}): {cont}"
    text = (f"expected {_pct(e['expected_mean'])} {_interval(e['expected_lo'], e['expected_hi'])} over "
            f"{e['n_sets']} virtual seed sets of {e['n_seeds']} (rng {e['rng']}); the study's seeds by the same "
            f"first-token rule: {_pct(e['study_first_token'])}")  # fmt: skip
    if _finite(e["study_quantile"]):
        text += f" (percentile {_f(100 * float(e['study_quantile']), 0)})"
    return f"{text}; {cont}"


def _direction_text(d: pl.DataFrame | None, model: str, variant: str, baseline: str) -> str:
    parts = []
    for pop in ("unbiased", "unknown"):
        r = _row(d, model=model, variant=variant, category=ALL, population=pop)
        if r is None:
            continue
        q = f"q = {float(r['q_value']):.3g}" if _finite(r["q_value"]) else "q = n/a"
        parts.append(f"of {r['n_items']} {baseline}-{pop} items {r['n_to_biased']} moved to biased, "
                     f"{r['n_to_anti']} to anti (one way only: {r['n_biased_only']} vs {r['n_anti_only']}; "
                     f"exact paired {_p(r['p_value'])}, {q})")  # fmt: skip
    return "direction: " + ("; ".join(parts) if parts else "n/a")


def detail_lines(tables: Tables, model: str, variant: str, baseline: str) -> list[str]:
    """Sub-bullets of a headline: expected emergence over virtual seed sets, the perturbation
    control's emergence, the direction test and the floor for independent re-runs."""
    out = []
    ee = _get(tables, "expected_emergence")
    e = _row(ee, model=model, variant=variant, category=ALL)
    out.append(_expected_text(e, baseline, variant) if e is not None else "expected emergence n/a")
    for control, like in _controls(tables).items():
        if like != variant:
            continue
        c = _row(ee, model=model, variant=control, category=ALL)
        t = _row(_get(tables, "transitions"), model=model, variant=control, category=ALL)
        obs = f"{_pct(t['pct_became_biased'], 1)} ({t['n_became_biased']}/{t['n_unbiased_base']})" if t else "n/a"
        exp = ""
        if c is not None and not (_finite(c["share_undetermined"]) and float(c["share_undetermined"]) > UNDETERMINED):
            exp = f", expected {_pct(c['expected_mean'])} {_interval(c['expected_lo'], c['expected_hi'])}"
        mine = _pct(e["observed"]) if e is not None else "n/a"
        out.append(f"{variant} {mine} vs perturbation control {control} {obs} became biased{exp}")
    out.append(_direction_text(_get(tables, "direction_tests"), model, variant, baseline))
    f = _row(_get(tables, "noise_floor"), model=model, category=ALL)
    out.append(f"floor for independent re-runs of {baseline} (fresh seeds, not coupled; a different null): "
               + (f"{_pct(f['floor_analytic'])} analytic, {_pct(f['floor_placebo'])} placebo" if f else "n/a"))
    return ["  - " + x for x in out]


def _headlines(tables: Tables, baseline: str) -> list[str]:
    models, per_model, rows = _variant_info(tables, baseline)
    out = [
        "## Emergence of bias, its expected range and its direction",
        "",
        f"Items are unbiased at {baseline} when none of its seeds answered biased; an item *became biased* "
        "when at least one seed of the variant did. Every variant draws with the same keyed random numbers "
        f"per (seed, item), so a variant whose distributions did not move answers exactly as {baseline} "
        "(emergence 0). *Expected*: the same metric over many virtual seed sets drawn from the stored "
        f"distributions of {baseline} and the variant, coupled the same way: mean [95% range]. "
        "*Perturbation control*: random weight noise of the same size as the quantization. "
        "*Direction*: items that moved to the biased vs to the anti-stereotyped option, with an exact "
        "paired test (BH q-values). *Floor for independent re-runs*: what fresh, independent seeds of "
        f"{baseline} would show; it does not apply to coupled draws. Perplexity change vs the baseline "
        "with a paired bootstrap 95% interval. Rates are over valid answers (biased + anti + unknown), "
        "seeds pooled, all categories.",
    ]
    for m in models:
        out += ["", f"### {m}", ""]
        if not per_model[m]:
            out.append(f"- no variant besides {baseline}")
        for v in per_model[m]:
            out.append("- " + headline_line(tables, m, v, baseline, rows.get((m, v))))
            out += detail_lines(tables, m, v, baseline)
    return out


def _bias_scores(tables: Tables, baseline: str) -> list[str]:
    bs = _get(tables, "bias_scores")
    out = ["## BBQ bias scores", "",
           "s_AMB (ambiguous contexts, all categories, -100..100; = 100 x (biased - anti) / valid answers):", ""]  # fmt: skip
    if bs is None or bs.is_empty():
        return out + ["- n/a (no bias-score table)"]
    amb = bs.filter((pl.col("condition") == "ambig") & (pl.col("category") == ALL))
    models, per_model, _ = _variant_info(tables, baseline)
    for m in sorted(set(models) | set(amb["model"].unique().to_list())):
        row = amb.filter(pl.col("model") == m)
        if row.is_empty():
            out.append(f"- {m}: no ambiguous items")
            continue
        cells = []
        for v in [baseline, *per_model.get(m, [])]:
            r = _row(row, variant=v)
            if r is not None:
                cells.append(f"{v} {'n/a (no valid answers)' if r['n_valid'] == 0 else _f(r['bias_score'])}")
        out.append(f"- {m}: " + " | ".join(cells))
    return out


def _coef_text(r: dict | None, what: str, power: float = 1.0) -> str:
    if r is None:
        return f"{what} n/a"
    o, lo, hi = (float(r[k]) ** power if _finite(r[k]) else float("nan") for k in ("odds_ratio", "or_lo", "or_hi"))
    s = f"{what} {_or(o)} [{_or(lo)}, {_or(hi)}], {_p(r['p_value'])}"
    return s + (f" [flag: {r['flag']}]" if r.get("flag") else "")


def _test_text(r: dict | None) -> str:
    if r is None:
        return "n/a"
    if not _finite(r["statistic"]):
        return f"not estimable ({r['flag']})" if r.get("flag") else "not estimable"
    return f"chi2({r['df']}) = {_f(r['statistic'], 2)}, {_p(r['p_value'])}"


def _regression(tables: Tables) -> list[str]:
    c, t = _get(tables, "regression_coefficients"), _get(tables, "regression_tests")
    out = ["## Regression", "",
           "Logit biased ~ bits + C(category) over valid answers of all variants (pruned ones at their "
           "bit width), SEs clustered by item; odds ratio per bit, 95% CI (OR < 1: stereotype reliance "
           "rises as precision falls).", ""]  # fmt: skip
    if c is None or c.is_empty():
        return out + ["- n/a (no regression table)"]
    r = _row(c, spec="bits_cluster", model_scope="pooled", term="bits")
    n = f" (n = {r['n_obs']} answers, {r['n_clusters']} items)" if r else ""
    out.append("- pooled: " + _coef_text(r, "odds ratio per bit") + n)
    per = c.filter((pl.col("spec") == "bits_per_model") & (pl.col("term") == "bits"))
    if per.height > 1:
        for rr in per.sort("model_scope").iter_rows(named=True):
            out.append(f"- {rr['model_scope']}: " + _coef_text(rr, "odds ratio per bit"))
    inter = _row(t, spec="bits_x_model", test="Wald bits:C(model) (cluster)")
    n_models = c.filter(pl.col("spec") == "bits_per_model")["model_scope"].n_unique()
    text = _test_text(inter)
    if n_models <= 1 and inter is not None and not _finite(inter["statistic"]):
        text = "not estimable (a single model)"
    out.append(f"- model x precision interaction (Wald bits:C(model), clustered): {text}")
    return out


def _role_flows(tables: Tables, baseline: str) -> list[str]:
    rf = _get(tables, "role_flows")
    out = ["## Role flows", "",
           f"Items whose majority answer at {baseline} was *unknown*: share whose majority answer in the "
           "variant became biased vs anti.", ""]  # fmt: skip
    if rf is None:
        return out + ["- n/a (no role-flow table)"]
    models, per_model, _ = _variant_info(tables, baseline)
    if not any(per_model.values()):
        return out + [f"- no variant besides {baseline}"]
    for m in models:
        for v in per_model[m]:
            g = rf.filter((pl.col("model") == m) & (pl.col("variant") == v) & (pl.col("from_role") == "unknown"))
            n = int(g["n"].sum()) if g.height else 0
            if n == 0:
                out.append(f"- {m} {v}: no baseline-unknown items")
                continue
            share = {r["to_role"]: r["n"] / n for r in g.iter_rows(named=True)}
            out.append(f"- {m} {v}: {_pct(share.get('biased', 0.0))} -> biased, "
                       f"{_pct(share.get('anti', 0.0))} -> anti (of {n} items)")  # fmt: skip
    return out


def _fitted_methods(tables: Tables) -> list[str]:
    """Pruning methods with at least one valid answer (those the sparsity regression can fit)."""
    v, rates = _get(tables, "variants"), _get(tables, "rates")
    if v is None or rates is None or "method" not in v.columns:
        return []
    ok = rates.filter(pl.col("pooled") & (pl.col("category") == ALL) & (pl.col("n_valid") > 0))
    return sorted(v.join(ok.select("model", "variant"), on=["model", "variant"])["method"].drop_nulls().unique())


def _pruning(tables: Tables) -> list[str]:
    c, t = _get(tables, "sparsity_coefficients"), _get(tables, "sparsity_tests")
    if c is None or c.is_empty():
        return []
    pooled = c.filter((pl.col("spec") == "sparsity_cluster") & (pl.col("model_scope") == "pooled"))
    out = ["## Pruning", "",
           "Logit biased ~ sparsity + C(method):sparsity + C(category) [+ bits] [+ C(model)] over the baseline "
           "and the pruning variants, MEASURED sparsity, SEs clustered by item; odds ratios per +10 points "
           "of sparsity, 95% CI.", ""]  # fmt: skip
    inter = pooled.filter(pl.col("term").str.starts_with("sparsity:C(method)[T."))
    methods = [s.removeprefix("sparsity:C(method)[T.").removesuffix("]") for s in inter["term"].to_list()]
    rest = sorted(set(_fitted_methods(tables)) - set(methods))
    ref = rest[0] if len(rest) == 1 else "reference"
    out.append("- " + _coef_text(_row(pooled, term="sparsity"), f"sparsity slope ({ref} method): OR", power=0.1))
    for meth, r in zip(methods, inter.iter_rows(named=True)):
        out.append("- " + _coef_text(r, f"{meth} vs {ref} slope: ratio of ORs", power=0.1))
    bits = _row(pooled, term="bits")
    if bits is not None:
        out.append("- " + _coef_text(bits, "bits (pruned then quantized variants): OR per bit"))
    wald = _row(t, spec="sparsity_cluster", model_scope="pooled", test="Wald sparsity:C(method) (cluster)")
    out.append(f"- method x sparsity interaction (Wald, clustered): {_test_text(wald)}")
    return out


def summary_markdown(tables: Tables, baseline: str, variants_cfg: Mapping | None = None) -> str:
    """The study summary as Markdown.

    ``tables`` maps table names to DataFrames (None or absent when not computed): ``variants``,
    ``rates`` and the analysis tables ``transitions``, ``expected_emergence``,
    ``direction_tests``, ``noise_floor``, ``perplexity``, ``bias_scores``,
    ``regression_coefficients``, ``regression_tests``, ``role_flows``, ``sparsity_coefficients``,
    ``sparsity_tests``. ``variants_cfg`` (the config's ``variants``) names the perturbation
    controls (else the expected_emergence table's ``control_for`` does). Sections: headline lines
    (one per model x non-baseline variant: emergence, perplexity change, stereotype reliance and
    invalid rates; below each, the expected emergence over virtual seed sets, the perturbation
    control, the direction test and the floor for independent re-runs), BBQ s_AMB per variant,
    the precision regression (odds ratio per bit, model x precision interaction), role flows of
    baseline-unknown items, and pruning (only with pruning coefficients).
    """
    if variants_cfg is not None:
        tables = {**tables, "controls": perturbation_controls(variants_cfg)}  # type: ignore[dict-item]
    models, per_model, _ = _variant_info(tables, baseline)
    n_var = len({v for vs in per_model.values() for v in vs})
    head = [
        "# Summary: does compression create bias that perplexity does not show?",
        "",
        f"Baseline `{baseline}`; {len(models)} model(s) ({', '.join(models) or 'none'}), "
        f"{n_var} compressed variant(s).",
        "",
    ]
    sections = [_headlines(tables, baseline), _bias_scores(tables, baseline), _regression(tables),
                _role_flows(tables, baseline), _pruning(tables)]  # fmt: skip
    body = []
    for s in sections:
        if s:
            body += [*s, ""]
    return "\n".join(head + body).rstrip() + "\n"
