"""The model jobs of the workflow, from typed config sections to tables: a scores shard (which
also answers the seeds its group serves) and an answers shard."""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping, Sequence
from typing import Any

import polars as pl

from compbias.inference import memory, prompts
from compbias.inference.answering import answer_seed, precomputed_seeds, score_and_answer, score_items
from compbias.inference.decoder import Decoder
from compbias.inference.prompts import PromptSpec
from compbias.settings import Decoding, Prompt, Runtime, coerce_section

log = logging.getLogger("compbias")


def _setup(runtime_cfg: Runtime, threads: int):
    from compbias.inference.runtime import resolve_runtime, set_threads

    set_threads(threads)
    return resolve_runtime(runtime_cfg.compute_dtype, runtime_cfg.dequantize)


def _limits(runtime, runtime_cfg: Runtime, checkpoint: str, gpu_mem_mb: int, max_tokens: int) -> tuple[int, int]:
    """The batch geometry, on a GPU shrunk to fit the job's declared memory, which MLX is then
    held to (:mod:`compbias.inference.memory`)."""
    from compbias.inference.runtime import batch_limits, continuation

    limits = batch_limits(runtime.device, runtime_cfg.batch_tokens, runtime_cfg.max_batch)
    shape = hold_to_budget(runtime, checkpoint, gpu_mem_mb)
    if shape is None:
        return limits
    mode = continuation(runtime_cfg.continuation)
    fitted = memory.fit_batches(shape, gpu_mem_mb, *limits, max_tokens, mode)
    log.info("gpu_mem_mb %d: batch geometry %s (configured %s)", gpu_mem_mb, fitted, limits)
    return fitted


def hold_to_budget(runtime, checkpoint: str, gpu_mem_mb: int, kind: str = "answering") -> memory.ModelShape | None:
    """On a GPU with a declared ``gpu_mem_mb``, hold MLX to it (:func:`memory.apply_budget`, for a
    job of ``kind``) and return the checkpoint's :class:`memory.ModelShape`; None (nothing done)
    on CPU or without one."""
    if runtime.device == "cpu" or not gpu_mem_mb:
        return None
    shape = memory.model_shape(checkpoint)
    memory.apply_budget(gpu_mem_mb, shape.weights_mb, kind)
    return shape


def log_peak_memory(gpu_mem_mb: int = 0) -> None:
    """Log MLX's peak memory of this process (beside the declared ``gpu_mem_mb``, if any);
    nothing in a process that never imported MLX."""
    mx = sys.modules.get("mlx.core")
    if mx is None:
        return
    log.info("MLX peak memory %.0f MiB (declared gpu_mem_mb %s)", mx.get_peak_memory() / 2**20, gpu_mem_mb or "-")


def _spec(prompt_cfg: Prompt, decoding: Decoding) -> PromptSpec:
    # None: the reference study's messages; "" is a deliberate empty system message
    system = prompts.DEFAULT_SYSTEM if prompt_cfg.system is None else prompt_cfg.system
    user = prompts.DEFAULT_USER if prompt_cfg.user is None else prompt_cfg.user
    return PromptSpec(system, user, decoding.option_order)


def _sections(decoding, prompt_cfg, runtime_cfg) -> tuple[Decoding, Prompt, Runtime]:
    return (
        coerce_section(Decoding, "decoding", decoding),
        coerce_section(Prompt, "prompt", prompt_cfg),
        coerce_section(Runtime, "runtime", runtime_cfg),
    )


def scores_job(
    items: pl.DataFrame,
    checkpoint: str,
    shard: int,
    group: str,
    decoding: Decoding | Mapping[str, Any],
    prompt_cfg: Prompt | Mapping[str, Any],
    runtime_cfg: Runtime | Mapping[str, Any],
    threads: int = 1,
    seeds: Sequence[int] = (),
    gpu_mem_mb: int = 0,
) -> pl.DataFrame:
    """The scores shard of one (checkpoint, shard, group): group is ``fixed`` or ``seed=N``.
    Config sections are :mod:`compbias.settings` dataclasses (or their mappings).

    With ``seeds`` the job also answers them (:func:`score_and_answer`, as ``runtime.continuation``
    says), so their answers jobs load no model."""
    from compbias.inference.runtime import continuation, load_model

    decoding, prompt_cfg, runtime_cfg = _sections(decoding, prompt_cfg, runtime_cfg)
    runtime = _setup(runtime_cfg, threads)
    limits = _limits(runtime, runtime_cfg, checkpoint, gpu_mem_mb, int(decoding.max_tokens))
    model, tokenizer, _ = load_model(checkpoint, runtime)
    seed = int(group.split("=")[1]) if group.startswith("seed=") else 0
    shard_items = items.filter(pl.col("shard") == shard)
    spec = _spec(prompt_cfg, decoding)
    run = runtime.as_dict()
    if seeds and shard_items.height:
        mode = continuation(runtime_cfg.continuation)
        decoder = _decoder(lambda: (model, tokenizer), spec, decoding, limits, runtime.device, mode)
        return score_and_answer(model, tokenizer, shard_items, spec, seed, seeds, decoder, run, *limits, mode)
    scores = score_items(model, tokenizer, shard_items, spec, seed, float(decoding.temperature), *limits)
    return scores.with_columns(compute_dtype=pl.lit(run["compute_dtype"]), dequantized=pl.lit(run["dequantize"]))


def _decoder(load, spec: PromptSpec, decoding: Decoding, limits: tuple[int, int], device: str, mode: str) -> Decoder:
    """The job's :class:`Decoder` for continuation ``mode`` (:func:`runtime.decoder_options`)."""
    from compbias.inference.runtime import decoder_options

    temperature, max_tokens = float(decoding.temperature), int(decoding.max_tokens)
    options = decoder_options(device, limits[1], mode)
    return Decoder(load, spec, temperature, max_tokens, *limits, decoding.rng, **options)


def group_seeds(group: str, seeds: Sequence[int]) -> list[int]:
    """The ``seeds`` (those answered for a variant) that the scores group ``group`` serves."""
    return list(seeds) if group == "fixed" else [s for s in seeds if f"seed={s}" == group]


def answers_job(
    items: pl.DataFrame,
    scores: pl.DataFrame,
    checkpoint: str,
    shard: int,
    seed: int,
    decoding: Decoding | Mapping[str, Any],
    prompt_cfg: Prompt | Mapping[str, Any],
    runtime_cfg: Runtime | Mapping[str, Any],
    threads: int = 1,
    gpu_mem_mb: int = 0,
) -> pl.DataFrame:
    """The answer shard of one (checkpoint, seed, shard), sampled from its scores shard; a seed
    the scores job already answered needs neither MLX nor the model."""
    from compbias.inference.runtime import continuation, load_model

    decoding, prompt_cfg, runtime_cfg = _sections(decoding, prompt_cfg, runtime_cfg)
    shard_items = items.filter(pl.col("shard") == shard)
    if seed in precomputed_seeds(scores):
        return answer_seed(shard_items, scores, seed, None, decoding.parser)
    runtime = _setup(runtime_cfg, threads)
    limits = _limits(runtime, runtime_cfg, checkpoint, gpu_mem_mb, int(decoding.max_tokens))
    load = lambda: load_model(checkpoint, runtime)[:2]  # noqa: E731
    mode = continuation(runtime_cfg.continuation)
    decoder = _decoder(load, _spec(prompt_cfg, decoding), decoding, limits, runtime.device, mode)
    return answer_seed(shard_items, scores, seed, decoder, decoding.parser, runtime.as_dict())
