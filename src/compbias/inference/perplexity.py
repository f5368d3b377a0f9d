"""Perplexity corpus and per-sequence log-loss, the same sequences for every variant of a model."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import polars as pl

from compbias.data.corpus import local_texts, sample_windows, stdlib_texts, token_stream
from compbias.settings import Perplexity, coerce_section


def corpus_tokens(tokenizer, cfg: Perplexity | Mapping[str, Any]) -> np.ndarray:
    """Token windows (n_samples x seq_len) of the perplexity corpus.

    ``source: hf`` samples a Hugging Face dataset with mlx_lm's own perplexity loader (chat
    datasets are rendered with the model's template), seeded; ``source: text`` reads local text
    files (a directory, a glob, or .jsonl with a ``text`` field) and ``source: stdlib`` the
    standard library's docstrings, tokenized with special tokens and cut into windows by
    :func:`compbias.data.corpus.sample_windows` (grid from token 0, corpus order).
    """
    cfg = coerce_section(Perplexity, "perplexity", cfg)
    n, length, seed = cfg.n_samples, cfg.seq_len, cfg.seed
    if cfg.source == "hf":
        from mlx_lm.perplexity import load_data

        np.random.seed(seed)
        return np.array(load_data(tokenizer, cfg.name, n, length))
    try:
        texts = stdlib_texts() if cfg.source == "stdlib" else local_texts(cfg.path)
        ids = token_stream(tokenizer, texts, add_special_tokens=True)
        return sample_windows(ids, n, length, seed, random_offset=False)
    except (FileNotFoundError, ValueError) as exc:
        raise type(exc)(f"perplexity.path: {exc}") from None


def sequence_losses(model, data: Sequence[Sequence[int]] | np.ndarray, batch_size: int = 8) -> pl.DataFrame:
    """Per-sequence summed next-token negative log-likelihood (nats), as mlx_lm's ``eval_ppl``
    computes it but kept per sequence so that variants can be compared pairwise."""
    import mlx.core as mx
    import mlx.nn as nn

    data = np.asarray(data)
    sums = []
    for s in range(0, len(data), batch_size):
        # int32 ids: the embedding's gather kernel the prompt pass compiles already (on CUDA each
        # gather's index dtype is compiled at its first use, seconds in a fresh process)
        batch = mx.array(data[s : s + batch_size].astype(np.int32))
        logits = model(batch[:, :-1]).astype(mx.float32)
        losses = nn.losses.cross_entropy(logits, batch[:, 1:], reduction="none").sum(axis=1)
        mx.eval(losses)
        sums.append(np.array(losses, dtype=np.float64))
    nll = np.concatenate(sums) if sums else np.zeros(0)
    return pl.DataFrame(
        {
            "seq_id": np.arange(len(data), dtype=np.int64),
            "n_tokens": np.full(len(data), data.shape[1] - 1, dtype=np.int64),
            "nll_sum": nll,
        }
    )
