"""Perplexity corpus and per-sequence log-loss, the same sequences for every variant of a model."""

from __future__ import annotations

import glob
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl


def _local_texts(path: str) -> list[str]:
    files = sorted(glob.glob(str(Path(path) / "*"))) if Path(path).is_dir() else sorted(glob.glob(path))
    if not files:
        raise FileNotFoundError(f"perplexity.path: no text files at {path}")
    texts = []
    for f in files:
        if f.endswith(".jsonl"):
            texts += pl.read_ndjson(f)["text"].to_list()
        else:
            texts.append(Path(f).read_text())
    return texts


def stdlib_texts() -> list[str]:
    """Docstrings of Python standard-library modules: English prose that every machine has,
    for offline perplexity when no corpus is configured."""
    import importlib
    import inspect

    names = ("argparse", "asyncio", "collections", "csv", "datetime", "decimal", "email",
             "functools", "http.client", "json", "logging", "pathlib", "random", "re",
             "sqlite3", "statistics", "string", "subprocess", "threading", "unittest", "zipfile")
    texts = []
    for name in names:
        mod = importlib.import_module(name)
        for obj in [mod, *(getattr(mod, a) for a in sorted(dir(mod)) if not a.startswith("_"))]:
            doc = inspect.getdoc(obj) if callable(obj) or inspect.ismodule(obj) else None
            if doc and len(doc) > 200 and doc not in texts:
                texts.append(doc)
    return texts


def corpus_tokens(tokenizer, cfg: Mapping[str, Any]) -> np.ndarray:
    """Token windows (n_samples x seq_len) of the perplexity corpus.

    ``source: hf`` samples a Hugging Face dataset with mlx_lm's own perplexity loader (chat
    datasets are rendered with the model's template), seeded; ``source: text`` concatenates local
    text files (a directory, a glob, or .jsonl with a ``text`` field) and cuts consecutive windows;
    ``source: stdlib`` does the same with :func:`stdlib_texts`.
    """
    n, length, seed = int(cfg["n_samples"]), int(cfg["seq_len"]), int(cfg["seed"])
    if cfg.get("source", "hf") == "hf":
        from mlx_lm.perplexity import load_data

        np.random.seed(seed)
        return np.array(load_data(tokenizer, cfg["name"], n, length))
    ids: list[int] = []
    texts = stdlib_texts() if cfg["source"] == "stdlib" else _local_texts(cfg["path"])
    for text in texts:
        ids += tokenizer.encode(text) + [tokenizer.eos_token_id]
    windows = len(ids) // length
    if windows == 0:
        raise ValueError(f"perplexity.path: corpus has {len(ids)} tokens, fewer than seq_len {length}")
    data = np.array(ids[: windows * length]).reshape(windows, length)
    rng = np.random.default_rng(seed)
    keep = np.sort(rng.permutation(windows)[:n])
    return data[keep]


def sequence_losses(model, data: Sequence[Sequence[int]] | np.ndarray, batch_size: int = 8) -> pl.DataFrame:
    """Per-sequence summed next-token negative log-likelihood (nats), as mlx_lm's ``eval_ppl``
    computes it but kept per sequence so that variants can be compared pairwise."""
    import mlx.core as mx
    import mlx.nn as nn

    data = np.asarray(data)
    sums = []
    for s in range(0, len(data), batch_size):
        batch = mx.array(data[s: s + batch_size])
        logits = model(batch[:, :-1]).astype(mx.float32)
        losses = nn.losses.cross_entropy(logits, batch[:, 1:], reduction="none").sum(axis=1)
        mx.eval(losses)
        sums.append(np.array(losses, dtype=np.float64))
    nll = np.concatenate(sums) if sums else np.zeros(0)
    return pl.DataFrame({"seq_id": np.arange(len(data), dtype=np.int64),
                         "n_tokens": np.full(len(data), data.shape[1] - 1, dtype=np.int64),
                         "nll_sum": nll})
