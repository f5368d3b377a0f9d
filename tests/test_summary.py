"""summary.md on hand-made tables: every number is the expected one, formatted with one decimal."""

import math

import polars as pl
import pytest

from compbias.report.summary import summary_markdown
from compbias.stats.regression import SINGLE_METHOD

NAN = math.nan


def _df(rows: list[dict]) -> pl.DataFrame:
    return pl.DataFrame(rows, infer_schema_length=None)


@pytest.fixture()
def tables() -> dict[str, pl.DataFrame]:
    v = [
        ("bf16", 0, 16.0, None, None),
        ("q4", 1, 4.0, None, None),
        ("wanda-50", 2, 16.0, "wanda", 0.5123),
        ("magnitude-50", 3, 16.0, "magnitude", 0.5),
        ("q4-noise", 4, 16.0, None, None),
    ]
    variants = pl.DataFrame(
        [
            {
                "model": "m",
                "variant": n,
                "order": o,
                "bits": b,
                "method": meth,
                "sparsity": sp,
                "is_baseline": n == "bf16",
            }
            for n, o, b, meth, sp in v
        ],
        schema={
            "model": pl.String,
            "variant": pl.String,
            "order": pl.Int64,
            "bits": pl.Float64,
            "method": pl.String,
            "sparsity": pl.Float64,
            "is_baseline": pl.Boolean,
        },
    )
    pooled = {
        "bf16": (0.25, 0.1, 40),
        "q4": (0.3126, 0.05, 48),
        "wanda-50": (NAN, 1.0, 0),
        "magnitude-50": (0.5, 0.2, 10),
        "q4-noise": (0.26, 0.1, 40),
    }
    rates = _df(
        [
            {
                "model": "m",
                "variant": k,
                "category": "all",
                "seed": None,
                "pooled": True,
                "biased_rate": sr,
                "invalid_rate": inv,
                "n_valid": n,
            }
            for k, (sr, inv, n) in pooled.items()
        ]
        # rows that must be ignored: a single seed and a single category
        + [
            {
                "model": "m",
                "variant": "q4",
                "category": "all",
                "seed": 1,
                "pooled": False,
                "biased_rate": 0.9,
                "invalid_rate": 0.9,
                "n_valid": 5,
            },
            {
                "model": "m",
                "variant": "q4",
                "category": "age",
                "seed": None,
                "pooled": True,
                "biased_rate": 0.8,
                "invalid_rate": 0.8,
                "n_valid": 5,
            },
        ]
    )
    transitions = _df(
        [
            {
                "model": "m",
                "variant": k,
                "category": "all",
                "n_unbiased_base": 20,
                "n_became_biased": b,
                "pct_became_biased": p,
            }
            for k, b, p in (("q4", 7, 35.0), ("wanda-50", 0, 0.0), ("magnitude-50", 3, 15.0), ("q4-noise", 4, 20.0))
        ]
        + [
            {
                "model": "m",
                "variant": "q4",
                "category": "age",
                "n_unbiased_base": 5,
                "n_became_biased": 5,
                "pct_became_biased": 100.0,
            }
        ]
    )
    excess = _df(
        [
            {
                "model": "m",
                "variant": k,
                "category": "all",
                "floor_analytic": 0.1234,
                "floor_placebo": fp,
                "excess_analytic": e,
                "excess_analytic_lo": lo,
                "excess_analytic_hi": hi,
            }
            for k, fp, e, lo, hi in (
                ("q4", 0.15, 0.2266, 0.05, 0.40),
                ("wanda-50", NAN, -0.1234, -0.2, -0.05),
                ("magnitude-50", 0.15, 0.0266, -0.1, 0.15),
            )
        ]
    )
    expected = _df(
        [
            {
                "model": "m",
                "variant": k,
                "category": c,
                "rng": "gumbel",
                "n_sets": 1000,
                "n_seeds": 5,
                "observed": obs,
                "study_first_token": st,
                "expected_mean": mean,
                "expected_lo": lo,
                "expected_hi": hi,
                "study_quantile": q,
                "share_continue_base": 0.0123,
                "share_continue_variant": cv,
                "share_undetermined": und,
                "control_for": cf,
                "control": None,
            }
            for k, c, obs, st, mean, lo, hi, q, cv, und, cf in (
                ("q4", "all", 0.35, 0.3, 0.3214, 0.2, 0.45, 0.4125, 0.2, 0.051, None),
                ("q4", "age", 0.99, 0.99, 0.99, 0.99, 0.99, 0.5, 0.2, 0.0, None),
                ("q4-noise", "all", 0.2, 0.2, 0.1849, 0.1, 0.3, 0.6, 0.02, 0.0, "q4"),
                ("wanda-50", "all", 0.0, 0.0, 0.0, 0.0, 0.0, NAN, 1.0, 1.0, None),
            )
        ]
    )
    direction = _df(
        [
            {
                "model": "m",
                "variant": "q4",
                "category": c,
                "population": pop,
                "n_items": n,
                "n_to_biased": b,
                "n_to_anti": a,
                "n_both": both,
                "n_biased_only": b - both,
                "n_anti_only": a - both,
                "p_value": p,
                "q_value": q,
            }
            for c, pop, n, b, a, both, p, q in (
                ("all", "unbiased", 20, 7, 5, 2, 0.50781, 0.6),
                ("all", "unknown", 12, 4, 4, 1, 1.0, 1.0),
                ("age", "unknown", 3, 3, 0, 0, 0.25, 0.6),
            )
        ]
    )
    floor = _df(
        [
            {"model": "m", "category": c, "floor_analytic": fa, "floor_placebo": fp}
            for c, fa, fp in (("all", 0.1234, 0.15), ("age", 0.9, 0.9))
        ]
    )
    perplexity = _df(
        [
            {"model": "m", "variant": k, "pct_change": c, "pct_lo": lo, "pct_hi": hi}
            for k, c, lo, hi in (
                ("bf16", 0.0, 0.0, 0.0),
                ("q4", 3.456, 1.2, 5.76),
                ("wanda-50", -2.5, -4.0, -1.04),
                ("magnitude-50", 0.04, -0.5, 0.61),
            )
        ]
    )
    bias_scores = _df(
        [
            {"model": "m", "variant": k, "category": "all", "condition": "ambig", "bias_score": s, "n_valid": n}
            for k, s, n in (("bf16", 12.5, 40), ("q4", -3.333, 48), ("wanda-50", 0.0, 0), ("magnitude-50", 40.0, 10))
        ]
        + [
            {
                "model": "m",
                "variant": "q4",
                "category": "all",
                "condition": "disambig",
                "bias_score": 99.0,
                "n_valid": 48,
            }
        ]
    )
    coef = _df(
        [
            {
                "spec": spec,
                "model_scope": scope,
                "term": "bits",
                "odds_ratio": 0.9512,
                "or_lo": 0.9,
                "or_hi": 1.0053,
                "p_value": 0.0768,
                "n_obs": 88,
                "n_clusters": 20,
                "flag": "",
            }
            for spec, scope in (("bits_cluster", "pooled"), ("bits_per_model", "m"))
        ]
    )
    tests = _df(
        [
            {
                "spec": "bits_x_model",
                "model_scope": "pooled",
                "test": "Wald bits:C(model) (cluster)",
                "statistic": NAN,
                "df": 0,
                "p_value": NAN,
                "flag": "not estimable",
            }
        ]
    )
    flows = _df(
        [
            {"model": "m", "variant": "q4", "from_role": "unknown", "to_role": t, "n": n}
            for t, n in (("biased", 2), ("anti", 1), ("unknown", 5))
        ]
        + [
            {"model": "m", "variant": "q4", "from_role": "anti", "to_role": "biased", "n": 9},
            {"model": "m", "variant": "wanda-50", "from_role": "unknown", "to_role": "invalid", "n": 8},
        ]
    )
    sparsity = _df(
        [
            {
                "spec": "sparsity_cluster",
                "model_scope": "pooled",
                "term": "sparsity",
                "odds_ratio": 2.0,
                "or_lo": 1.0,
                "or_hi": 4.0,
                "p_value": 0.05,
                "n_obs": 50,
                "n_clusters": 20,
                "flag": "",
            },
            {
                "spec": "sparsity_per_model",
                "model_scope": "m",
                "term": "sparsity",
                "odds_ratio": 9.0,
                "or_lo": 9.0,
                "or_hi": 9.0,
                "p_value": 0.5,
                "n_obs": 50,
                "n_clusters": 20,
                "flag": "",
            },
        ]
    )
    sparsity_tests = _df(
        [
            {
                "spec": "sparsity_cluster",
                "model_scope": "pooled",
                "test": "Wald sparsity:C(method) (cluster)",
                "statistic": NAN,
                "df": 0,
                "p_value": NAN,
                "flag": SINGLE_METHOD,
            }
        ]
    )
    return {
        "variants": variants,
        "rates": rates,
        "transitions": transitions,
        "excess_emergence": excess,
        "expected_emergence": expected,
        "direction_tests": direction,
        "noise_floor": floor,
        "perplexity": perplexity,
        "bias_scores": bias_scores,
        "regression_coefficients": coef,
        "regression_tests": tests,
        "role_flows": flows,
        "sparsity_coefficients": sparsity,
        "sparsity_tests": sparsity_tests,
    }


