"""Content keys of checkpoints: a short hash of what a checkpoint is built from.

A checkpoint lives at ``results/checkpoints/{model}/{variant}/{key}``, where the key hashes the
model's source and the variant's build spec (and, recursively, the key of the checkpoint it
starts from). A changed or mistyped source or spec therefore gives a new directory beside the
old one instead of rebuilding, and first deleting, the completed checkpoint; restoring the config
finds the old checkpoint again.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from compbias.config import model_source

KEY_LENGTH = 12


def digest(obj: Any, length: int = KEY_LENGTH) -> str:
    """Hex SHA-256 prefix of the canonical JSON of ``obj``."""
    text = json.dumps(obj, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def _kind(spec: Mapping[str, Any]) -> str | None:
    return next((k for k, v in spec.items() if isinstance(v, Mapping) and k != "calibration"), None)


def source_variant(variants: Mapping[str, Mapping[str, Any]], name: str, baseline: str) -> str | None:
    """The variant whose checkpoint ``name`` is built from: its ``base``, the baseline for a
    variant that transforms a local checkpoint (prune, perturb), or None (built from the model)."""
    spec = variants[name]
    if "base" in spec:
        return spec["base"]
    if any(k in spec for k in ("prune", "perturb")):
        return baseline
    return None


def checkpoint_key(config: Mapping[str, Any], model: str, variant: str) -> str:
    """Content key of the checkpoint of (``model``, ``variant``) under ``config``."""
    variants = config["variants"]
    spec = variants[variant]
    mspec = config["models"][model]
    kind, location = model_source(mspec)
    parts: dict[str, Any] = {"spec": spec}
    # variants named inside the spec (e.g. perturb: {like: q4}) contribute their specs
    sub = spec.get(_kind(spec) or "", {})
    if isinstance(sub, Mapping) and isinstance(sub.get("like"), str) and sub["like"] in variants:
        parts["like"] = variants[sub["like"]]
    if "checkpoint" in spec or "gguf" in spec:
        return digest(parts)  # a prebuilt checkpoint or GGUF file: the model source is unused
    src = source_variant(variants, variant, config["baseline"])
    if src is not None and src != variant:
        parts["from"] = checkpoint_key(config, model, src)
    else:
        parts["model"] = {
            "kind": kind,
            "location": location,
            "dtype": mspec.get("dtype") if isinstance(mspec, Mapping) else None,
        }
    return digest(parts)
