"""Perturbation control variants: which compressed variant each one controls for.

A variant spec ``{perturb: {like: q4, seed: 0}}`` adds Gaussian noise of the same per-matrix RMS
as the variant named in ``like`` (q4 here). Tables, summary and figures show its numbers beside
that variant's: it is what a random change of the same size does to the coupled answers.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def perturbation_controls(variants_cfg: Mapping[str, Mapping[str, Any]] | None) -> dict[str, str]:
    """``control variant -> the variant it controls for`` (its ``perturb.like``), in config order."""
    out: dict[str, str] = {}
    for name, spec in (variants_cfg or {}).items():
        perturb = spec.get("perturb") if isinstance(spec, Mapping) else None
        if isinstance(perturb, Mapping) and perturb.get("like"):
            out[name] = str(perturb["like"])
    return out


def controls_of(variants_cfg: Mapping[str, Mapping[str, Any]] | None) -> dict[str, list[str]]:
    """``variant -> its perturbation controls`` (the inverse of :func:`perturbation_controls`)."""
    out: dict[str, list[str]] = {}
    for control, like in perturbation_controls(variants_cfg).items():
        out.setdefault(like, []).append(control)
    return out
