"""Wanda (Sun et al. 2023): input activation norms captured block by block, each block
calibrated on the outputs of the already-pruned blocks before it, running each block's own
mlx_lm forward code."""

from __future__ import annotations

from typing import Any

import mlx.core as mx
import mlx.nn as nn

from compbias.compress.pruning.masks import wanda_mask
from compbias.compress.pruning.surgery import PrunableLinear, apply_mask, blocks, set_child


class _InputRecorder(nn.Module):
    """Stands in for a linear: accumulates the per-feature sum of squares of its input."""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        self.linear = linear
        self.sqsum = mx.zeros((linear.weight.shape[1],), mx.float32)

    def __call__(self, x: mx.array) -> mx.array:
        xf = x.astype(mx.float32)
        self.sqsum = self.sqsum + mx.sum(xf * xf, axis=tuple(range(x.ndim - 1)))
        return self.linear(x)


class _BlockCapture:
    """Stands in for a block during one model forward: records its call and passes ``x`` through."""

    def __init__(self, block: nn.Module):
        self._block = block
        self.calls: list[tuple[mx.array, tuple, dict]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._block, name)

    def __call__(self, x: mx.array, *args: Any, **kwargs: Any) -> mx.array:
        self.calls.append((x, args, kwargs))
        return x


def _capture_block_inputs(
    model: nn.Module, tokens: mx.array, batch_size: int
) -> tuple[list[mx.array], list[tuple[tuple, dict]]]:
    """Hidden states entering block 0 (float32, per batch) and each block's extra call arguments.

    Runs the model's own ``__call__`` with every block replaced by a pass-through recorder, so
    embeddings, masks and cache arguments come from mlx_lm itself; the logits are never evaluated.
    """
    model_blocks = blocks(model)
    captures = [_BlockCapture(b) for b in model_blocks]
    hidden: list[mx.array] = []
    call_args: list[tuple[tuple, dict]] = []
    try:
        model_blocks[:] = captures
        for start in range(0, tokens.shape[0], batch_size):
            for c in captures:
                c.calls.clear()
            model(tokens[start : start + batch_size])
            h = captures[0].calls[0][0].astype(mx.float32)
            mx.eval(h)
            hidden.append(h)
            if start == 0:
                call_args = [(c.calls[0][1], c.calls[0][2]) for c in captures]
    finally:
        model_blocks[:] = [c._block for c in captures]
    return hidden, call_args


def wanda_prune(
    model: nn.Module,
    linears: list[PrunableLinear],
    tokens: mx.array,
    sparsity: float,
    batch_size: int,
    norms_out: dict[str, mx.array] | None,
) -> None:
    """Prune ``linears`` of ``model`` in place with Wanda on the calibration ``tokens``;
    ``norms_out``, if given, receives each linear's input L2 norm."""
    hidden, call_args = _capture_block_inputs(model, tokens, batch_size)
    for i, block in enumerate(blocks(model)):
        args, kwargs = call_args[i]
        own = [p for p in linears if p.block == i]
        recorders = [_InputRecorder(p.module) for p in own]
        try:
            for p, rec in zip(own, recorders):
                set_child(block, p.path, rec)
            for h in hidden:
                block(h, *args, **kwargs)
                mx.eval([r.sqsum for r in recorders])
        finally:
            for p in own:
                set_child(block, p.path, p.module)
        for p, rec in zip(own, recorders):
            norm = mx.sqrt(rec.sqsum)
            if norms_out is not None:
                norms_out[p.name] = norm
            apply_mask(p.module, wanda_mask(p.module.weight, norm, sparsity))
        for j in range(len(hidden)):
            hidden[j] = block(hidden[j], *args, **kwargs).astype(mx.float32)
            mx.eval(hidden[j])
