"""Text corpora and token windows: the one loader and window sampler behind the perplexity
corpus (:func:`compbias.inference.perplexity.corpus_tokens`) and the Wanda calibration windows
(:func:`compbias.compress.pruning.calibration_tokens`).

A corpus is a list of texts: local .txt files (one text each) and .jsonl files (the ``text``
field of every line), a Hugging Face dataset streamed by name, or the docstrings of the Python
standard library. Texts are tokenized into one stream, each text followed by EOS, and windows
of ``seq_len`` tokens are cut from that stream on a grid.
"""

from __future__ import annotations

import glob
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np


def text_files(source: str) -> list[Path] | None:
    """The local files of ``source``: a directory's .txt and .jsonl files (recursively), a file,
    or the files a glob matches (sorted); None when ``source`` names no local path or glob."""
    path = Path(source).expanduser()
    if path.is_dir():
        return sorted(p for p in path.rglob("*") if p.suffix in (".txt", ".jsonl") and p.is_file())
    if path.is_file():
        return [path]
    if glob.has_magic(source):
        return sorted(Path(p) for p in glob.glob(os.path.expanduser(source), recursive=True) if Path(p).is_file())
    return None


def read_texts(files: Sequence[Path]) -> list[str]:
    """Every .jsonl line's ``text`` field and every other file as one text, in file order."""
    texts: list[str] = []
    for f in files:
        if f.suffix == ".jsonl":
            with open(f, encoding="utf-8") as fh:
                texts.extend(json.loads(line)["text"] for line in fh if line.strip())
        else:
            texts.append(f.read_text(encoding="utf-8"))
    return texts


def local_texts(source: str) -> list[str]:
    """Texts of the local files of ``source`` (:func:`text_files`); FileNotFoundError when none."""
    files = text_files(source)
    if not files:
        raise FileNotFoundError(f"no text files at {source}")
    return read_texts(files)


def load_texts(
    source: str, *, subset: str | None = None, split: str = "validation", max_chars: int | None = None
) -> list[str]:
    """Texts of local files (:func:`local_texts`) or, when ``source`` is no local path or glob, of
    the Hugging Face dataset ``source``, streamed (``datasets.load_dataset(source, subset,
    split=split, streaming=True)``) until ``max_chars`` characters are collected."""
    if text_files(source) is not None:
        return local_texts(source)
    from datasets import load_dataset

    texts, chars = [], 0
    for row in load_dataset(source, subset, split=split, streaming=True):
        texts.append(row["text"])
        chars += len(row["text"])
        if max_chars is not None and chars >= max_chars:
            break
    return texts


def stdlib_texts() -> list[str]:
    """Docstrings of Python standard-library modules: English prose that every machine has,
    for an offline corpus when none is configured."""
    import importlib
    import inspect

    names = (
        "argparse",
        "asyncio",
        "collections",
        "csv",
        "datetime",
        "decimal",
        "email",
        "functools",
        "http.client",
        "json",
        "logging",
        "pathlib",
        "random",
        "re",
        "sqlite3",
        "statistics",
        "string",
        "subprocess",
        "threading",
        "unittest",
        "zipfile",
    )
    texts = []
    for name in names:
        mod = importlib.import_module(name)
        for obj in [mod, *(getattr(mod, a) for a in sorted(dir(mod)) if not a.startswith("_"))]:
            doc = inspect.getdoc(obj) if callable(obj) or inspect.ismodule(obj) else None
            if doc and len(doc) > 200 and doc not in texts:
                texts.append(doc)
    return texts


def token_stream(tokenizer: Any, texts: Sequence[str], *, add_special_tokens: bool) -> np.ndarray:
    """The texts tokenized (in batches of 1000) and joined into one int64 stream, each followed
    by the EOS token; ``add_special_tokens`` as in Hugging Face tokenizers (BOS per text)."""
    tok = getattr(tokenizer, "_tokenizer", tokenizer)  # mlx_lm's TokenizerWrapper
    eos = getattr(tok, "eos_token_id", None)
    ids: list[int] = []
    for start in range(0, len(texts), 1000):
        batch = tok(list(texts[start : start + 1000]), add_special_tokens=add_special_tokens)
        for seq in batch["input_ids"]:
            ids.extend(seq)
            if eos is not None:
                ids.append(eos)
    return np.asarray(ids, dtype=np.int64)


def sample_windows(ids: np.ndarray, n_samples: int, seq_len: int, seed: int, *, random_offset: bool) -> np.ndarray:
    """``n_samples`` disjoint ``seq_len``-token windows of the stream ``ids`` on a grid of
    ``seq_len``, chosen with ``np.random.default_rng(seed)``.

    ``random_offset=False`` (the perplexity corpus): the grid starts at token 0 and the first
    ``n_samples`` windows of a seeded permutation are kept, in stream order (all windows when
    there are fewer). ``random_offset=True`` (the Wanda calibration windows): the grid starts at
    a seeded random offset and exactly ``n_samples`` windows are drawn without replacement, in
    draw order. ValueError when the stream holds no window, or (``random_offset``) fewer than
    ``n_samples * seq_len`` tokens.
    """
    ids = np.asarray(ids)
    n_windows = len(ids) // seq_len
    rng = np.random.default_rng(seed)
    if not random_offset:
        if n_windows == 0:
            raise ValueError(f"corpus has {len(ids)} tokens, fewer than seq_len {seq_len}")
        return ids[: n_windows * seq_len].reshape(n_windows, seq_len)[np.sort(rng.permutation(n_windows)[:n_samples])]
    need = n_samples * seq_len
    if len(ids) < need:
        raise ValueError(
            f"corpus has {len(ids)} tokens but {n_samples} x {seq_len} = {need} are needed (short by {need - len(ids)})"
        )
    offset = int(rng.integers(0, len(ids) - n_windows * seq_len + 1))
    starts = offset + seq_len * rng.choice(n_windows, size=n_samples, replace=False)
    return np.stack([ids[s : s + seq_len] for s in starts])
