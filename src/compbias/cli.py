"""Command-line helpers: ``compbias tiny-model OUT``, ``compbias gguf-convert SPEC OUT``,
``compbias verify [DIR] [--configfile FILE ...]``, ``compbias check-config FILE ...``."""

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
    ver = sub.add_parser(
        "verify",
        help="check every shard, table and checkpoint of a results tree "
        "and print the command that rebuilds the bad ones",
    )
    ver.add_argument("directory", nargs="?", default=".", help="the study's working directory (holding results/)")
    ver.add_argument(
        "--configfile", nargs="*", default=[], help="the study's config files, for the printed rebuild command"
    )
    chk = sub.add_parser(
        "check-config",
        help="parse and validate config files (merged in order, like --configfile); YAML errors name the file and line",
    )
    chk.add_argument("files", nargs="+")
    args = parser.parse_args(argv)
    if args.cmd == "check-config":
        from compbias.config import ConfigError, load_yaml, validate

        try:
            merged: dict = {}
            for f in args.files:
                _merge(merged, load_yaml(f) or {})
            validate(merged)
        except ConfigError as exc:
            raise SystemExit(str(exc)) from None
        print(f"{' + '.join(args.files)}: valid")
        return
    if args.cmd == "verify":
        from pathlib import Path

        from compbias.checks.verify import format_report, study_args, verify_tree

        report = verify_tree(args.directory)
        snakefile = Path(__file__).resolve().parents[2] / "workflow" / "Snakefile"
        workdir = Path(args.directory).resolve()
        print(
            format_report(
                report,
                study_args(
                    snakefile if snakefile.exists() else None,
                    workdir if workdir != Path.cwd() else None,
                    [Path(c).resolve() for c in args.configfile],
                ),
            )
        )
        raise SystemExit(1 if report.problems else 0)
    if args.cmd == "tiny-model":
        from compbias.testing.tiny import build_tiny_model

        print(build_tiny_model(args.out, seed=args.seed))
    else:
        from compbias.compress.gguf import convert_gguf, resolve_gguf

        print(convert_gguf(resolve_gguf(args.spec), args.out, args.dtype))


def _merge(into: dict, new: dict) -> None:
    """Snakemake's merge of config files: nested mappings are updated key by key."""
    for k, v in new.items():
        if isinstance(v, dict) and isinstance(into.get(k), dict):
            _merge(into[k], v)
        else:
            into[k] = v


if __name__ == "__main__":
    main()
