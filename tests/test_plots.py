"""Every figure writes a non-empty PNG and PDF, also on degenerate inputs (NaN rates, a single
variant, no pruning, missing or empty tables)."""

from pathlib import Path

import numpy as np
import polars as pl
import pytest

from compbias.report import figures
from compbias.report.figures import emergence_figure
from compbias.stats.analysis import analyse
from compbias.stats.metrics import rates as rates_table
from compbias.stats.variants import pruning_variants, quantization_variants, resolve_baseline
from compbias.testing.synthetic import synthetic_answers

VARIANTS = {"bf16": 16.0, "q8": 8.0, "q4": 4.0, "q3": 3.0, "magnitude-50": 16.0, "wanda-50": 16.0, "wanda-50-q4": 4.0}
PRUNED = {"magnitude-50": ("magnitude", 0.498), "wanda-50": ("wanda", 0.5), "wanda-50-q4": ("wanda", 0.5)}


def _ppl(variants: pl.DataFrame, n_seqs: int = 12, seed: int = 0) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for m, v, bits in variants.select("model", "variant", "bits").iter_rows():
        for s in range(n_seqs):
            rows.append(
                {
                    "model": m,
                    "variant": v,
                    "seq_id": s,
                    "n_tokens": 64,
                    "nll_sum": 64 * (3.0 + 0.02 * (16 - bits) + 0.01 * s) + rng.normal(0, 1),
                }
            )
    return pl.DataFrame(rows)


def _study(answers: pl.DataFrame, items: pl.DataFrame, variants: pl.DataFrame, with_ppl: bool = True) -> dict:
    ppl = _ppl(variants) if with_ppl else None
    t = analyse(answers, items, variants, ppl, "bf16", 2, {"n_boot": 50, "seed": 0})
    return t | {"rates": rates_table(answers), "variants": variants, "perplexity": t.get("perplexity")}


def _with_pruning(variants: pl.DataFrame) -> pl.DataFrame:
    meta = pl.DataFrame(
        [{"variant": k, "method": m, "target_sparsity": 0.5, "sparsity": s} for k, (m, s) in PRUNED.items()],
        schema={"variant": pl.String, "method": pl.String, "target_sparsity": pl.Float64, "sparsity": pl.Float64},
    )
    return (
        variants.drop("method", "target_sparsity", "sparsity")
        .join(meta, on="variant", how="left")
        .with_columns(
            kind=pl.when(pl.col("variant").is_in(["magnitude-50", "wanda-50"])).then(pl.lit("prune")).otherwise("kind")
        )
        .select(variants.columns)
    )


@pytest.fixture(scope="module")
def study() -> dict:
    a, items, v = synthetic_answers(
        240,
        models=("m1", "m2"),
        variants=VARIANTS,
        seeds=2,
        placebo_seeds=2,
        categories=("age", "religion", "ses"),
        seed=3,
    )
    v = _with_pruning(v)
    # degenerate data: a variant without any valid answer and a category without valid answers in q3
    a = a.with_columns(
        role=pl.when((pl.col("variant") == "magnitude-50") & (pl.col("model") == "m2"))
        .then(pl.lit("invalid"))
        .when((pl.col("variant") == "q3") & (pl.col("category") == "ses"))
        .then(pl.lit("invalid"))
        .otherwise("role")
    )
    return _study(a, items, v)


def draw_all(t: dict, out: Path) -> dict[str, list[Path]]:
    return {
        "dose_response": figures.dose_response(t["rates"], t["variants"], out / "dose_response"),
        "transitions": emergence_figure(
            t["transitions"],
            out / "transitions",
            expected=t["expected_emergence"],
            direction=t["direction_tests"],
            noise_floor=t["noise_floor"],
            variants=t["variants"],
            controls=t.get("controls"),
            baseline="bf16",
        ),
        "perplexity_vs_bias": figures.perplexity_vs_bias(
            t["perplexity"], t["rates"], out / "perplexity_vs_bias", variants=t["variants"]
        ),
        "category_heatmap": figures.category_heatmap(t["rates"], out / "category_heatmap", variants=t["variants"]),
        "pruning": figures.pruning(t["rates"], t["perplexity"], t["variants"], out / "pruning"),
    }


