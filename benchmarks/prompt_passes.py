"""How much of a workflow run's wall time the scores jobs' prompt passes cover, from their logs.

    python -m benchmarks.prompt_passes LOGS_DIR [WALL_SECONDS]

Each scores job logs ``one prompt pass: X s`` when its pass ends (the model's work on the
prompts, continuations included); the pass spans the X seconds before that line's time stamp.
Prints the passes' summed seconds and the seconds during which at least one ran (their union),
and with WALL_SECONDS the union's share of it.
"""

from __future__ import annotations

import argparse
import re
from datetime import datetime
from pathlib import Path

_LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3}) INFO one prompt pass: ([\d.]+) s")


def pass_intervals(logs: Path) -> list[tuple[float, float]]:
    """(start, end) in epoch seconds of every prompt pass logged under ``logs``, sorted."""
    out = []
    for log in logs.rglob("*.log"):
        for line in log.read_text(errors="replace").splitlines():
            m = _LINE.match(line)
            if m:
                end = datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S").timestamp() + int(m.group(2)) / 1000
                out.append((end - float(m.group(3)), end))
    return sorted(out)


def union_seconds(intervals: list[tuple[float, float]]) -> float:
    """Seconds covered by at least one of the sorted ``intervals``."""
    total, reach = 0.0, float("-inf")
    for start, end in intervals:
        if end > reach:
            total += end - max(start, reach)
            reach = end
    return total


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(
        prog="python -m benchmarks.prompt_passes",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("logs", help="the run's logs directory")
    ap.add_argument("wall", nargs="?", type=float, help="the run's wall seconds")
    args = ap.parse_args(argv)
    passes = pass_intervals(Path(args.logs))
    union = union_seconds(passes)
    share = f" prompt_pass_share_of_wall={union / args.wall:.2f}" if args.wall else ""
    print(
        f"RESULT prompt_passes={len(passes)} prompt_pass_summed_s={sum(e - s for s, e in passes):.1f} "
        f"prompt_pass_union_s={union:.1f}{share}"
    )


if __name__ == "__main__":
    main()
