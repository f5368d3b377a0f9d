"""The one corpus loader and window sampler (compbias.data.corpus): the perplexity sequences and
the Wanda calibration windows of the .test study are pinned to the tokens that the separate
loaders of perplexity.py and pruning.py produced before they were merged."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from compbias.compress.pruning import calibration_tokens
from compbias.data.corpus import load_texts, local_texts, sample_windows, text_files, token_stream
from compbias.inference.perplexity import corpus_tokens

CORPUS = Path(__file__).resolve().parents[1] / ".test" / "corpus"


def _digest(a) -> str:
    return hashlib.sha256(np.asarray(a).astype(np.int64).tobytes()).hexdigest()[:16]


@pytest.fixture(scope="module")
def tokenizer(tiny_model):
    from mlx_lm.utils import load_tokenizer

    return load_tokenizer(tiny_model)


def test_perplexity_sequences_unchanged(tokenizer):
    # .test/config.yaml: perplexity {source: text, path: .test/corpus, n_samples: 16, seq_len: 64, seed: 123}
    data = corpus_tokens(
        tokenizer, {"source": "text", "path": str(CORPUS), "n_samples": 16, "seq_len": 64, "seed": 123}
    )
    assert data.shape == (16, 64) and data.dtype == np.int64
    assert int(data.sum()) == 102356 and data[0, :8].tolist() == [91, 223, 89, 74, 75, 78, 71, 223]
    assert _digest(data) == "6b2f9f3860ca3f16"
    every = corpus_tokens(
        tokenizer, {"source": "text", "path": str(CORPUS), "n_samples": 10**6, "seq_len": 64, "seed": 1}
    )
    assert every.shape == (391, 64) and int(every.sum()) == 2523786  # all windows, in corpus order


def test_calibration_windows_unchanged(tokenizer):
    # .test/config.yaml: wanda-50 calibration {source: .test/corpus, n_samples: 8, seq_len: 64, seed: 0}
    windows = np.array(calibration_tokens(tokenizer, load_texts(str(CORPUS)), 8, 64, 0))
    assert windows.shape == (8, 64) and windows.dtype == np.int32
    assert int(windows.astype(np.int64).sum()) == 51228
    assert windows[0, :8].tolist() == [85, 67, 91, 75, 80, 73, 223, 67]
    assert _digest(windows) == "e2de3260fe9f5418"


def test_local_sources(tmp_path):
    (tmp_path / "a.txt").write_text("first text")
    (tmp_path / "sub").mkdir()
    with open(tmp_path / "sub" / "b.jsonl", "w") as fh:
        fh.write(json.dumps({"text": "second"}) + "\n\n" + json.dumps({"text": "third"}) + "\n")
    (tmp_path / "notes.md").write_text("not a corpus file")
    assert local_texts(str(tmp_path)) == ["first text", "second", "third"]
    assert local_texts(str(tmp_path / "**" / "*.jsonl")) == ["second", "third"]
    assert text_files("allenai/c4") is None  # a dataset name, not a local path
    with pytest.raises(FileNotFoundError, match="no text files at"):
        local_texts(str(tmp_path / "*.parquet"))
    with pytest.raises(FileNotFoundError, match="perplexity.path: no text files at /nonexistent"):
        corpus_tokens(None, {"source": "text", "path": "/nonexistent", "n_samples": 1, "seq_len": 4, "seed": 0})


def test_sample_windows_schemes():
    ids = np.arange(103)
    grid = sample_windows(ids, 4, 10, seed=0, random_offset=False)
    assert (grid[:, 0] % 10 == 0).all() and (np.diff(grid[:, 0]) > 0).all()  # from token 0, in order
    assert (grid == sample_windows(ids, 4, 10, seed=0, random_offset=False)).all()
    drawn = sample_windows(ids, 10, 10, seed=0, random_offset=True)
    assert sorted(drawn[:, 0] % 10) == [drawn[0, 0] % 10] * 10  # one grid at one offset (<= 3)
    assert all((row == np.arange(row[0], row[0] + 10)).all() for row in drawn)
    with pytest.raises(ValueError, match="short by 7"):
        sample_windows(ids, 11, 10, seed=0, random_offset=True)
    with pytest.raises(ValueError, match="fewer than seq_len 200"):
        sample_windows(ids, 1, 200, seed=0, random_offset=False)


def test_token_stream_special_tokens(tokenizer):
    plain = token_stream(tokenizer, ["alpha", "beta"], add_special_tokens=False)
    eos = tokenizer.eos_token_id
    assert plain.tolist() == tokenizer.encode("alpha", add_special_tokens=False) + [eos] + tokenizer.encode(
        "beta", add_special_tokens=False
    ) + [eos]
    assert token_stream(tokenizer, ["alpha"], add_special_tokens=True).tolist() == tokenizer.encode("alpha") + [eos]
