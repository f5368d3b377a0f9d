"""Device memory of a model job, from its checkpoint's files and its batch geometry.

Several model jobs share one GPU. Each declares what it needs as the Snakemake resource
``gpu_mem_mb`` (so ``--resources gpu_mem_mb=N`` bounds their sum) and then keeps to it inside
MLX: :func:`fit_batches` shrinks the batch geometry until the estimate fits the budget and
:func:`apply_budget` sets MLX's memory and buffer-cache limits. Estimates read only
``config.json`` and the safetensors headers, so the Snakemake process computes them without
MLX. Their factors are calibrated on what nvidia-smi showed per process on an H200 (MLX's own
peak is about half of a scores job's device memory); jobs log MLX's peak so that they can be
checked.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass
from pathlib import Path

from compbias.compress.checkpoints import variant_kind
from compbias.inference.gumbel_device import SAMPLER_BYTES

#: A process's device memory outside MLX's own accounting before any work: the CUDA context
#: (518 MiB seen per process on an H200), MiB.
PROCESS_OVERHEAD_MB = 640
#: MLX's peak over the estimated batch working set (:func:`_forward_bytes`), H200: 1.65 (full
#: demo scores jobs, 32768/256), 1.70 (7B shape, 16384/128) and 1.55 (7B shape, 32768/256).
MLX_FACTOR = 1.75
#: A perplexity job's whole process over its working set (full demo: up to 1,488 MiB per
#: process by nvidia-smi, declared 3,110; 7B shape: up to 16,876 MiB, declared 17,927).
WORKING_FACTOR = 3.5
#: A scores or answers job's process per byte of its working set: MLX's share and the CUDA pool's
#: freed-but-reserved memory. With the extra below it covers nvidia-smi's per-process peaks on an
#: H200, where the process less weights and context was 2.32 times the working set (full demo,
#: 32768/256), 2.06 times (7B shape, 16384/128) and 1.97 times (7B shape, 32768/256).
ANSWERING_FACTOR = 1.95
#: ...and what such a job holds beside it, whatever its size: MLX's buffer cache (up to 2 GiB) and
#: the CUDA graphs and cuDNN attention plans of its many batch shapes (process minus MLX's peak
#: minus the context: 3,212 MiB in the full demo, 4,484 in the 7B shape), MiB.
ANSWERING_EXTRA_MB = 4000
#: A checkpoint build's memory beside its weights and the CUDA context (quantization
#: temporaries, the library's workspaces), MiB.
BUILD_EXTRA_MB = 640
#: (factor, extra MiB) of the process model per kind of job (:func:`_process_mb`).
PROCESS_MODEL = {"answering": (ANSWERING_FACTOR, ANSWERING_EXTRA_MB), "perplexity": (WORKING_FACTOR, 0)}
#: Longest prompt assumed for the attention-score term (BBQ prompts are ~100-400 tokens).
MAX_PROMPT = 1024
#: Tokens of the shared prompt prefix whose KV cache is repeated per row.
PREFIX_ALLOWANCE = 128
#: KV positions per row of continued decoding beyond the prefix: the scores job continues
#: ``max_batch`` pairs at a time from a batch's cache (BBQ prompt suffixes are ~60-300 tokens, and
#: pairs that share their tokens share a row).
CONTINUATION_WIDTH = 128
_BYTES = {"F32": 4, "F16": 2, "BF16": 2, "F64": 8, "I8": 1, "U8": 1, "I32": 4, "U32": 4, "I64": 8}
_MB = 2**20


@dataclass(frozen=True)
class ModelShape:
    """What the estimate needs of a checkpoint: parameters once dequantized, their dtype size
    and the transformer's dimensions."""

    n_params: int
    dtype_bytes: int
    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_dim: int
    vocab: int

    @property
    def weights_mb(self) -> float:
        """Weights in memory (dequantized, compute dtype = stored float dtype), MiB."""
        return self.n_params * self.dtype_bytes / _MB


def _header(path: Path) -> dict:
    # safetensors: 8-byte little-endian header length, then the JSON header
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        return json.loads(f.read(n))


