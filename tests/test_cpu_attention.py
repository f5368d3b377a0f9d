import platform

import mlx.core as mx
import numpy as np
import pytest

from compbias.inference import cpu_attention

X86_LINUX = platform.system() == "Linux" and platform.machine() in ("x86_64", "AMD64")


def _bits(a: mx.array) -> np.ndarray:
    return np.array(a).view(np.uint32)


def _case(rng, heads: tuple[int, int, int], batch: int, q_len: int, k_len: int, spread: float):
    n_q, n_kv, dim = heads
    q = rng.standard_normal((batch, n_q, q_len, dim)).astype(np.float32) * spread
    k = rng.standard_normal((batch, n_kv, k_len, dim)).astype(np.float32)
    v = rng.standard_normal((batch, n_kv, k_len, dim)).astype(np.float32)
    return mx.array(q), mx.array(k), mx.array(v)


def _masks(rng, batch: int, q_len: int, k_len: int) -> list:
    """None, causal, a left-padded causal bool mask (as mlx_lm's batch caches make) and an
    additive one."""
    pad = rng.integers(0, k_len // 2 + 1, batch)
    keys = np.arange(k_len)[None, None, None, :]
    causal = np.arange(k_len - q_len, k_len)[None, None, :, None] >= keys
    left = mx.array((keys >= pad[:, None, None, None]) & causal)
    additive = mx.array(rng.standard_normal((batch, 1, q_len, k_len)).astype(np.float32))
    return [None, "causal", left, additive]


@pytest.mark.skipif(not X86_LINUX, reason="the one-lane softmax of x86-64 Linux wheels")
def test_attention_gives_mlx_own_bits():
    rng = np.random.default_rng(0)
    shapes = [(9, 3, 64), (8, 8, 32), (4, 1, 16)]  # SmolLM2's grouped heads, plain, multi-query
    checked = 0
    with mx.stream(mx.cpu):
        for heads in shapes:
            for batch, q_len, extra in ((1, 1, 40), (5, 3, 0), (16, 60, 35)):
                k_len = q_len + extra
                q, k, v = _case(rng, heads, batch, q_len, k_len, float(rng.uniform(0.5, 30)))
                for mask in _masks(rng, batch, q_len, k_len):
                    scale = 1 / heads[2] ** 0.5
                    want = cpu_attention._ORIGINAL(q, k, v, scale=scale, mask=mask)
                    got = cpu_attention.attention(q, k, v, scale=scale, mask=mask)
                    assert np.array_equal(_bits(want), _bits(got)), (heads, batch, q_len, k_len, mask)
                    checked += 1
    assert checked == 36


def test_other_inputs_go_to_mlx_own_function(monkeypatch):
    calls = []
    monkeypatch.setattr(cpu_attention, "_ORIGINAL", lambda *a, **kw: calls.append(kw) or "mlx")
    q = mx.zeros((1, 2, 3, 8), dtype=mx.bfloat16)
    assert cpu_attention.attention(q, q, q, scale=1.0) == "mlx"
    f = mx.zeros((1, 2, 3, 8))
    assert cpu_attention.attention(f, f, f, scale=1.0, sinks=mx.zeros((2,))) == "mlx"
    assert len(calls) == 2 and calls[1]["sinks"] is not None


def test_installed_unless_off():
    try:
        assert cpu_attention.use_jit_softmax("off") is False
        assert mx.fast.scaled_dot_product_attention is cpu_attention._ORIGINAL
        assert cpu_attention.use_jit_softmax("auto") is X86_LINUX
        want = cpu_attention.attention if X86_LINUX else cpu_attention._ORIGINAL
        assert mx.fast.scaled_dot_product_attention is want
    finally:
        cpu_attention.use_jit_softmax()


@pytest.mark.skipif(not X86_LINUX, reason="the one-lane softmax of x86-64 Linux wheels")
def test_self_check_keeps_mlx_own_where_the_bits_differ(monkeypatch):
    cpu_attention.same_bits.cache_clear()
    try:
        assert cpu_attention.same_bits()
        cpu_attention.same_bits.cache_clear()
        monkeypatch.setattr(
            cpu_attention, "attention", lambda q, k, v, **kw: cpu_attention._ORIGINAL(q, k, v, **kw) * 1.5
        )
        assert not cpu_attention.same_bits()
        assert cpu_attention.use_jit_softmax("auto") is False
        assert mx.fast.scaled_dot_product_attention is cpu_attention._ORIGINAL
    finally:
        monkeypatch.undo()
        cpu_attention.same_bits.cache_clear()
        cpu_attention.use_jit_softmax()
