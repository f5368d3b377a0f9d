"""Pruning masks (True = prune) of a weight matrix: random, magnitude and Wanda scores, with
exact per-layer counts."""

from __future__ import annotations

import mlx.core as mx


def prune_mask(scores: mx.array, sparsity: float, granularity: str = "row") -> mx.array:
    """Boolean mask (True = prune) removing the lowest-scoring entries of a 2-D score matrix.

    ``layer``: exactly round(size * sparsity) entries of the whole matrix. ``row``: the lowest
    floor(cols * sparsity) per output row; when the layer total round(size * sparsity) is not a
    multiple of the row count, the remainder goes one each to the rows whose next-lowest score is
    smallest, so every layer hits its exact count.
    """
    rows, cols = scores.shape
    total = round(rows * cols * sparsity)
    if granularity == "layer":
        order = mx.argsort(scores.reshape(-1))
        remove = mx.arange(rows * cols) < total
        return mx.put_along_axis(mx.zeros(rows * cols, mx.bool_), order, remove, axis=0).reshape(rows, cols)
    if granularity != "row":
        raise ValueError(f"unknown granularity {granularity!r}")
    k, extra = divmod(total, rows)
    order = mx.argsort(scores, axis=1)
    count = mx.full((rows,), k, mx.int32)
    if extra:
        nxt = mx.take_along_axis(scores, order[:, k : k + 1], axis=1)[:, 0]
        count[mx.argsort(nxt)[:extra]] = k + 1
    remove = mx.arange(cols)[None, :] < count[:, None]
    return mx.put_along_axis(mx.zeros((rows, cols), mx.bool_), order, remove, axis=1)


def magnitude_mask(weight: mx.array, sparsity: float, granularity: str = "row") -> mx.array:
    """Mask removing the smallest |W| per output row or per layer."""
    return prune_mask(mx.abs(weight.astype(mx.float32)), sparsity, granularity)


def wanda_mask(weight: mx.array, input_norm: mx.array, sparsity: float) -> mx.array:
    """Wanda mask: per output row remove the lowest |W_ij| * ||X_j||_2."""
    scores = mx.abs(weight.astype(mx.float32)) * input_norm.astype(mx.float32)[None, :]
    return prune_mask(scores, sparsity, "row")


def random_mask(shape: tuple[int, int], sparsity: float, key: mx.array) -> mx.array:
    """Uniformly random mask with exactly round(size * sparsity) pruned entries."""
    return prune_mask(mx.random.uniform(shape=shape, key=key), sparsity, "layer")
