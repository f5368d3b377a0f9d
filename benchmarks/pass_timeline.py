"""Where the prompt pass's time goes beyond its forwards: a timeline of its calls, per variant.

    python -m benchmarks.pass_timeline MODEL_DIR [--data DIR] [--items 2000]
                                       [--variants default,scoreonly,side0,prefetch2,second_pass]

Loads the model as ``benchmarks.answering`` does and times, on the same items and batches: the
forwards alone (``answering.forward_seconds``, twice), then each variant of (c)
(``answering.run_compbias``):

* ``default``: the workflow's pass (continuations from each batch's cache, on a second stream);
* ``side0``: the continuations on the default stream (``COMPBIAS_SIDE_STREAM=0``);
* ``prefetch2`` / ``prefetch3``: two or three batches launched ahead (``scoring.PREFETCH``);
* ``second_pass``: ``runtime.continuation: second_pass``;
* ``scoreonly``: ``answering.score_items`` alone (no answers, no kept caches).

Each variant's calls are timed by wrapping, where their callers look them up,
``scoring.logits_at`` (building a batch's graph: ``launch``), ``scoring.host_logits`` (the copy
that waits for a batch's forward: ``wait``), ``scoring.distribution_rows`` (``heads``) and the
decoder's ``continue_batch`` (``continue``). The time between a batch's ``launch`` and the next
event is ``mx.async_eval``, which blocks while too many of MLX's committed graphs are in flight.
Prints one ``RESULT variant=...`` line per variant (seconds summed per kind, MLX's peak) and,
with ``--timeline``, every event of the first variant.
"""

from __future__ import annotations

import compbias  # noqa: F401  (the optimized BLAS before MLX, as in every job)

# isort: split
import argparse
import os
import time
from contextlib import contextmanager

import mlx.core as mx

from benchmarks import answering as bench
from compbias.inference import scoring
from compbias.inference.answering import score_items
from compbias.inference.runtime import batch_limits, load_model, resolve_runtime

VARIANTS = ("default", "side0", "prefetch2", "prefetch3", "second_pass", "scoreonly")


@contextmanager
def recording():
    """Events (kind, start, end, rows) of the pass's calls while the block runs."""
    events: list[tuple[str, float, float, int]] = []

    def timed(fn, kind, rows):
        def wrapper(*args, **kwargs):
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                events.append((kind, start, time.perf_counter(), rows(args)))

        return wrapper

    wrapped = [
        (scoring, "logits_at", "launch", lambda a: a[1].shape[0]),
        (scoring, "host_logits", "wait", lambda a: len(a[0].idx)),
        (scoring, "distribution_rows", "heads", lambda a: len(a[0])),
        (bench.TimedDecoder, "continue_batch", "continue", lambda a: len(a[2])),
    ]
    with bench.wrapping(wrapped, timed):
        yield events


def run_variant(variant: str, model, tokenizer, items, runtime, limits) -> tuple[float, float]:
    """(seconds, of which continuing) of one variant of (c)."""
    prefetch, side = scoring.PREFETCH, os.environ.get("COMPBIAS_SIDE_STREAM")
    scoring.PREFETCH = {"prefetch2": 2, "prefetch3": 3}.get(variant, prefetch)
    os.environ["COMPBIAS_SIDE_STREAM"] = "0" if variant == "side0" else "1"
    try:
        start = time.perf_counter()
        if variant == "scoreonly":
            score_items(model, tokenizer, items, bench.PromptSpec(), bench.STUDY_SEEDS[0], 0.3, *limits)
            return time.perf_counter() - start, 0.0
        mode = "second_pass" if variant == "second_pass" else "batch_cache"
        _, _, st = bench.run_compbias(model, tokenizer, items, bench.STUDY_SEEDS, 0.3, runtime, *limits, mode)
        return time.perf_counter() - start, st.decode_seconds
    finally:
        scoring.PREFETCH = prefetch
        if side is None:
            os.environ.pop("COMPBIAS_SIDE_STREAM", None)
        else:
            os.environ["COMPBIAS_SIDE_STREAM"] = side


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(
        prog="python -m benchmarks.pass_timeline",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("model")
    ap.add_argument("--data", help="upstream BBQ JSONL directory (default: built-in items)")
    ap.add_argument("--items", type=int, default=2000)
    ap.add_argument("--variants", default="default,scoreonly,default")
    ap.add_argument("--timeline", action="store_true", help="print every event of the first variant")
    args = ap.parse_args(argv)
    variants = args.variants.split(",")
    if unknown := set(variants) - set(VARIANTS):
        ap.error(f"unknown variants {sorted(unknown)}; choose from {VARIANTS}")

    runtime = resolve_runtime()
    limits = batch_limits(runtime.device)
    model, tokenizer, _ = load_model(args.model, runtime)
    items = bench.real_items(args.data, args.items) if args.data else bench.synthetic_items(args.items)
    prompts = bench.PromptSpec().tokens(tokenizer, items, bench.STUDY_SEEDS[0])
    bench.run_compbias(model, tokenizer, items.head(4), bench.STUDY_SEEDS, 0.3, runtime, *limits)  # warm-up
    n_prefix, padded = bench.run_tokens(prompts, *limits)
    flops = bench.computed_flops(bench.param_counts(model), n_prefix, padded, len(prompts))
    matmul = bench.matmul_gflops(*bench.matmul_shape(runtime.device, bench.weight_dtype(model)))[0] * 1e9
    mx.reset_peak_memory()
    forward = min(bench.forward_seconds(model, prompts, *limits) for _ in range(2))
    print(
        f"RESULT variant=forwards_alone total_s={forward:.3f} computed_vs_matmul={flops / forward / matmul:.3f} "
        f"peak_mib={mx.get_peak_memory() / 2**20:.0f} matmul_gflops={matmul / 1e9:.1f}"
    )
    for k, variant in enumerate(variants):
        mx.synchronize()
        mx.reset_peak_memory()
        with recording() as events:
            origin = time.perf_counter()
            total, continuing = run_variant(variant, model, tokenizer, items, runtime, limits)
        sums = {kind: 0.0 for kind in ("launch", "wait", "heads", "continue")}
        for kind, start, end, _ in events:
            sums[kind] += end - start
        print(
            f"RESULT variant={variant} total_s={total:.3f} continuing_s={continuing:.3f} "
            f"computed_vs_matmul={flops / (total - continuing) / matmul:.3f} "
            + " ".join(f"{kind}_s={v:.3f}" for kind, v in sums.items())
            + f" peak_mib={mx.get_peak_memory() / 2**20:.0f}"
        )
        if args.timeline and k == 0:
            for kind, start, end, rows in events:
                print(f"    {kind:<9}{start - origin:8.3f}{end - origin:8.3f}{end - start:8.3f}  rows={rows}")


if __name__ == "__main__":
    main()
