"""Random-weight checkpoints of a study model's shape, for throughput benchmarks.

    python -m benchmarks.random_model OUT --tokenizer DIR [--shape mistral-7b] [--quantize 4]
                                        [--data DIR] [--letter-mass 0.95]

No 7B checkpoint can be downloaded offline, and throughput depends on the shape, not the
weights. Writes OUT/bf16 (llama with the shape's dimensions, the given tokenizer's vocabulary
and chat template) and, with --quantize, OUT/q4 etc. made by ``mlx_lm.convert`` (affine, group
64). The LM head is tilted towards the letters A/B/C so that, on the benchmark's own prompts,
the mean first-token letter probability at temperature --temp is --letter-mass, as with a real instruction model.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import compbias  # noqa: F401  (optimized BLAS before MLX on a Linux CPU)
from compbias.inference.prompts import PromptSpec
from compbias.testing.tiny import SHAPES, build_random_model


def probe_prompts(tokenizer_dir: str, data: str | None, n: int) -> list[list[int]]:
    """Chat-templated prompts of the first ``n`` benchmark items."""
    from mlx_lm.utils import load_tokenizer

    from benchmarks.answering import real_items, synthetic_items

    tokenizer = load_tokenizer(Path(tokenizer_dir))
    items = real_items(data, n) if data else synthetic_items(n)
    return PromptSpec().tokens(tokenizer, items, 42)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(
        prog="python -m benchmarks.random_model",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("out")
    ap.add_argument("--tokenizer", required=True, help="directory with tokenizer.json and chat template")
    ap.add_argument("--shape", default="mistral-7b", help=f"one of {sorted(SHAPES)} or a JSON dict")
    ap.add_argument("--quantize", type=int, nargs="*", default=[4], help="bits of extra variants")
    ap.add_argument("--data", default=None, help="BBQ JSONL directory for the probe prompts")
    ap.add_argument("--probes", type=int, default=16)
    ap.add_argument("--letter-mass", type=float, default=0.95)
    ap.add_argument("--temp", type=float, default=0.3, help="sampling temperature of --letter-mass")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    shape = SHAPES.get(args.shape) or json.loads(args.shape)
    out = Path(args.out)
    t = time.perf_counter()
    base = build_random_model(
        out / "bf16",
        shape,
        tokenizer_dir=args.tokenizer,
        seed=args.seed,
        probes=probe_prompts(args.tokenizer, args.data, args.probes),
        letter_mass=args.letter_mass,
        temperature=args.temp,
        dtype="bfloat16",
    )
    print(f"{base}: {args.shape}, {time.perf_counter() - t:.1f} s")
    from mlx_lm import convert

    for bits in args.quantize:
        t = time.perf_counter()
        q = out / f"q{bits}"
        shutil.rmtree(q, ignore_errors=True)  # mlx_lm.convert refuses an existing directory
        convert(str(base), mlx_path=str(q), quantize=True, q_bits=bits, q_group_size=64)
        print(f"{q}: {time.perf_counter() - t:.1f} s")


if __name__ == "__main__":
    main()
