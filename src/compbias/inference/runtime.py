"""Where and how MLX runs: optimized BLAS on Linux CPU, compute dtype, model loading.

The Linux ``mlx[cpu]`` wheel links the reference (netlib) BLAS, about 40x slower than OpenBLAS
for float32 matmul, and MLX's CPU kernels for bfloat16/float16/quantized matmuls are slower
still. So on a CPU every process loads an optimized BLAS ahead of MLX and evaluates every variant in
float32, dequantizing quantized weights once at load: the same function, computed fast.
"""

from __future__ import annotations

import glob
import os
import platform
import sys
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

#: Optimized BLAS libraries, most preferred first, that export the unprefixed CBLAS symbols.
BLAS_CANDIDATES = (
    "/usr/lib/x86_64-linux-gnu/openblas-pthread/libblas.so.3",
    "/usr/lib/aarch64-linux-gnu/openblas-pthread/libblas.so.3",
    "/usr/lib64/libopenblas.so.0",
    "/usr/lib/x86_64-linux-gnu/libopenblas.so.0",
    "/usr/lib/aarch64-linux-gnu/libopenblas.so.0",
)


def find_blas(setting: str = "auto") -> str | None:
    """Path of an optimized BLAS to preload, or None.

    ``setting``: ``auto`` (system OpenBLAS, then the PyPI ``mkl`` package of this environment),
    ``none``, or an explicit library path (which must exist).
    """
    if setting == "none" or platform.system() != "Linux":
        return None
    if setting != "auto":
        if not Path(setting).exists():
            raise FileNotFoundError(f"runtime.blas: {setting} does not exist")
        return setting
    for path in BLAS_CANDIDATES:
        if Path(path).exists():
            return path
    for pattern in ("libopenblas*.so*", "libmkl_rt.so*"):  # conda's OpenBLAS, PyPI's mkl
        found = sorted(glob.glob(os.path.join(sys.prefix, "lib", pattern)))
        if found:
            return found[0]
    return None


_LOADED: str | None = None


def use_fast_blas(setting: str | None = None) -> str | None:
    """Load the optimized BLAS into this process ahead of MLX; return its path or None.

    Loaded with RTLD_GLOBAL before ``mlx.core``, its CBLAS/LAPACK symbols take precedence over
    the reference BLAS the wheel links, so no LD_PRELOAD is needed. ``setting`` defaults to the
    ``COMPBIAS_BLAS`` environment variable (which the workflow sets from ``runtime.blas``).
    Importing ``compbias`` calls this, so every job, test and benchmark gets it.
    """
    global _LOADED
    if _LOADED:
        return _LOADED
    lib = find_blas(setting or os.environ.get("COMPBIAS_BLAS", "auto"))
    if "mlx.core" in sys.modules:
        if lib is not None:
            # too late: MLX already bound the wheel's reference BLAS (~10x slower matmuls)
            warnings.warn(
                f"mlx.core was imported before compbias: {lib} is not used; import compbias first",
                RuntimeWarning,
                stacklevel=2,
            )
        return None
    if lib is not None:
        import ctypes

        if "mkl" in Path(lib).name:
            os.environ.setdefault("MKL_THREADING_LAYER", "GNU")
        ctypes.CDLL(lib, mode=os.RTLD_GLOBAL)
        _LOADED = lib
    return _LOADED


def active_blas() -> str:
    """The optimized BLAS this process uses, or ``reference`` (Linux wheel) / ``platform``."""
    if _LOADED:
        return _LOADED
    return "reference" if platform.system() == "Linux" else "platform"


@dataclass
class Runtime:
    """How a model is evaluated; recorded with every answer."""

    device: str
    compute_dtype: str
    dequantize: bool
    blas: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def keep_torch_out() -> bool:
    """In a workflow job (``COMPBIAS_NO_TORCH=1``, set by the Snakefile), let transformers take
    PyTorch as not installed: mlx_lm's tokenizer code imports transformers, which imports an
    installed PyTorch (11-13 s of start-up on the GPU machine) that no job uses. While
    ``sys.modules["torch"]`` is None, ``importlib.util.find_spec("torch")`` returns None; that is
    when transformers makes (and caches) its "is torch available" check. The entry is removed
    again, so other libraries' ``sys.modules`` lookups see no torch rather than None. Returns
    whether it did; without the variable, or with torch already imported, nothing changes."""
    if os.environ.get("COMPBIAS_NO_TORCH") != "1" or "torch" in sys.modules:
        return False
    sys.modules["torch"] = None
    try:
        from transformers.utils import import_utils

        import_utils.is_torch_available()  # an lru_cache in transformers 5; a module global in 4
    except ImportError:
        return False
    finally:
        if sys.modules.get("torch", 0) is None:
            del sys.modules["torch"]
    return True