def assert_written(paths: list[Path]) -> None:
    assert sorted(p.suffix for p in paths) == [".pdf", ".png"]
    for p in paths:
        data = p.read_bytes()
        assert len(data) > 1000, p
        assert data.startswith(b"\x89PNG" if p.suffix == ".png" else b"%PDF"), p
    assert not [f for f in paths[0].parent.iterdir() if ".tmp" in f.name]  # temporary names renamed


def test_every_figure_writes_png_and_pdf(study, tmp_path):
    written = draw_all(study, tmp_path)
    for paths in written.values():
        assert_written(paths)
    assert {p.name for ps in written.values() for p in ps} == {f"{n}.{ext}" for n in written for ext in ("png", "pdf")}


def test_variant_order_and_groups(study):
    v = study["variants"]
    assert quantization_variants(v) == ["bf16", "q8", "q4", "q3"]
    assert pruning_variants(v) == ["magnitude-50", "wanda-50", "wanda-50-q4"]
    shuffled = v.with_columns(order=pl.col("order").replace({1: 3, 3: 1}))
    assert quantization_variants(shuffled) == ["bf16", "q3", "q4", "q8"]  # config order, not bits
    assert resolve_baseline(v, None, []) == "bf16"
    assert resolve_baseline(None, None, ["a", "b"]) == "a"


def test_single_variant_no_pruning_no_perplexity(tmp_path):
    a, items, v = synthetic_answers(60, models=("m1",), variants={"bf16": 16.0}, seeds=2, placebo_seeds=1, seed=4)
    t = _study(a, items, v, with_ppl=False)
    assert t["transitions"].is_empty() and t["perplexity"] is None
    for paths in draw_all(t, tmp_path).values():
        assert_written(paths)


def test_all_nan_empty_and_missing_tables(study, tmp_path):
    t = dict(study)
    # every answer invalid: every rate NaN, every Wilson bound NaN
    nan_rates = t["rates"].with_columns(pl.col("^(sr|unknown|anti)_(rate|lo|hi)$") * float("nan"))
    t["rates"] = nan_rates
    for paths in draw_all(t, tmp_path / "nan").values():
        assert_written(paths)
    # empty tables and a study without pruning
    empty = {k: (df.clear() if isinstance(df, pl.DataFrame) else df) for k, df in study.items()}
    empty["variants"] = study["variants"].with_columns(method=pl.lit(None, pl.String))
    for paths in draw_all(empty, tmp_path / "empty").values():
        assert_written(paths)
    # no excess / noise-floor tables
    assert_written(emergence_figure(study["transitions"], tmp_path / "x" / "t"))
    assert_written(figures.perplexity_vs_bias(None, study["rates"], tmp_path / "x" / "p"))
    assert_written(figures.pruning(study["rates"], None, study["variants"], tmp_path / "x" / "pr"))


def test_suffix_in_out_is_a_stem(study, tmp_path):
    paths = figures.category_heatmap(study["rates"], tmp_path / "heat.png", variants=study["variants"])
    assert sorted(p.name for p in paths) == ["heat.pdf", "heat.png"]
    assert_written(paths)


def _expected_from(transitions: pl.DataFrame, controls: dict[str, str]) -> pl.DataFrame:
    """A hand-made expected_emergence table: the study's number +- 10 points, controls marked."""
    obs = pl.col("pct_became_biased") / 100
    return transitions.select(
        "model",
        "variant",
        "category",
        n_sets=pl.lit(1000),
        expected_mean=obs * 0.9,
        expected_lo=(obs - 0.1).clip(0, 1),
        expected_hi=(obs + 0.1).clip(0, 1),
        control_for=pl.col("variant").replace_strict(controls, default=None),
    )


def test_emergence_figure_with_a_perturbation_control(tmp_path):
    variants = {"bf16": 16.0, "q8": 8.0, "q4": 4.0, "q3": 3.0, "q4-noise": 16.0}
    a, items, v = synthetic_answers(300, models=("m1",), variants=variants, seeds=5, placebo_seeds=5, seed=7)
    t = _study(a, items, v)
    controls = {"q4-noise": "q4"}
    t["expected_emergence"] = _expected_from(t["transitions"], controls)
    t["controls"] = controls
    paths = draw_all(t, tmp_path)["transitions"]
    assert_written(paths)
    from compbias.report.figures.transitions import _order

    assert _order(["q3", "q4-noise", "q8", "q4"], v, controls) == (["q8", "q4", "q4-noise", "q3"], 4)
