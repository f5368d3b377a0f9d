"""Pruning settings of a variant: :class:`PruneSpec` and its Wanda :class:`CalibrationSpec`,
checked by :func:`validate_spec`."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np

METHODS = ("random", "magnitude", "wanda")
GRANULARITIES = ("row", "layer")
DEFAULT_DATASET = "allenai/c4"


@dataclass(frozen=True)
class CalibrationSpec:
    """Wanda calibration corpus: ``n_samples`` windows of ``seq_len`` tokens drawn with ``seed``.

    ``source`` is a local directory / file / glob of .txt or .jsonl (field "text") files, or a
    Hugging Face dataset name (loaded with ``subset`` and ``split``, streaming).
    """

    n_samples: int = 128
    seq_len: int = 2048
    seed: int = 0
    source: str = DEFAULT_DATASET
    subset: str | None = "en"
    split: str = "validation"


@dataclass(frozen=True)
class PruneSpec:
    """A pruning variant: method, target sparsity and method options."""

    method: str
    sparsity: float
    granularity: str = "row"
    mask_seed: int = 0
    calibration: CalibrationSpec = field(default_factory=CalibrationSpec)


def fail(variant: str, msg: str) -> ValueError:
    """The ValueError naming ``variant`` that every pruning check raises."""
    return ValueError(f"variant {variant!r}: {msg}")


def _is_int(x: Any) -> bool:
    return isinstance(x, (int, np.integer)) and not isinstance(x, bool)


def validate_spec(variant_name: str, spec_dict: Mapping[str, Any]) -> PruneSpec:
    """Check a variant's pruning settings and return a :class:`PruneSpec`.

    Keys read: method, sparsity, granularity, mask_seed, calibration (a mapping with the
    :class:`CalibrationSpec` fields). Other top-level keys are ignored. Raises ValueError naming
    the variant for an unknown method, a sparsity outside [0, 1), a bad granularity or bad
    calibration settings.
    """
    method = spec_dict.get("method")
    if method not in METHODS:
        raise fail(variant_name, f"unknown pruning method {method!r}; expected one of {METHODS}")
    sparsity = spec_dict.get("sparsity")
    if not isinstance(sparsity, (int, float)) or isinstance(sparsity, bool) or not 0 <= sparsity < 1:
        raise fail(variant_name, f"sparsity must be a number in [0, 1), got {sparsity!r}")
    granularity = spec_dict.get("granularity", "row")
    if granularity not in GRANULARITIES:
        raise fail(variant_name, f"unknown granularity {granularity!r}; expected one of {GRANULARITIES}")
    if method != "magnitude" and granularity != "row":
        raise fail(variant_name, f"granularity {granularity!r} applies only to magnitude pruning")
    mask_seed = spec_dict.get("mask_seed", 0)
    if not _is_int(mask_seed):
        raise fail(variant_name, f"mask_seed must be an integer, got {mask_seed!r}")
    calib = dict(spec_dict.get("calibration") or {})
    unknown = set(calib) - {f.name for f in fields(CalibrationSpec)}
    if unknown:
        raise fail(variant_name, f"unknown calibration keys {sorted(unknown)}")
    cal = CalibrationSpec(**calib)
    for key in ("n_samples", "seq_len"):
        if not _is_int(getattr(cal, key)) or getattr(cal, key) <= 0:
            raise fail(variant_name, f"calibration {key} must be a positive integer")
    if not _is_int(cal.seed):
        raise fail(variant_name, "calibration seed must be an integer")
    return PruneSpec(method, float(sparsity), granularity, int(mask_seed), cal)
