"""Direction of the answers that moved: toward the biased or toward the anti-stereotyped option?

"Became biased" counts items that gained a biased answer. A variant that only answers "unknown"
less often, in both directions, raises it as well; this test tells the two apart by comparing,
on the same items, the moves to the biased option with the moves to the anti-stereotyped one.
"""

from __future__ import annotations

import polars as pl
from scipy.stats import binomtest

from compbias.stats.metrics import KEYS, bh_qvalues, main_rows, ratio, resolved_rows, with_all_category

POPULATIONS = ("unbiased", "unknown")
"""``unbiased``: no baseline seed answered biased (the headline's items); ``unknown``: no baseline
seed answered biased or anti (every valid baseline answer was "unknown")."""

DIRECTION_COLUMNS = [
    *KEYS,
    "population",
    "n_items",
    "n_to_biased",
    "n_to_anti",
    "n_both",
    "n_biased_only",
    "n_anti_only",
    "share_to_biased",
    "share_to_anti",
    "diff",
    "p_value",
    "q_value",
]


def item_moves(answers: pl.DataFrame, baseline: str) -> pl.DataFrame:
    """Per model x variant (!= baseline) x item, over the seeds answered by both (paired by seed,
    i.e. by the shared random numbers): base_biased / base_anti (some baseline seed answered
    so), to_biased (some seed answered biased at the variant but not at the baseline), to_anti
    (likewise anti). Placebo rows and unresolved-target items are left out."""
    a = resolved_rows(main_rows(answers)).select("model", "variant", "item_id", "category", "seed", "role")
    base = a.filter(pl.col("variant") == baseline).select("model", "item_id", "seed", role_base="role")
    role, rb = pl.col("role"), pl.col("role_base")
    return (
        a.filter(pl.col("variant") != baseline)
        .join(base, on=["model", "item_id", "seed"], how="inner")
        .group_by("model", "variant", "item_id")
        .agg(
            pl.first("category"),
            base_biased=(rb == "biased").any(),
            base_anti=(rb == "anti").any(),
            to_biased=((role == "biased") & (rb != "biased")).any(),
            to_anti=((role == "anti") & (rb != "anti")).any(),
        )
    )


def _binom_p(b: int, c: int) -> float:
    """Two-sided exact binomial (= exact McNemar) p of ``b`` vs ``c`` discordant items; 1 if none."""
    return 1.0 if b + c == 0 else float(binomtest(b, b + c, 0.5).pvalue)


def direction_tests(answers: pl.DataFrame, baseline: str) -> pl.DataFrame:
    """Moves to the biased vs to the anti-stereotyped option, per model x variant x category
    (and ``"all"``) x population (:data:`POPULATIONS`), with an exact paired test.

    Per item (:func:`item_moves`): to_biased / to_anti. In population ``unbiased`` to_biased is
    exactly "became biased"; to_anti is "some seed moved to anti". Those items were selected for
    having no biased answer, so even a direction-free change can move them to biased more often
    than to anti (an item already answered anti by a seed cannot move there); population
    ``unknown`` (no biased and no anti baseline answer) is symmetric: there, under "only fewer
    unknown answers", both moves are equally likely.

    Columns: model, variant, category, population, n_items, n_to_biased, n_to_anti, n_both,
    n_biased_only, n_anti_only, share_to_biased, share_to_anti (of n_items), diff (=
    share_to_biased - share_to_anti), p_value (two-sided exact binomial on n_biased_only vs
    n_anti_only, i.e. exact McNemar; 1 when both are 0), q_value (Benjamini-Hochberg over every
    row of the table).
    """
    m = item_moves(answers, baseline)
    pops = [
        m.filter(~pl.col("base_biased")).with_columns(population=pl.lit("unbiased")),
        m.filter(~pl.col("base_biased") & ~pl.col("base_anti")).with_columns(population=pl.lit("unknown")),
    ]
    tb, ta = pl.col("to_biased"), pl.col("to_anti")
    counts = (
        with_all_category(pl.concat(pops))
        .group_by(*KEYS, "population")
        .agg(
            pl.len().cast(pl.Int64).alias("n_items"),
            *(
                e.sum().cast(pl.Int64).alias(n)
                for n, e in (
                    ("n_to_biased", tb),
                    ("n_to_anti", ta),
                    ("n_both", tb & ta),
                    ("n_biased_only", tb & ~ta),
                    ("n_anti_only", ~tb & ta),
                )
            ),
        )
        .with_columns(share_to_biased=ratio("n_to_biased", "n_items"), share_to_anti=ratio("n_to_anti", "n_items"))
        .with_columns(diff=pl.col("share_to_biased") - pl.col("share_to_anti"))
        .sort(*KEYS, "population")
    )
    p = [_binom_p(b, c) for b, c in counts.select("n_biased_only", "n_anti_only").iter_rows()]
    counts = counts.with_columns(p_value=pl.Series(p, dtype=pl.Float64))
    return counts.with_columns(q_value=pl.Series(bh_qvalues(counts["p_value"]), dtype=pl.Float64)).select(
        DIRECTION_COLUMNS
    )
