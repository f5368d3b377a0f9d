"""Command-line helpers: ``compbias tiny-model OUT``, ``compbias gguf-convert SPEC OUT``."""

from __future__ import annotations

import argparse


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="compbias", description=__doc__)
    sub = parser.add_subparsers(dest="cmd", required=True)
    tiny = sub.add_parser("tiny-model", help="write the tiny random-weight test model")
    tiny.add_argument("out")
    tiny.add_argument("--seed", type=int, default=0)
    gg = sub.add_parser("gguf-convert", help="turn a GGUF file into an MLX checkpoint")
    gg.add_argument("spec", help="a .gguf path or package:NAME")
    gg.add_argument("out")
    gg.add_argument("--dtype", default="bfloat16")
    args = parser.parse_args(argv)
    if args.cmd == "tiny-model":
        from .tiny import build_tiny_model

        print(build_tiny_model(args.out, seed=args.seed))
    else:
        from .gguf import convert_gguf, resolve_gguf

        print(convert_gguf(resolve_gguf(args.spec), args.out, args.dtype))


if __name__ == "__main__":
    main()
