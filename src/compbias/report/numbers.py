"""Numbers as the report writes them, in ``summary.md`` and on the figures' axes: a value that
is None, NaN or not a number reads as ``n/a``, percentages have one decimal, and ``-0.0``
never appears."""

from __future__ import annotations

import math

NA = "n/a"
UNDETERMINED = 0.5
"""An expected emergence is not shown (``n/a`` in summary.md, no range on the figure) where more
than this share of the baseline-unbiased items rests on a first token that needs continuing
(:mod:`compbias.stats.virtual_seeds`)."""


def as_float(x: object) -> float:
    """``x`` as float, NaN for None/NaN/non-numbers."""
    try:
        f = float(x)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return float("nan")
    return f


def finite(x: object) -> bool:
    """True when ``x`` is a finite number (False for None, NaN, infinities and non-numbers)."""
    return math.isfinite(as_float(x))


def fixed(x: object, digits: int = 1) -> str:
    """``x`` with ``digits`` decimals; ``n/a`` for None/NaN; never ``-0.0``."""
    v = as_float(x)
    if not math.isfinite(v):
        return NA
    s = f"{v:.{digits}f}"
    return s[1:] if s.startswith("-") and float(s) == 0 else s


def pct(x: object, scale: float = 100.0) -> str:
    """A percentage with one decimal (``x`` a fraction when ``scale`` is 100, else already in %)."""
    s = fixed(float(x) * scale) if finite(x) else NA  # type: ignore[arg-type]
    return s if s == NA else s + "%"


def interval(lo: object, hi: object, scale: float = 100.0) -> str:
    """``[lo, hi]`` scaled like :func:`pct` (without the ``%``); ``[n/a]`` unless both are finite."""
    if not (finite(lo) and finite(hi)):
        return f"[{NA}]"
    return f"[{fixed(float(lo) * scale)}, {fixed(float(hi) * scale)}]"  # type: ignore[arg-type]


def stat(name: str, x: object) -> str:
    """``name = x`` with three significant digits (``p = 0.0123``), ``name = n/a`` when not finite."""
    return f"{name} = {float(x):.3g}" if finite(x) else f"{name} = {NA}"  # type: ignore[arg-type]


def pct_tick(x: float, _pos: object = None) -> str:
    """An axis tick of a change in %: ``0``, ``+10%``, ``-0.5%``."""
    return "0" if x == 0 else f"{x:+g}%"
