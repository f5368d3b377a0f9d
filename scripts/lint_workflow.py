"""Gate on Snakemake's linter: fail on any finding of `snakemake --lint` except the one the
project declines, a conda environment or container per rule (README "Software environment":
the package's own environment, with the MLX wheel the user chose, runs every rule).

Usage: .venv/bin/python scripts/lint_workflow.py [--configfile FILE]   (default .test/config.yaml,
whose model .test/resources/tiny-llama is built by `compbias tiny-model`; `make lint` does it)

It runs `snakemake --lint text` and reads its report ("Lints for WHERE:" then "    * TITLE:"
per finding). Not `--lint json`: Snakemake 9.27's command line accepts it but prints text (cli.py
calls lint() without the format), and its JSON writer fails on a snakefile-level finding
(LocalSourceFile is not JSON serializable), so neither the option nor the API gives JSON.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SNAKEFILE = ROOT / "workflow" / "Snakefile"
#: Lint titles accepted as they are (the decision is in the module docstring).
ACCEPTED = {"Specify a conda environment or container for each rule."}


def lint(configfile: Path) -> tuple[subprocess.CompletedProcess, list[tuple[str, str]]]:
    """Run Snakemake's linter on the workflow with ``configfile``: the run and its findings,
    (where, title) for each, where being a snakefile or "rule NAME (line N, FILE)"."""
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "snakemake",
            "-s",
            str(SNAKEFILE),
            "--directory",
            str(ROOT),
            "--lint",
            "text",
            "--configfile",
            str(configfile),
        ],
        text=True,
        capture_output=True,
    )
    rows, where = [], None
    for line in (run.stderr + run.stdout).splitlines():
        if m := re.fullmatch(r"Lints for (.+):", line):
            where = m[1]
        elif (m := re.fullmatch(r"    \* (.+):", line)) and where is not None:
            rows.append((where, m[1]))
    return run, rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configfile", type=Path, default=ROOT / ".test" / "config.yaml")
    args = parser.parse_args(argv)
    run, rows = lint(args.configfile.resolve())
    if run.returncode != 0 and not rows:  # the workflow did not load: no lint report
        print(run.stderr[-5000:] + run.stdout[-2000:], file=sys.stderr)
        print("lint_workflow: snakemake --lint failed before linting", file=sys.stderr)
        return 1
    accepted = [r for r in rows if r[1] in ACCEPTED]
    failing = [r for r in rows if r[1] not in ACCEPTED]
    for where, title in failing:
        print(f"{where}: {title}")
    for title in sorted(ACCEPTED):
        n = sum(1 for r in accepted if r[1] == title)
        print(f"accepted ({n} rules): {title}")
    print(f"lint_workflow: {len(failing)} finding(s) to fix, {len(accepted)} accepted")
    return 1 if failing else 0


if __name__ == "__main__":
    sys.exit(main())
