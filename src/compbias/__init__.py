"""compbias: measure whether compressing an instruction-tuned LLM creates social bias."""

__version__ = "0.1.0"

from compbias.inference.cpu_jit import use_fma_jit as _use_fma_jit
from compbias.inference.runtime import use_fast_blas as _use_fast_blas

_use_fast_blas()
_use_fma_jit()
