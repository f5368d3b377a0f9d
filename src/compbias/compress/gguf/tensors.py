"""GGUF tensor storage: GGML type codes, the header scan that reads each tensor's type (mx.load
exposes none), the types mlx decodes correctly, and the dequantization of mx.load's tensors."""

from __future__ import annotations

import mmap
import struct
from pathlib import Path
from typing import Any

import mlx.core as mx

GGML_TYPES = {
    0: "F32",
    1: "F16",
    2: "Q4_0",
    3: "Q4_1",
    6: "Q5_0",
    7: "Q5_1",
    8: "Q8_0",
    9: "Q8_1",
    10: "Q2_K",
    11: "Q3_K",
    12: "Q4_K",
    13: "Q5_K",
    14: "Q6_K",
    15: "Q8_K",
    16: "IQ2_XXS",
    17: "IQ2_XS",
    18: "IQ3_XXS",
    19: "IQ1_S",
    20: "IQ4_NL",
    21: "IQ3_S",
    22: "IQ2_S",
    23: "IQ4_XS",
    24: "I8",
    25: "I16",
    26: "I32",
    27: "I64",
    28: "F64",
    29: "IQ1_M",
    30: "BF16",
    34: "TQ1_0",
    35: "TQ2_0",
    39: "MXFP4",
}
# Types that mx.load decodes correctly, checked against ggml's own dequantize_row_*.
# mx.load (gguflib) silently mis-decodes Q4_K and raises an anonymous error for the other quants.
SUPPORTED_TYPES = frozenset({"F32", "F16", "BF16", "Q4_0", "Q4_1", "Q8_0", "Q2_K", "Q6_K"})

FILE_TYPES = {
    0: "ALL_F32",
    1: "MOSTLY_F16",
    2: "MOSTLY_Q4_0",
    3: "MOSTLY_Q4_1",
    7: "MOSTLY_Q8_0",
    8: "MOSTLY_Q5_0",
    9: "MOSTLY_Q5_1",
    10: "MOSTLY_Q2_K",
    11: "MOSTLY_Q3_K_S",
    12: "MOSTLY_Q3_K_M",
    13: "MOSTLY_Q3_K_L",
    14: "MOSTLY_Q4_K_S",
    15: "MOSTLY_Q4_K_M",
    16: "MOSTLY_Q5_K_S",
    17: "MOSTLY_Q5_K_M",
    18: "MOSTLY_Q6_K",
    32: "MOSTLY_BF16",
}

_KV_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}


class _HeaderReader:
    def __init__(self, buf: mmap.mmap) -> None:
        self.buf, self.pos = buf, 0

    def read(self, fmt: str) -> Any:
        value = struct.unpack_from("<" + fmt, self.buf, self.pos)[0]
        self.pos += struct.calcsize("<" + fmt)
        return value

    def string(self) -> str:
        n = self.read("Q")
        self.pos += n
        return bytes(self.buf[self.pos - n : self.pos]).decode("utf-8", "replace")

    def value(self, vtype: int) -> Any:
        if vtype == 8:
            return self.string()
        if vtype == 9:
            etype, n = self.read("I"), self.read("Q")
            if etype in _KV_SCALARS:
                self.pos += n * struct.calcsize("<" + _KV_SCALARS[etype])
            else:
                for _ in range(n):
                    self.value(etype)
            return None
        return self.read(_KV_SCALARS[vtype])


def _scan_header(path: Path) -> tuple[str | None, dict[str, str]]:
    """Return ``general.architecture`` and each tensor's GGML type name from the GGUF header.

    mx.load exposes neither the storage types nor a usable error for types it cannot decode.
    """
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
        if buf[:4] != b"GGUF":
            raise ValueError(f"{path} is not a GGUF file")
        r = _HeaderReader(buf)
        r.pos = 4
        version = r.read("I")
        if version < 2:
            raise ValueError(f"{path}: GGUF version {version} is not supported")
        n_tensors, n_kv = r.read("Q"), r.read("Q")
        arch = None
        for _ in range(n_kv):
            key = r.string()
            value = r.value(r.read("I"))
            if key == "general.architecture":
                arch = value
        types = {}
        for _ in range(n_tensors):
            name = r.string()
            n_dims = r.read("I")
            r.pos += 8 * n_dims
            ttype = r.read("I")
            types[name] = GGML_TYPES.get(ttype, f"type {ttype}")
            r.pos += 8
    return arch, types


def _dequantize(weights: dict[str, mx.array], name: str, dtype: mx.Dtype) -> mx.array:
    """Return tensor ``name`` as ``dtype``, expanding mx.load's (weight, scales, biases) quantized triples."""
    w = weights[name]
    base = name.removesuffix(".weight")
    scales = weights.get(f"{base}.scales")
    if scales is None:
        return w.astype(dtype)
    biases = weights[f"{base}.biases"]
    # GGUF blocks hold 32 weights, so each group spans `bits` uint32 words.
    bits = w.shape[-1] // scales.shape[-1]
    return mx.dequantize(w, scales.astype(mx.float32), biases.astype(mx.float32), group_size=32, bits=bits).astype(
        dtype
    )