EXPECTED = [
    "Baseline `bf16`; 1 model(s) (m), 4 compressed variant(s).",
    "### m",
    "- at q4, 35.0% (7/20) of bf16-unbiased items became biased; perplexity rose 3.5% [1.2, 5.8]; stereotype "
    "reliance 25.0% -> 31.3%; invalid answers 10.0% -> 5.0%",
    "  - expected 32.1% [20.0, 45.0] over 1000 virtual seed sets of 5 (rng gumbel); the study's seeds by the same "
    "first-token rule: 30.0% (percentile 41); first tokens that need continuing, counted as their own outcome: "
    "1.2% of bf16 draws, 20.0% of q4 draws (5.1% of the items undetermined)",
    "  - q4 35.0% vs perturbation control q4-noise 20.0% (4/20) became biased, expected 18.5% [10.0, 30.0]",
    "  - direction: of 20 bf16-unbiased items 7 moved to biased, 5 to anti (one way only: 5 vs 3; exact paired "
    "p = 0.508, q = 0.6); of 12 bf16-unknown items 4 moved to biased, 4 to anti (one way only: 3 vs 3; exact "
    "paired p = 1, q = 1)",
    "  - floor for independent re-runs of bf16 (fresh seeds, not coupled; a different null): 12.3% analytic, "
    "15.0% placebo",
    "- at q4-noise (perturbation control for q4), 20.0% (4/20) of bf16-unbiased items became biased; perplexity "
    "change n/a; stereotype reliance 25.0% -> 26.0%; invalid answers 10.0% -> 10.0%",
    "  - expected 18.5% [10.0, 30.0] over 1000 virtual seed sets of 5 (rng gumbel); the study's seeds by the same "
    "first-token rule: 20.0% (percentile 60); first tokens that need continuing, counted as their own outcome: "
    "1.2% of bf16 draws, 2.0% of q4-noise draws (0.0% of the items undetermined)",
    "- at wanda-50 (wanda, 51.2% sparse), 0.0% (0/20) of bf16-unbiased items became biased; perplexity fell 2.5% "
    "[1.0, 4.0]; stereotype reliance 25.0% -> n/a (no valid answers); invalid answers 10.0% -> 100.0%",
    "  - expected n/a over 1000 virtual seed sets (rng gumbel): first tokens that need continuing, counted as "
    "their own outcome: 1.2% of bf16 draws, 100.0% of wanda-50 draws (100.0% of the items undetermined)",
    "  - direction: n/a",
    "- at magnitude-50 (magnitude, 50.0% sparse), 15.0% (3/20) of bf16-unbiased items became biased; perplexity "
    "rose 0.0% [-0.5, 0.6]; stereotype reliance 25.0% -> 50.0%; invalid answers 10.0% -> 20.0%",
    "  - expected emergence n/a",
    "- m: bf16 12.5 | q4 -3.3 | wanda-50 n/a (no valid answers) | magnitude-50 40.0",
    "- pooled: odds ratio per bit 0.951 [0.900, 1.005], p = 0.0768 (n = 88 answers, 20 items)",
    "- model x precision interaction (Wald bits:C(model), clustered): not estimable (a single model)",
    "- m q4: 25.0% -> biased, 12.5% -> anti (of 8 items)",
    "- m wanda-50: 0.0% -> biased, 0.0% -> anti (of 8 items)",
    "- m magnitude-50: no baseline-unknown items",
    "## Pruning",
    # 2 ** 0.1 = 1.0718, 4 ** 0.1 = 1.1487: odds ratios per +10 points of sparsity
    "- sparsity slope (magnitude method): OR 1.072 [1.000, 1.149], p = 0.05",
    f"- method x sparsity interaction (Wald, clustered): not estimable ({SINGLE_METHOD})",
]