def resolve_runtime(
    compute_dtype: str = "auto", dequantize: str | bool = "auto", cache_limit_gb: float = 4.0
) -> Runtime:
    """Pick the compute dtype and dequantize-at-load choice for this machine.

    ``auto``: on CPU float32 with dequantized weights (fast BLAS path); on CUDA the model's
    dtype with dequantized weights (prefill-heavy answering runs at the dense matmul rate);
    on Metal the checkpoint as stored (native quantized kernels).
    """
    import mlx.core as mx

    keep_torch_out()
    if mx.default_device() == mx.cpu:
        device = "cpu"
    elif platform.system() == "Darwin":
        device = "metal"
    else:
        device = "cuda"
    if device == "cpu":
        from compbias.inference.cpu_attention import use_jit_softmax

        use_jit_softmax()
    else:
        # Several jobs share one GPU: MLX's buffer cache would otherwise grow towards the whole
        # device in each of them (seen: out-of-memory with four concurrent jobs on an H200).
        mx.set_cache_limit(int(cache_limit_gb * 2**30))
    if compute_dtype == "auto":
        compute_dtype = "float32" if device == "cpu" else "native"
    if dequantize == "auto":
        dequantize = device != "metal"
    return Runtime(device, compute_dtype, bool(dequantize), active_blas() if device == "cpu" else "n/a")


#: Default (padded tokens, prompts) per forward batch: small batches keep a CPU's matmuls in
#: cache (measured fastest at 1024/16 on 2 cores), a GPU wants large ones (H200, 7B shape:
#: continuation prefill 2.3x faster per token with ~100 rows per batch than with ~50).
BATCH_DEFAULTS = {"cpu": (1024, 16), "metal": (8192, 64), "cuda": (32768, 256)}


def batch_limits(device: str, batch_tokens: int | str = "auto", max_batch: int | str = "auto") -> tuple[int, int]:
    """(batch_tokens, max_batch) on ``device`` (a :class:`Runtime`'s); ``auto`` takes its default."""
    tokens, size = BATCH_DEFAULTS[device]
    return (tokens if batch_tokens == "auto" else int(batch_tokens), size if max_batch == "auto" else int(max_batch))


#: Continued answers decoded together, per prompt of ``max_batch``: a decode step is one token
#: per row, cheap next to a prompt batch, and on a CPU small steps waste the BLAS; pairs sharing
#: their tokens so far share a row (:meth:`compbias.inference.decoder.Decoder._steps`).
DECODE_PAIRS_PER_PROMPT = {"cpu": 8, "metal": 2, "cuda": 1}


def chunk_pairs(device: str, max_batch: int) -> int:
    """Continued answers decoded together on ``device`` with prompt batches of ``max_batch``."""
    return DECODE_PAIRS_PER_PROMPT[device] * max_batch


def continuation(setting: str = "auto") -> str:
    """``runtime.continuation``: ``batch_cache`` or ``second_pass`` (``auto``: batch_cache,
    measured faster on 2 CPU cores and on an H200)."""
    return "batch_cache" if setting == "auto" else setting


def decoder_options(device: str, max_batch: int, mode: str) -> dict[str, Any]:
    """The :class:`compbias.inference.decoder.Decoder` options for continuation ``mode`` on
    ``device``: batch_cache decodes :func:`chunk_pairs` at a time, on a CPU letting pairs with the
    same tokens so far share a row; second_pass keeps one row per pair, ``max_batch`` at a time.

    Shared rows save a CPU's matmul work, but every decode step then gathers its rows' KV cache
    anew (rows split as seeds draw apart, and drop as answers end). A GPU's decode step is bound
    by its kernel launches and memory traffic, not by its rows, so there each pair keeps its row
    and the cache is gathered once per chunk (on an H200 a 256-row gather of the demo model's
    cache took longer than the forward step itself)."""
    share = mode == "batch_cache" and device == "cpu"
    pairs = chunk_pairs(device, max_batch) if mode == "batch_cache" else max_batch
    return {"chunk_pairs": pairs, "share_rows": share}


def load_model(path: str | Path, runtime: Runtime):
    """Load an MLX checkpoint with mlx_lm and apply the runtime's dtype/dequantize choice.

    Returns (model, tokenizer, config).
    """
    import mlx.core as mx
    from mlx_lm.utils import dequantize_model, load

    path = Path(path)
    if not (path / "config.json").exists():
        raise FileNotFoundError(f"{path}: not an MLX checkpoint (no config.json)")
    model, tokenizer, config = load(str(path), return_config=True, lazy=True)
    # Cast scales/biases first so dequantized weights are exact in the compute dtype.
    if runtime.compute_dtype != "native":
        model.set_dtype(getattr(mx, runtime.compute_dtype))
    if runtime.dequantize and "quantization" in config:
        model = dequantize_model(model)
    mx.eval(model.parameters())
    model.eval()
    return model, tokenizer, config


def set_threads(n: int) -> None:
    """Limit the preloaded BLAS to ``n`` threads (it reads its environment before we run)."""
    import ctypes

    for name in ("openblas_set_num_threads", "MKL_Set_Num_Threads"):
        fn = getattr(ctypes.CDLL(None), name, None)
        if fn is not None:
            fn(int(n))
            return