def model_shape(checkpoint: str | Path) -> ModelShape:
    """The :class:`ModelShape` of an MLX checkpoint directory, read from its ``config.json`` and
    safetensors headers (no weights are read). A quantized matrix counts as its dequantized size
    (its scales hold one entry per group). Raises ``FileNotFoundError`` naming ``checkpoint``
    when the directory does not exist yet."""
    path = Path(checkpoint)
    if not path.is_dir():
        raise FileNotFoundError(2, "no checkpoint directory", str(checkpoint))
    config = json.loads((path / "config.json").read_text())
    text = config.get("text_config", config)
    quant = config.get("quantization") or {}
    tensors: dict[str, dict] = {}
    for file in sorted(path.glob("*.safetensors")):
        tensors.update({k: v for k, v in _header(file).items() if k != "__metadata__"})
    n_params, float_bytes = 0, []
    for name, info in tensors.items():
        numel = math.prod(info["shape"])
        base = name.removesuffix(".weight")
        if name.endswith(".weight") and f"{base}.scales" in tensors:
            layer = quant.get(base) if isinstance(quant.get(base), dict) else {}
            group = int(layer.get("group_size", quant.get("group_size", 64)))
            n_params += math.prod(tensors[f"{base}.scales"]["shape"]) * group
        elif name.endswith((".scales", ".biases")) and f"{name.rsplit('.', 1)[0]}.weight" in tensors:
            float_bytes.append(_BYTES.get(info["dtype"], 2))
        else:
            n_params += numel
            if info["dtype"] in ("F32", "F16", "BF16", "F64"):
                float_bytes.append(_BYTES[info["dtype"]])
    hidden = int(text["hidden_size"])
    heads = int(text["num_attention_heads"])
    head_dim = int(text.get("head_dim") or hidden // heads)
    return ModelShape(
        n_params=n_params,
        dtype_bytes=max(set(float_bytes), key=float_bytes.count) if float_bytes else 2,
        hidden=hidden,
        intermediate=int(text.get("intermediate_size", 4 * hidden)),
        layers=int(text["num_hidden_layers"]),
        heads=heads,
        kv_dim=int(text.get("num_key_value_heads", heads)) * head_dim,
        vocab=int(text["vocab_size"]),
    )


def _forward_bytes(
    shape: ModelShape, tokens: int, rows: int, context: int, logit_rows: int, kept_tokens: int = 0
) -> float:
    """Working set of one forward over ``tokens`` (padded) tokens in ``rows`` rows of up to
    ``context`` positions, with the LM head on ``logit_rows`` positions (float32 logits), while
    the KV cache of ``kept_tokens`` more positions is held."""
    b = shape.dtype_bytes
    kv = 2 * shape.layers * shape.kv_dim * b * (tokens + rows * PREFIX_ALLOWANCE + kept_tokens)
    activations = tokens * (3 * shape.intermediate + 4 * shape.hidden) * b
    attention = shape.heads * tokens * min(context, tokens) * 4
    logits = 3 * logit_rows * shape.vocab * 4
    return kv + activations + attention + logits


def _process_mb(shape: ModelShape, working: float, kind: str) -> int:
    # weights, the CUDA context and the working set with what comes on top of it (PROCESS_MODEL)
    factor, extra = PROCESS_MODEL[kind]
    return math.ceil(shape.weights_mb + PROCESS_OVERHEAD_MB + extra + factor * working / _MB)


def answering_mb(
    shape: ModelShape, batch_tokens: int, max_batch: int, max_tokens: int = 5, continuation: str = "batch_cache"
) -> int:
    """Device memory (MiB) of a scores or answers job with this batch geometry: weights, the
    process overhead and one batch's working set (prompt pass, or continuation steps with their
    grown cache). With ``continuation`` batch_cache (:func:`compbias.inference.runtime.continuation`)
    the previous batch's cache is kept while its answers are continued from it (``max_batch``
    rows of :data:`CONTINUATION_WIDTH` positions). The device sampler's temporaries
    (:data:`compbias.inference.gumbel_device.SAMPLER_BYTES`) come on top."""
    kept = batch_tokens + max_batch * CONTINUATION_WIDTH if continuation == "batch_cache" else 0
    working = _forward_bytes(shape, batch_tokens, max_batch, MAX_PROMPT + max_tokens, max_batch, kept)
    return _process_mb(shape, working + SAMPLER_BYTES, "answering")


def perplexity_mb(shape: ModelShape, batch_size: int, seq_len: int) -> int:
    """Device memory (MiB) of a perplexity job: logits over every position of a batch."""
    tokens = batch_size * seq_len
    return _process_mb(shape, _forward_bytes(shape, tokens, batch_size, seq_len, tokens), "perplexity")


def fit_batches(
    shape: ModelShape,
    budget_mb: int,
    batch_tokens: int,
    max_batch: int,
    max_tokens: int = 5,
    continuation: str = "batch_cache",
):
    """The largest (batch_tokens, max_batch), halving from the given ones, whose
    :func:`answering_mb` fits ``budget_mb``. Raises ``MemoryError`` when even a one-prompt batch
    of 64 tokens does not fit (the weights alone exceed the budget)."""
    while answering_mb(shape, batch_tokens, max_batch, max_tokens, continuation) > budget_mb:
        if batch_tokens <= 64 and max_batch <= 1:
            need = answering_mb(shape, batch_tokens, max_batch, max_tokens, continuation)
            raise MemoryError(f"gpu_mem_mb={budget_mb} is below this model's minimum of {need} MiB")
        batch_tokens, max_batch = max(64, batch_tokens // 2), max(1, max_batch // 2)
    return batch_tokens, max_batch


def apply_budget(budget_mb: int, weights_mb: float, kind: str = "answering", cache_limit_mb: int = 2048) -> None:
    """Keep MLX within its share of ``budget_mb`` for a job of ``kind`` (``answering`` or
    ``perplexity``, :data:`PROCESS_MODEL`): a memory limit (beyond which MLX frees its buffer
    cache before allocating) at the weights plus the :data:`MLX_FACTOR` part of the working set
    the budget leaves, the rest being the process's memory outside MLX, and a buffer cache no
    larger than what that limit leaves beside the weights, nor than ``cache_limit_mb`` (with
    4 GiB, scores processes of the full demo reached 18,802 MiB by nvidia-smi against 17,717
    declared)."""
    import mlx.core as mx

    factor, extra = PROCESS_MODEL[kind]
    working = max(budget_mb - weights_mb - PROCESS_OVERHEAD_MB - extra, 0) / factor
    limit = weights_mb + MLX_FACTOR * working
    mx.set_memory_limit(int(limit * _MB))
    mx.set_cache_limit(int(max(0, min(cache_limit_mb, limit - weights_mb)) * _MB))


def job_mb(kind: str, checkpoint: str | Path, study, scores: str | Path | None = None, seed: int | None = None) -> int:
    """The ``gpu_mem_mb`` a model job declares: ``kind`` is ``scores``, ``answers`` or
    ``perplexity``, sized for the checkpoint with the GPU batch geometry (``runtime.batch_tokens``
    and ``max_batch``; ``auto`` = the CUDA defaults). An answers job whose seed its scores shard
    already holds loads no model and declares 0. ``cluster.gpu_mem_mb`` set to a number
    replaces the estimate."""
    if kind == "answers" and scores is not None:
        from compbias.inference.answering import precomputed_seeds_in

        if seed in precomputed_seeds_in(scores):
            return 0
    fixed = study.cluster["gpu_mem_mb"]
    if fixed != "auto":
        return int(fixed)
    shape = model_shape(checkpoint)
    if kind == "perplexity":
        return perplexity_mb(shape, study.perplexity.batch_size, study.perplexity.seq_len)
    from compbias.inference.runtime import batch_limits, continuation

    limits = batch_limits("cuda", study.runtime.batch_tokens, study.runtime.max_batch)
    mode = continuation(study.runtime.continuation)
    return answering_mb(shape, *limits, int(study.decoding.max_tokens), mode)


def build_mb(source: str | Path, spec: dict | None = None) -> int:
    """Device memory (MiB) of building a checkpoint from the local checkpoint ``source`` with
    build ``spec``: a cast or quantization reads the source layer by layer, taken as the source's
    safetensors on disk once (H200: 5,576-8,546 MiB per process for a 7B shape's 14.8 GB, 1,194
    for the demo's 270 MB); pruning and perturbation hold the source, the output and a
    calibration batch or the noise, taken as three times it. Plus the process overhead and
    :data:`BUILD_EXTRA_MB`."""
    if not Path(source).is_dir():
        raise FileNotFoundError(2, "no source checkpoint", str(source))
    files = sum(f.stat().st_size for f in Path(source).glob("*.safetensors"))
    copies = 3 if spec is None or variant_kind(spec) in ("prune", "perturb") else 1
    return math.ceil(copies * files / _MB) + PROCESS_OVERHEAD_MB + BUILD_EXTRA_MB
