"""``results/summary.md``: the headline numbers of a study, one line per model x variant.

Everything is read from the tables of docs/outputs.md and :mod:`compbias.stats.analysis` (no
statistics are recomputed, except the odds ratio of the pruning slope per +10 points of
sparsity, a power of the table's odds ratio). Percentages have one decimal; NaN or missing
values print as ``n/a``.
"""

from __future__ import annotations

from collections.abc import Mapping

import polars as pl

from compbias.report.numbers import finite, fixed, pct, stat
from compbias.report.summary_lines import Tables, _controls, _row, detail_lines, headline_line
from compbias.stats.controls import perturbation_controls
from compbias.stats.metrics import ALL
from compbias.stats.variants import study_order


def _variant_info(tables: Tables, baseline: str) -> tuple[list[str], dict[str, list[str]], dict]:
    """Models, per-model non-baseline variants in the report's order
    (:func:`compbias.stats.variants.study_order`) and ``(model, variant) -> variants row``."""
    variants = tables.get("variants")
    if variants is not None and variants.is_empty():
        variants = None
    rows = {(r["model"], r["variant"]): r for r in variants.iter_rows(named=True)} if variants is not None else {}
    seen: dict[str, list[str]] = {}
    for m, v in rows:
        seen.setdefault(m, []).append(v)
    for name in ("transitions", "rates", "expected_emergence"):  # variants not in the variants table
        t = tables.get(name)
        if t is not None and not t.is_empty():
            for m, v in t.select("model", "variant").unique().sort("model", "variant").iter_rows():
                if v not in seen.setdefault(m, []):
                    seen[m].append(v)
    controls = _controls(tables)
    per_model = {
        m: study_order(variants.filter(pl.col("model") == m) if variants is not None else None, vs, baseline, controls)
        for m, vs in seen.items()
    }
    return sorted(per_model), per_model, rows


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
    bs = tables.get("bias_scores")
    out = [
        "## BBQ bias scores",
        "",
        "s_AMB (ambiguous contexts, all categories, -100..100; = 100 x (biased - anti) / valid answers):",
        "",
    ]
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
                cells.append(f"{v} {'n/a (no valid answers)' if r['n_valid'] == 0 else fixed(r['bias_score'])}")
        out.append(f"- {m}: " + " | ".join(cells))
    return out


def _disambig_line(r: dict, b: dict | None, baseline: str) -> str:
    """``accuracy A% (bf16 B%; lost/gained, p); s_DIS S; errors: x% biased, y% anti, z% unknown
    (of n); biased errors k -> l (p)``."""
    acc = f"accuracy {pct(r['accuracy'])}"
    if b is not None and r["variant"] != baseline:
        acc += (
            f" ({baseline} {pct(b['accuracy'])}; {r['acc_lost']} answers became wrong, {r['acc_gained']} "
            f"correct, exact McNemar {stat('p', r['acc_p'])})"
        )
    parts = [acc, f"s_DIS {fixed(r['s_dis'])} (of {r['n_non_unknown']} valid non-unknown answers)"]
    if not r["n_errors"]:
        parts.append("no valid wrong answers")
    else:
        parts.append(
            f"errors: {pct(r['share_err_biased'])} biased, {pct(r['share_err_anti'])} anti, "
            f"{pct(r['share_err_unknown'])} unknown (of {r['n_errors']} valid wrong answers)"
        )
    if b is not None and r["variant"] != baseline:
        parts.append(
            f"new errors {r['err_biased_new']} biased vs {r['err_anti_new']} anti (exact paired "
            f"{stat('p', r['direction_p'])}); biased errors {b['n_err_biased']} -> {r['n_err_biased']} "
            f"(exact McNemar {stat('p', r['err_biased_p'])}), anti errors {b['n_err_anti']} -> {r['n_err_anti']} "
            f"({stat('p', r['err_anti_p'])})"
        )
    return "; ".join(parts)


def _disambiguated(tables: Tables, baseline: str) -> list[str]:
    t = tables.get("disambiguated")
    if t is None or t.is_empty():
        return []
    out = [
        "## Disambiguated contexts",
        "",
        "Items whose context names the answer (all categories, seeds pooled): accuracy (invalid answers "
        "count wrong), s_DIS (-100..100; 100 x (2 x biased / (biased + anti) - 1) over valid non-unknown "
        "answers) and the valid wrong answers split by the option they picked: the bias-consistent person "
        f"(*biased*), the anti-stereotyped one (*anti*) or *unknown*. Against {baseline}, over the same "
        "(item, seed) pairs: exact McNemar tests (answers that became wrong vs correct; that became vs "
        "stopped being a biased, or an anti, error) and the direction of the variant's new errors (to the "
        "biased vs to the anti option, exact binomial).",
        "",
    ]
    allc = t.filter(pl.col("category") == ALL)
    models, per_model, _ = _variant_info(tables, baseline)
    for m in sorted(set(models) | set(allc["model"].unique().to_list())):
        rows = allc.filter(pl.col("model") == m)
        b = _row(rows, variant=baseline)
        order = [baseline, *per_model.get(m, [])]
        order += [v for v in rows["variant"].to_list() if v not in order]  # not in the other tables
        for v in order:
            r = _row(rows, variant=v)
            if r is not None:
                out.append(f"- {m} {v}: " + _disambig_line(r, b, baseline))
    return out


