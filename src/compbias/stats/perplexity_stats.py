"""Perplexity per model x variant with delta-method SEs and paired change vs the baseline."""

from __future__ import annotations

import numpy as np
import polars as pl

from compbias.stats.metrics import grouped_bootstrap

_MV = ["model", "variant"]


def perplexity_summary(ppl: pl.DataFrame, baseline: str, n_boot: int = 2000, seed: int = 0) -> pl.DataFrame:
    """Corpus perplexity of each variant and its paired percentage change vs ``baseline``.

    ``ppl``: the per-sequence tables of docs/outputs.md stacked with ``model`` and
    ``variant`` columns (seq_id, n_tokens, nll_sum).

    * ``perplexity`` = exp(R), R = sum(nll_sum) / sum(n_tokens) (``nll_per_token``).
    * ``ppl_se``: delta method over sequences, treating R as a ratio estimator:
      Var(R) ~ n / (n - 1) * sum_i (nll_i - R * tok_i)^2 / (sum_i tok_i)^2, SE = perplexity * sqrt(Var(R))
      (NaN for a single sequence).
    * ``pct_change`` = 100 * (perplexity_variant / perplexity_baseline - 1) over the ``n_paired``
      sequences (same seq_id) scored by both, with a percentile 95% interval ``pct_lo``/``pct_hi``
      and two-sided p ``pct_p`` from ``n_boot`` paired resamples of sequences (seeded).
      The baseline's own row is 0 with a degenerate interval; null when no sequence is shared
      with the baseline.

    Columns: model, variant, n_seqs, n_tokens, nll_per_token, perplexity, ppl_se, n_paired,
    pct_change, pct_lo, pct_hi, pct_p.
    """
    tok, nll = pl.col("n_tokens"), pl.col("nll_sum")
    r = nll.sum().over(_MV) / tok.sum().over(_MV)
    per = (
        ppl.with_columns(_d2=(nll - r * tok) ** 2)
        .group_by(_MV)
        .agg(pl.len().cast(pl.Int64).alias("n_seqs"), tok.sum().cast(pl.Int64), nll.sum(), pl.sum("_d2"))
        .with_columns(nll_per_token=pl.col("nll_sum") / pl.col("n_tokens"))
        .with_columns(
            perplexity=pl.col("nll_per_token").exp(),
            _var=pl.when(pl.col("n_seqs") > 1).then(
                pl.col("n_seqs") / (pl.col("n_seqs") - 1) * pl.col("_d2") / pl.col("n_tokens").cast(pl.Float64) ** 2
            ),
        )
        .with_columns(ppl_se=(pl.col("perplexity") * pl.col("_var").sqrt()).fill_null(float("nan")))
    )
    base = ppl.filter(pl.col("variant") == baseline).select("model", "seq_id", nll_base="nll_sum", tok_base="n_tokens")
    paired = ppl.join(base, on=["model", "seq_id"], how="inner")
    boot = grouped_bootstrap(
        paired,
        _MV,
        ["nll_sum", "n_tokens", "nll_base", "tok_base"],
        {"pct": lambda m: 100 * np.expm1(m[..., 0] / m[..., 1] - m[..., 2] / m[..., 3])},
        n_boot,
        seed,
    ).rename({"pct": "pct_change"})
    n_paired = paired.group_by(_MV).agg(pl.len().cast(pl.Int64).alias("n_paired"))
    return (
        per.join(n_paired, on=_MV, how="left")
        .join(boot, on=_MV, how="left")
        .select(
            *_MV,
            "n_seqs",
            "n_tokens",
            "nll_per_token",
            "perplexity",
            "ppl_se",
            pl.col("n_paired").fill_null(0),
            "pct_change",
            "pct_lo",
            "pct_hi",
            "pct_p",
        )
        .sort(_MV)
    )
