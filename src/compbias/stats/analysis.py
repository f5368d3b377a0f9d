"""All analysis tables of a study from the answers, items, variants and perplexity tables."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import polars as pl

from compbias.settings import Analysis, coerce_section
from compbias.stats.controls import perturbation_controls
from compbias.stats.direction import direction_tests
from compbias.stats.disambig import disambiguated
from compbias.stats.emergence import expected_emergence
from compbias.stats.floors import excess_emergence, noise_floor
from compbias.stats.metrics import bias_scores, headline_rows
from compbias.stats.perplexity_stats import perplexity_summary
from compbias.stats.regression import dose_response, sparsity_response, transition_model
from compbias.stats.tables import TABLES  # noqa: F401 (the table names, re-exported)
from compbias.stats.transitions import (
    item_table,
    paired_tests,
    probability_shifts,
    role_flows,
    transitions,
)
from compbias.stats.virtual_seeds import VIRTUAL_SCHEMA


def analyse(
    answers: pl.DataFrame,
    items: pl.DataFrame,
    variants: pl.DataFrame,
    ppl: pl.DataFrame | None,
    baseline: str,
    n_seeds: int,
    cfg: Analysis | Mapping[str, Any],
    virtual: pl.DataFrame | None = None,
    variants_cfg: Mapping[str, Any] | None = None,
) -> dict[str, pl.DataFrame]:
    """Every analysis table, keyed by the names in :data:`TABLES`.

    ``virtual``: the virtual seed outcomes of every model x variant
    (:func:`compbias.stats.virtual_seeds.virtual_outcomes` plus ``model``, ``variant``); without them
    ``expected_emergence`` is empty. ``variants_cfg``: the config's ``variants`` (for the
    perturbation controls, :mod:`compbias.stats.controls`).
    """
    settings = coerce_section(Analysis, "analysis", cfg)
    n_boot, seed = settings.n_boot, settings.seed
    # bias scores and the disambiguated table cover every condition; the rest is the study's
    # headline analysis of ambiguous contexts (metrics.headline_rows)
    everything, answers, study_items = answers, headline_rows(answers), headline_rows(items)
    per_item = item_table(answers)
    shifts = probability_shifts(per_item, baseline)
    reg = dose_response(answers, variants)
    sparse = sparsity_response(answers, variants)
    trans = transitions(per_item, baseline)
    if virtual is None:
        virtual = pl.DataFrame(schema=VIRTUAL_SCHEMA | {"model": pl.String, "variant": pl.String})
    scores = bias_scores(everything, items)
    out = {
        "bias_scores": scores,
        "disambiguated": disambiguated(everything, items, baseline, scores),
        "items_by_variant": per_item,
        "transitions": trans,
        "role_flows": role_flows(per_item, baseline),
        "noise_floor": noise_floor(answers, baseline, n_seeds),
        "excess_emergence": excess_emergence(answers, baseline, n_seeds, n_boot, seed),
        "expected_emergence": expected_emergence(
            virtual, study_items, baseline, trans, perturbation_controls(variants_cfg)
        ),
        "direction_tests": direction_tests(answers, baseline),
        "probability_shift_items": shifts["items"],
        "probability_shifts": shifts["summary"],
        "paired_tests": paired_tests(per_item, baseline, n_boot, seed),
        "regression_coefficients": reg["coefficients"],
        "regression_tests": reg["tests"],
        "transition_model": transition_model(per_item, variants, baseline),
        "sparsity_coefficients": sparse["coefficients"],
        "sparsity_tests": sparse["tests"],
    }
    if ppl is not None:
        out["perplexity"] = perplexity_summary(ppl, baseline, n_boot, seed)
    return out