def _coef_text(r: dict | None, what: str, power: float = 1.0) -> str:
    if r is None:
        return f"{what} n/a"
    o, lo, hi = (float(r[k]) ** power if finite(r[k]) else float("nan") for k in ("odds_ratio", "or_lo", "or_hi"))
    s = f"{what} {fixed(o, 3)} [{fixed(lo, 3)}, {fixed(hi, 3)}], {stat('p', r['p_value'])}"
    return s + (f" [flag: {r['flag']}]" if r.get("flag") else "")


def _test_text(r: dict | None) -> str:
    if r is None:
        return "n/a"
    if not finite(r["statistic"]):
        return f"not estimable ({r['flag']})" if r.get("flag") else "not estimable"
    return f"chi2({r['df']}) = {fixed(r['statistic'], 2)}, {stat('p', r['p_value'])}"


def _regression(tables: Tables) -> list[str]:
    c, t = tables.get("regression_coefficients"), tables.get("regression_tests")
    out = [
        "## Regression",
        "",
        "Logit biased ~ bits + C(category) over valid answers of all variants (pruned ones at their "
        "bit width), SEs clustered by item; odds ratio per bit, 95% CI (OR < 1: stereotype reliance "
        "rises as precision falls).",
        "",
    ]
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
    if n_models <= 1 and inter is not None and not finite(inter["statistic"]):
        text = "not estimable (a single model)"
    out.append(f"- model x precision interaction (Wald bits:C(model), clustered): {text}")
    return out


def _role_flows(tables: Tables, baseline: str) -> list[str]:
    rf = tables.get("role_flows")
    out = [
        "## Role flows",
        "",
        f"Items whose majority answer at {baseline} was *unknown*: share whose majority answer in the "
        "variant became biased vs anti.",
        "",
    ]
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
            out.append(
                f"- {m} {v}: {pct(share.get('biased', 0.0))} -> biased, "
                f"{pct(share.get('anti', 0.0))} -> anti (of {n} items)"
            )
    return out


def _fitted_methods(tables: Tables) -> list[str]:
    """Pruning methods with at least one valid answer (those the sparsity regression can fit)."""
    v, rates = tables.get("variants"), tables.get("rates")
    if v is None or rates is None or "method" not in v.columns:
        return []
    ok = rates.filter(pl.col("pooled") & (pl.col("category") == ALL) & (pl.col("n_valid") > 0))
    return sorted(v.join(ok.select("model", "variant"), on=["model", "variant"])["method"].drop_nulls().unique())


def _pruning(tables: Tables) -> list[str]:
    c, t = tables.get("sparsity_coefficients"), tables.get("sparsity_tests")
    if c is None or c.is_empty():
        return []
    pooled = c.filter((pl.col("spec") == "sparsity_cluster") & (pl.col("model_scope") == "pooled"))
    out = [
        "## Pruning",
        "",
        "Logit biased ~ sparsity + C(method):sparsity + C(category) [+ bits] [+ C(model)] over the baseline "
        "and the pruning variants, MEASURED sparsity, SEs clustered by item; odds ratios per +10 points "
        "of sparsity, 95% CI.",
        "",
    ]
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
    ``direction_tests``, ``noise_floor``, ``perplexity``, ``bias_scores``, ``disambiguated``,
    ``regression_coefficients``, ``regression_tests``, ``role_flows``, ``sparsity_coefficients``,
    ``sparsity_tests``. ``variants_cfg`` (the config's ``variants``) names the perturbation
    controls (else the expected_emergence table's ``control_for`` does). Sections: headline lines
    (one per model x non-baseline variant: emergence, perplexity change, stereotype reliance and
    invalid rates; below each, the expected emergence over virtual seed sets, the perturbation
    control, the direction test and the floor for independent re-runs), BBQ s_AMB per variant,
    disambiguated contexts (accuracy, s_DIS and the split of errors with paired tests vs the
    baseline; only with disambiguated items),
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
    sections = [
        _headlines(tables, baseline),
        _bias_scores(tables, baseline),
        _disambiguated(tables, baseline),
        _regression(tables),
        _role_flows(tables, baseline),
        _pruning(tables),
    ]
    body = []
    for s in sections:
        if s:
            body += [*s, ""]
    return "\n".join(head + body).rstrip() + "\n"
