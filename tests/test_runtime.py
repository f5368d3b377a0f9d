import os
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
from conftest import ROOT, study_items

from compbias.compress.checkpoints import MANIFEST, build_checkpoint
from compbias.inference.answering import answer_seed, score_items
from compbias.inference.decoder import Decoder
from compbias.inference.prompts import PromptSpec
from compbias.inference.runtime import Runtime, active_blas, find_blas, load_model, resolve_runtime


def test_fast_blas_is_loaded_when_available():
    if find_blas() is None:
        pytest.skip("no optimized BLAS on this machine")
    assert active_blas() == find_blas()


@pytest.mark.parametrize("first", ["benchmarks.answering", "benchmarks.cpu_forward", "compbias"])
def test_entry_points_load_the_fast_blas_before_mlx(first):
    # ruff's import sorting once put `import mlx.core` above `import compbias` in a benchmark,
    # which then ran on the wheel's reference BLAS
    if find_blas() is None:
        pytest.skip("no optimized BLAS on this machine")
    code = f"import {first}, sys\nfrom compbias.inference.runtime import active_blas\nprint(active_blas())"
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert run.returncode == 0, run.stderr
    assert run.stdout.split()[-1] == find_blas()


def test_mlx_first_warns_that_the_fast_blas_is_not_used():
    if find_blas() is None:
        pytest.skip("no optimized BLAS on this machine")
    code = "import mlx.core, warnings\nwarnings.simplefilter('error')\nimport compbias"
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert run.returncode != 0 and "imported before compbias" in run.stderr


def test_cpu_defaults_to_float32_dequantized():
    rt = resolve_runtime()
    assert (rt.device, rt.compute_dtype, rt.dequantize) == ("cpu", "float32", True)


@pytest.mark.slow
def test_dequantized_float32_matches_native_quantized(tmp_path, tiny_model, shared_bbq):
    """The fast CPU path (dequantize once at load, compute in float32) is the quantized model's
    function: it agrees with MLX's native quantized kernels on >= 99% of answers."""
    q4 = tmp_path / "q4"
    manifest = build_checkpoint(str(tiny_model), q4, {"quantize": {"bits": 4, "group_size": 64}}, "tiny", "q4")
    assert (q4 / MANIFEST).exists() and manifest["stored_bits"] == 4
    items = study_items(shared_bbq)
    spec = PromptSpec()
    out = {}
    for name, rt in {
        "fast": Runtime("cpu", "float32", True, active_blas()),
        "native": Runtime("cpu", "float32", False, active_blas()),
    }.items():
        model, tok, _ = load_model(q4, rt)
        dec = Decoder(lambda model=model, tok=tok: (model, tok), spec, 0.3, 5)
        scores = score_items(model, tok, items, spec, 0, 0.3)
        out[name] = pl.concat([answer_seed(items, scores, s, dec, "strict", rt.as_dict()) for s in range(10)])
    agree = (out["fast"]["choice"].fill_null(-1) == out["native"]["choice"].fill_null(-1)).mean()
    assert out["fast"].height == 200
    assert agree >= 0.99
    assert out["fast"]["dequantized"].all() and not out["native"]["dequantized"].any()


def _job_process(env: dict[str, str], tiny_model, fake: Path) -> subprocess.CompletedProcess:
    code = (
        "import sys, compbias\n"
        "from compbias.inference.runtime import keep_torch_out\n"
        "print(keep_torch_out())\n"
        "from pathlib import Path\nfrom mlx_lm.tokenizer_utils import load\n"
        f"load(Path({str(tiny_model)!r}))\n"
        "from transformers.utils import is_torch_available\n"
        "print('torch' in sys.modules, is_torch_available())\n"
    )
    env = {**os.environ, **env, "PYTHONPATH": f"{fake}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)


def test_workflow_jobs_keep_an_installed_torch_out(tiny_model, tmp_path):
    # a "torch" that transformers takes as installed (version 2.9) and that fails if imported
    (tmp_path / "torch").mkdir()
    (tmp_path / "torch" / "__init__.py").write_text("raise RuntimeError('torch was imported')\n")
    (tmp_path / "torch-2.9.0.dist-info").mkdir()
    (tmp_path / "torch-2.9.0.dist-info" / "METADATA").write_text("Metadata-Version: 2.1\nName: torch\nVersion: 2.9.0\n")
    # the Snakefile sets COMPBIAS_NO_TORCH=1 for its jobs: transformers then sees no PyTorch,
    # and loading a tokenizer leaves it unimported (no entry in sys.modules, not even None)
    job = _job_process({"COMPBIAS_NO_TORCH": "1"}, tiny_model, tmp_path)
    assert job.returncode == 0, job.stderr
    assert job.stdout.split() == ["True", "False", "False"]
    # without it (a library user), transformers imports the installed torch with the tokenizer code
    plain = _job_process({"COMPBIAS_NO_TORCH": "0"}, tiny_model, tmp_path)
    assert plain.returncode != 0 and "torch was imported" in plain.stderr


def test_continuation_default_and_pairs_per_chunk_by_device():
    from compbias.inference.runtime import chunk_pairs, continuation, decoder_options

    assert continuation() == continuation("auto") == "batch_cache"
    assert continuation("second_pass") == "second_pass"
    assert chunk_pairs("cpu", 16) == 128 and chunk_pairs("cuda", 256) == 256
    # rows shared on a CPU only; second_pass keeps one row per pair everywhere
    assert decoder_options("cpu", 16, "batch_cache") == {"chunk_pairs": 128, "share_rows": True}
    assert decoder_options("cuda", 256, "batch_cache") == {"chunk_pairs": 256, "share_rows": False}
    assert decoder_options("cpu", 16, "second_pass") == {"chunk_pairs": 16, "share_rows": False}
