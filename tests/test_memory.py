"""Device memory declared and kept by model jobs (compbias.inference.memory)."""

from __future__ import annotations

import json

import polars as pl
import pytest

from compbias.compress.checkpoints import build_checkpoint
from compbias.inference import memory
from compbias.inference.jobs import _limits
from compbias.inference.runtime import Runtime
from compbias.settings import Runtime as RuntimeCfg
from compbias.settings import section, study


@pytest.fixture(scope="module")
def q4_model(tiny_model, tmp_path_factory):
    out = tmp_path_factory.mktemp("q4") / "q4"
    build_checkpoint(str(tiny_model), str(out), {"quantize": {"bits": 4, "group_size": 32}}, "tiny", "q4")
    return out


def test_shape_counts_quantized_weights_dequantized(tiny_model, q4_model):
    import mlx.utils
    from mlx_lm.utils import load

    dense = memory.model_shape(tiny_model)
    model, _ = load(str(tiny_model))
    assert dense.n_params == sum(v.size for _, v in mlx.utils.tree_flatten(model.parameters()))
    quant = memory.model_shape(q4_model)
    assert quant.n_params == dense.n_params
    assert quant.dtype_bytes == 2  # mlx_lm's quantization stores bfloat16 scales and floats
    config = json.loads((tiny_model / "config.json").read_text())
    assert (quant.hidden, quant.layers, quant.vocab) == (
        config["hidden_size"],
        config["num_hidden_layers"],
        config["vocab_size"],
    )


def test_missing_checkpoint_is_file_not_found_naming_it(tmp_path):
    # Snakemake turns exactly this error (filename = the input) into a <TBD> resource
    missing = str(tmp_path / "not-yet")
    with pytest.raises(FileNotFoundError) as err:
        memory.model_shape(missing)
    assert err.value.filename == missing


def test_estimate_grows_with_batch_and_fit_halves_it(tiny_model):
    shape = memory.model_shape(tiny_model)
    small, large = memory.answering_mb(shape, 1024, 16), memory.answering_mb(shape, 32768, 256)
    assert memory.PROCESS_OVERHEAD_MB < small < large
    budget = memory.answering_mb(shape, 4096, 32)
    assert memory.fit_batches(shape, budget, 32768, 256) == (4096, 32)
    assert memory.fit_batches(shape, large, 32768, 256) == (32768, 256)
    with pytest.raises(MemoryError, match="gpu_mem_mb=100 is below"):
        memory.fit_batches(shape, 100, 32768, 256)


def test_answers_job_of_a_precomputed_seed_declares_nothing(tiny_model, shared_bbq, tmp_path):
    scores = tmp_path / "scores.parquet"
    pl.DataFrame({"item_id": ["a"], "answer_seeds": [[42, 123]]}).write_parquet(scores)
    cfg = study(_config(tiny_model, shared_bbq))
    assert memory.job_mb("answers", tiny_model, cfg, str(scores), 42) == 0
    assert memory.job_mb("answers", tiny_model, cfg, str(scores), 7) == memory.job_mb("scores", tiny_model, cfg)
    fixed = study(_config(tiny_model, shared_bbq, cluster={"gpu_mem_mb": 9000}))
    assert memory.job_mb("perplexity", tiny_model, fixed) == 9000


def test_gpu_job_shrinks_its_batches_to_its_budget(tiny_model):
    import mlx.core as mx

    shape = memory.model_shape(tiny_model)
    budget = memory.answering_mb(shape, 2048, 16)
    before = mx.get_memory_limit()
    try:
        cuda = Runtime("cuda", "native", True, "n/a")
        cfg = section(RuntimeCfg, "runtime", {})
        assert _limits(cuda, cfg, str(tiny_model), budget, 5) == (2048, 16)
        # MLX's own share: the weights and its part of the working set the budget leaves
        working = (budget - shape.weights_mb - memory.PROCESS_OVERHEAD_MB - memory.ANSWERING_EXTRA_MB) / (
            memory.ANSWERING_FACTOR
        )
        assert mx.get_memory_limit() == int((shape.weights_mb + memory.MLX_FACTOR * working) * 2**20)
        cpu = Runtime("cpu", "float32", True, "openblas")
        assert _limits(cpu, cfg, str(tiny_model), budget, 5) == (1024, 16)  # CPU: configured as is
    finally:
        mx.set_memory_limit(before)


def _config(model, data, **extra):
    from compbias.config import validate

    config = {
        "models": {"m": {"path": str(model)}},
        "variants": {"bf16": {"dtype": "bfloat16"}},
        "baseline": "bf16",
        "seeds": [42],
        "dataset": {"source": "jsonl", "path": str(data), "categories": ["age"]},
        "shards": 1,
        **extra,
    }
    validate(config)
    return config


def test_kept_batch_caches_count_only_when_continuing_from_them(tiny_model):
    shape = memory.model_shape(tiny_model)
    kept = memory.answering_mb(shape, 32768, 256, 5, "batch_cache")
    assert kept > memory.answering_mb(shape, 32768, 256, 5, "second_pass")
    assert kept == memory.answering_mb(shape, 32768, 256)  # the default path


def test_quantizing_build_declares_one_copy_of_its_source_and_pruning_three(tiny_model):
    files = sum(f.stat().st_size for f in tiny_model.glob("*.safetensors")) / 2**20
    fixed = memory.PROCESS_OVERHEAD_MB + memory.BUILD_EXTRA_MB
    quantize = memory.build_mb(tiny_model, {"quantize": {"bits": 4, "group_size": 64}})
    prune = memory.build_mb(tiny_model, {"prune": {"method": "magnitude", "sparsity": 0.5}})
    assert quantize == pytest.approx(files + fixed, abs=1)
    assert prune == pytest.approx(3 * files + fixed, abs=1)
    assert memory.build_mb(tiny_model) == prune  # no spec: the larger


def test_budget_sets_mlx_limit_by_the_kind_of_job(tiny_model):
    import mlx.core as mx

    m = memory
    before = mx.get_memory_limit()
    try:
        for kind, factor, extra in (
            ("answering", m.ANSWERING_FACTOR, m.ANSWERING_EXTRA_MB),
            ("perplexity", m.WORKING_FACTOR, 0),
        ):
            m.apply_budget(20000, 100, kind)
            working = (20000 - 100 - m.PROCESS_OVERHEAD_MB - extra) / factor
            assert mx.get_memory_limit() == int((100 + m.MLX_FACTOR * working) * 2**20)
    finally:
        mx.set_memory_limit(before)