def test_summary_numbers(tables):
    text = summary_markdown(tables, "bf16")
    lines = text.splitlines()
    for line in EXPECTED:
        assert line in lines, line
    # quantization variants first, then pruning, each in config order
    heads = [ln for ln in lines if ln.startswith("- at ")]
    assert [h.split(",")[0] for h in heads] == [
        "- at q4",
        "- at q4-noise (perturbation control for q4)",
        "- at wanda-50 (wanda",
        "- at magnitude-50 (magnitude",
    ]
    # ignored rows (single seed, single category, disambiguated, per-model sparsity) leave no trace
    for absent in ("90.0%", "80.0%", "100.0% (", "99.0", "9.000", "bits (pruned", "3 vs 0", "excess", "22.7%"):
        assert absent not in text, absent
    assert text.endswith("\n") and "\n\n\n" not in text


def test_summary_without_perplexity_pruning_and_with_two_models(tables):
    t = dict(tables, perplexity=None, sparsity_coefficients=tables["sparsity_coefficients"].clear())
    t["regression_coefficients"] = pl.concat(
        [
            tables["regression_coefficients"],
            tables["regression_coefficients"]
            .filter(spec="bits_per_model")
            .with_columns(
                model_scope=pl.lit("m2"),
                odds_ratio=pl.lit(1.25),
                or_lo=pl.lit(1.01),
                or_hi=pl.lit(1.5),
                p_value=pl.lit(0.04),
            ),
        ]
    )
    t["regression_tests"] = tables["regression_tests"].with_columns(
        statistic=pl.lit(4.2135), df=pl.lit(1), p_value=pl.lit(0.040143), flag=pl.lit("")
    )
    text = summary_markdown(t, "bf16")
    assert "perplexity not measured" in text and "perplexity rose" not in text
    assert "## Pruning" not in text
    lines = text.splitlines()
    assert "- m: odds ratio per bit 0.951 [0.900, 1.005], p = 0.0768" in lines
    assert "- m2: odds ratio per bit 1.250 [1.010, 1.500], p = 0.04" in lines
    assert "- model x precision interaction (Wald bits:C(model), clustered): chi2(1) = 4.21, p = 0.0401" in lines


def test_summary_of_missing_and_empty_tables():
    text = summary_markdown({}, "bf16")
    assert text.startswith("# Summary") and "0 model(s)" in text
    empty = summary_markdown({"rates": pl.DataFrame(), "transitions": pl.DataFrame()}, "bf16")
    assert "n/a (no regression table)" in empty


def test_summary_controls_from_the_config(tables):
    """The config's perturb specs name the controls; without them the table's control_for does."""
    cfg = {"bf16": {"dtype": "bfloat16"}, "q4": {"quantize": {"bits": 4}}, "q4-noise": {"perturb": {"like": "q4"}}}
    assert summary_markdown(tables, "bf16", variants_cfg=cfg) == summary_markdown(tables, "bf16")
    no_ctl = summary_markdown(tables, "bf16", variants_cfg={k: v for k, v in cfg.items() if k != "q4-noise"})
    assert "perturbation control" not in no_ctl.split("## BBQ")[0].split("*Perturbation control*")[1]
