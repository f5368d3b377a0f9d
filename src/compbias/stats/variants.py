"""What a variant is, read from the variants table: its place in config order and whether it is
a quantization/dtype variant or a pruning variant. Statistics and the report order and group
variants only through these functions."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import polars as pl

QUANT_KINDS = ("dtype", "quantize", "gguf", "checkpoint", "prebuilt")
"""Variant kinds on the precision axis (with the baseline); pruning variants carry a ``method``."""


def _empty(df: pl.DataFrame | None) -> bool:
    return df is None or df.is_empty()


def is_pruning(variants: pl.DataFrame | None) -> pl.Expr:
    """True on rows of pruning variants (a non-null ``method``); False for every row without one."""
    if variants is not None and "method" in variants.columns:
        return pl.col("method").is_not_null()
    return pl.lit(False)


def variant_order(variants: pl.DataFrame | None, present: Sequence[str] = ()) -> list[str]:
    """Variant names in config order (``order``), then any of ``present`` not in ``variants``."""
    names: list[str] = []
    if not _empty(variants) and "order" in variants.columns:
        names = variants.group_by("variant").agg(pl.min("order")).sort("order", "variant")["variant"].to_list()
    elif not _empty(variants):
        names = sorted(variants["variant"].unique().to_list())
    return names + sorted(set(present) - set(names))


def quantization_variants(variants: pl.DataFrame) -> list[str]:
    """Unpruned variants (kind dtype/quantize/gguf/checkpoint/prebuilt, no ``method``), config order."""
    q = variants.filter(~is_pruning(variants))
    if "kind" in q.columns:
        q = q.filter(pl.col("kind").is_in(QUANT_KINDS) | pl.col("is_baseline"))
    return variant_order(q)


def pruning_variants(variants: pl.DataFrame | None) -> list[str]:
    """Variants with a pruning ``method`` (pruned, possibly then quantized), config order."""
    if _empty(variants):
        return []
    return variant_order(variants.filter(is_pruning(variants)))


def resolve_baseline(variants: pl.DataFrame | None, baseline: str | None, present: Sequence[str]) -> str | None:
    """The baseline: ``baseline`` if given, else ``variants.is_baseline``, else ``bf16``, else the
    first of ``present`` in sorted order (None when nothing is present)."""
    if baseline:
        return baseline
    if not _empty(variants) and "is_baseline" in variants.columns:
        b = variants.filter(pl.col("is_baseline"))["variant"].unique().to_list()
        if b:
            return b[0]
    if "bf16" in present:
        return "bf16"
    return sorted(present)[0] if present else None


def study_order(
    variants: pl.DataFrame | None,
    present: Sequence[str],
    baseline: str | None = None,
    controls: Mapping[str, str] | None = None,
) -> list[str]:
    """The variants of ``present`` (except ``baseline``) in the order the report shows them:
    unpruned (quantization) variants in config order, then those missing from ``variants`` (in the order of
    ``present``), then pruning variants in config order; each perturbation control (``controls``:
    control -> the variant it controls for) right after the variant it controls for, or last."""
    controls = controls or {}
    shown = [v for v in dict.fromkeys(present) if v != baseline]
    pruned = [v for v in pruning_variants(variants) if v in shown]
    known = variant_order(variants)
    unpruned = [v for v in known + [v for v in shown if v not in known] if v in shown and v not in pruned]
    order = [v for v in unpruned + pruned if v not in controls]
    for c, like in controls.items():
        if c in shown:
            order.insert(order.index(like) + 1 if like in order else len(order), c)
    return order
