"""Timing helper shared by the benchmark scripts."""

from __future__ import annotations

import time


def timed(fn, repeat: int) -> float:
    """Mean milliseconds of ``fn()`` after two warm-up calls."""
    fn()
    fn()
    start = time.perf_counter()
    for _ in range(repeat):
        fn()
    return (time.perf_counter() - start) / repeat * 1e3
