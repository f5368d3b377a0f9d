"""Expected emergence at study scale: virtual seed sets drawn from synthetic scores heads.

    python -m benchmarks.expected_emergence [--items 12148] [--sets 1000] [--seeds 5] [--threads 2] [--rng gumbel]
        [--max-head 64]

One checkpoint's scores table is simulated (``--items`` items; heads of 1 to ``--max-head`` tokens, as the
scores rule stores them: the most probable tokens covering 1 - 1e-6 of the mass, at most 64;
letters A/B/C plus non-letter tokens), and ``compbias.stats.virtual_seeds.virtual_outcomes`` draws
``--sets`` x ``--seeds`` first tokens per item, as the ``virtual_seeds`` rule does for one
(model, variant). Then ``compbias.stats.emergence.expected_emergence`` combines a baseline and a
variant. The paper's study runs the first step 15 times (3 models x 5 checkpoints), one job each.
The last line is ``RESULT items=.. sets=.. seeds=.. draw_seconds=.. draw_cpu_seconds=.. combine_seconds=..
peak_rss_mb=..`` (draw: one checkpoint's virtual_outcomes, wall and process CPU time).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import polars as pl

from benchmarks.memory import vm_hwm_mb
from compbias.stats.emergence import expected_emergence
from compbias.stats.virtual_seeds import virtual_outcomes


def synthetic_scores(
    n_items: int, seed: int, tilt: float = 0.0, max_head: int = 64
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(scores, items) of ``n_items`` items; ``tilt`` moves log-odds toward letter "A" (biased)."""
    rng = np.random.default_rng(seed)
    ids, probs, letters = [], [], []
    for _ in range(n_items):
        width = int(rng.integers(1, max_head + 1))
        logits = rng.normal(0, 3, width)
        logits[0] += tilt  # token 100 is the letter "A", the biased option
        p = np.exp(logits - logits.max())
        p /= p.sum()
        order = np.argsort(-p, kind="stable")
        tok = np.arange(100, 100 + width)[order]
        ids.append(tok.tolist())
        probs.append(p[order].tolist())
        letters.append([("A", "B", "C")[t - 100] if t < 103 else None for t in tok])
    item_ids = [f"age-{i}" for i in range(n_items)]
    scores = pl.DataFrame(
        {
            "item_id": item_ids,
            "top_ids": ids,
            "top_probs": probs,
            "top_letters": letters,
            "perm": [[0, 1, 2]] * n_items,
            "n_vocab": [49152] * n_items,
        },
        schema_overrides={"top_letters": pl.List(pl.String)},
    )
    items = pl.DataFrame(
        {
            "item_id": item_ids,
            "category": ["age"] * n_items,
            "unknown_idx": [2] * n_items,
            "biased_idx": [0] * n_items,
            "anti_idx": [1] * n_items,
        }
    )
    return scores, items


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(
        prog="python -m benchmarks.expected_emergence",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--items", type=int, default=12_148)
    ap.add_argument("--sets", type=int, default=1000)
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rng", default="gumbel")
    ap.add_argument(
        "--max-head", type=int, default=64, help="heads of 1..N tokens (SmolLM2 demo: median 6 at q8, 14 at q4)"
    )
    a = ap.parse_args(argv)
    base, items = synthetic_scores(a.items, 0, max_head=a.max_head)
    var, _ = synthetic_scores(a.items, 0, tilt=0.5, max_head=a.max_head)
    seeds = list(range(42, 42 + a.seeds))
    t0, c0 = time.perf_counter(), time.process_time()
    vb = virtual_outcomes({"fixed": base}, items, a.rng, a.sets, seeds, threads=a.threads)
    draw, draw_cpu = time.perf_counter() - t0, time.process_time() - c0
    vv = virtual_outcomes({"fixed": var}, items, a.rng, a.sets, seeds, threads=a.threads)
    virtual = pl.concat(
        [
            vb.with_columns(model=pl.lit("m"), variant=pl.lit("bf16")),
            vv.with_columns(model=pl.lit("m"), variant=pl.lit("q4")),
        ]
    )
    t1 = time.perf_counter()
    ee = expected_emergence(virtual, items, "bf16")
    combine = time.perf_counter() - t1
    r = ee.filter(pl.col("category") == "all").row(0, named=True)
    print(
        f"one checkpoint: {draw:.1f} s wall ({draw_cpu:.1f} s CPU) for {a.sets * a.seeds * a.items:,} draws; "
        f"combine {combine:.2f} s; "
        f"expected {r['expected_mean']:.3f} [{r['expected_lo']:.3f}, {r['expected_hi']:.3f}]"
    )
    print(
        f"RESULT items={a.items} sets={a.sets} seeds={a.seeds} draw_seconds={draw:.1f} draw_cpu_seconds={draw_cpu:.1f} "
        f"combine_seconds={combine:.2f} peak_rss_mb={vm_hwm_mb():.0f}"
    )


if __name__ == "__main__":
    main()
