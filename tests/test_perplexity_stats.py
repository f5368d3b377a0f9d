import math

import numpy as np
import polars as pl
import pytest

from compbias.stats.perplexity_stats import perplexity_summary


def _ppl() -> pl.DataFrame:
    return pl.DataFrame(
        {
            "model": "m",
            "variant": ["base"] * 3 + ["q4"] * 3,
            "seq_id": [1, 2, 3] * 2,
            "n_tokens": [10, 20, 10] * 2,
            "nll_sum": [20.0, 30.0, 10.0, 22.0, 36.0, 12.0],
        }
    )


def test_perplexity_hand_values():
    s = perplexity_summary(_ppl(), "base", n_boot=500, seed=0)
    assert s.columns == [
        "model",
        "variant",
        "n_seqs",
        "n_tokens",
        "nll_per_token",
        "perplexity",
        "ppl_se",
        "n_paired",
        "pct_change",
        "pct_lo",
        "pct_hi",
        "pct_p",
    ]
    base, q4 = s.row(0, named=True), s.row(1, named=True)
    # base: R = 60/40 = 1.5, ppl = e^1.5 = 4.481689; d = 20-15, 30-30, 10-15 -> sum d^2 = 50
    # Var(R) = 3/2 * 50 / 40^2 = .046875 -> SE = 4.481689 * .216506 = .970314
    assert (base["n_seqs"], base["n_tokens"], base["nll_per_token"]) == (3, 40, 1.5)
    assert (base["perplexity"], base["ppl_se"]) == pytest.approx((4.481689, 0.970314), abs=1e-6)
    # q4: R = 70/40 = 1.75, ppl = e^1.75 = 5.754603; d = 4.5, 1, -5.5 -> sum d^2 = 51.5
    # Var(R) = 1.5 * 51.5 / 1600 = .04828125 -> SE = 5.754603 * .219730 = 1.264458
    assert (q4["perplexity"], q4["ppl_se"]) == pytest.approx((5.754603, 1.264458), abs=1e-6)
    # paired change: 100 * (e^(1.75-1.5) - 1) = 28.402542 %
    assert q4["pct_change"] == pytest.approx(28.402542, abs=1e-6) and q4["n_paired"] == 3
    assert q4["pct_lo"] <= q4["pct_change"] <= q4["pct_hi"] and q4["pct_lo"] > 0  # every seq got worse
    assert (base["pct_change"], base["pct_lo"], base["pct_hi"]) == (0.0, 0.0, 0.0)
    assert s.equals(perplexity_summary(_ppl(), "base", n_boot=500, seed=0))


def test_pairing_uses_common_sequences_only():
    extra = pl.DataFrame({"model": "m", "variant": "q4", "seq_id": [4], "n_tokens": [10], "nll_sum": [100.0]})
    s = perplexity_summary(pl.concat([_ppl(), extra]), "base", n_boot=200, seed=1)
    q4 = s.filter(variant="q4").row(0, named=True)
    assert (q4["n_seqs"], q4["n_paired"]) == (4, 3)
    assert q4["perplexity"] == pytest.approx(math.exp(170 / 50))  # all 4 sequences
    assert q4["pct_change"] == pytest.approx(100 * math.expm1(0.25))  # paired on seq 1..3 only


def test_single_sequence_and_missing_baseline():
    one = _ppl().filter(seq_id=1)
    s = perplexity_summary(one, "base", n_boot=100, seed=0)
    assert s["ppl_se"].is_nan().all()
    assert s.filter(variant="q4")["pct_change"][0] == pytest.approx(100 * math.expm1(0.2))  # 2.2 vs 2.0
    no_base = perplexity_summary(_ppl().filter(variant="q4"), "base", n_boot=100, seed=0)
    assert no_base["n_paired"][0] == 0 and no_base["pct_change"].is_null().all()
    assert np.isfinite(no_base["perplexity"][0])
