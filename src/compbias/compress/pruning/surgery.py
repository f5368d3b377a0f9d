"""Module surgery on an mlx_lm model: its transformer blocks, the prunable linears inside them,
swapping a child module and zeroing a linear's masked weights."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import mlx.core as mx
import mlx.nn as nn

from compbias.compress.pruning.spec import fail

_QUANTIZED = tuple(c for c in (getattr(nn, n, None) for n in ("QuantizedLinear", "QQLinear")) if c is not None)


@dataclass
class PrunableLinear:
    """One prunable linear: its block index, checkpoint weight prefix and path inside the block."""

    block: int
    name: str
    path: str
    module: nn.Linear


def blocks(model: nn.Module) -> list:
    """The transformer blocks of ``model`` (``model.model.layers`` or ``model.layers``), the
    list itself so that blocks can be swapped in place; [] when there is none."""
    inner = getattr(model, "model", None)
    layers = getattr(inner, "layers", None) if isinstance(inner, nn.Module) else None
    if layers is None:
        layers = getattr(model, "layers", None)
    return layers if isinstance(layers, list) else []


def prunable_linears(model: nn.Module, variant_name: str = "", model_type: str | None = None) -> list[PrunableLinear]:
    """Every ``nn.Linear`` inside ``model.layers[i]``, sorted by weight name.

    Raises ValueError for quantized layers (prune before quantizing) or when there is none.
    """
    found_blocks = blocks(model)
    mtype = model_type or getattr(model, "model_type", None)
    prefix = "model.layers"
    if found_blocks:
        prefix = next((p for p, m in model.named_modules() if m is found_blocks[0]), "model.layers.0").rsplit(".", 1)[0]
    found: list[PrunableLinear] = []
    for i, block in enumerate(found_blocks):
        for path, mod in block.named_modules():
            if isinstance(mod, _QUANTIZED):
                raise fail(variant_name, f"{prefix}.{i}.{path} is quantized; prune before quantizing")
            if isinstance(mod, nn.Linear) and path:
                found.append(PrunableLinear(i, f"{prefix}.{i}.{path}", path, mod))
    if not found:
        raise fail(variant_name, f"no prunable nn.Linear layers in the transformer blocks of architecture {mtype!r}")
    return sorted(found, key=lambda p: (p.block, p.name))


def set_child(root: nn.Module, path: str, value: Any) -> None:
    """Replace the module at dotted ``path`` (list indices included) under ``root``."""
    *parents, last = path.split(".")
    node: Any = root
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else getattr(node, part)
    if isinstance(node, list):
        node[int(last)] = value
    else:
        setattr(node, last, value)


def apply_mask(lin: nn.Linear, mask: mx.array) -> None:
    """Zero the weights of ``lin`` where ``mask`` is True (keeping the dtype)."""
    lin.weight = mx.where(mask, mx.array(0, dtype=lin.weight.dtype), lin.weight)
    mx.eval(lin.weight)
