"""The device Gumbel sampler (compbias.inference.gumbel_device) gives gumbel_rows' draws."""

import mlx.core as mx
import numpy as np
import pytest

from compbias.inference import gumbel_device
from compbias.inference.noise import gumbel, item_keys, row_keys
from compbias.inference.sampling import gumbel_rows


def _rows(kind: str, n: int, v: int, rng) -> np.ndarray:
    x = {
        "flat": lambda: rng.normal(size=(n, v)) * 0.05,
        "peaked": lambda: rng.normal(size=(n, v)) * 3,
        "ties": lambda: np.round(rng.normal(size=(n, v)) * 2) / 2,
        "uniform": lambda: np.zeros((n, v)),
        "large": lambda: rng.normal(size=(n, v)) * 30,
    }[kind]()
    if kind == "peaked":
        x[:, ::3] = -np.inf  # masked tokens
    return x.astype(np.float32)


@pytest.mark.parametrize("v", [70, 1000, 8192])
@pytest.mark.parametrize("kind", ["flat", "peaked", "ties", "uniform", "large"])
def test_device_draws_equal_the_host_sampler(kind, v):
    x = _rows(kind, 48, v, np.random.default_rng(v))
    for seed, step in ((1, 0), (2, 3)):
        keys = row_keys(item_keys([f"{kind}-{i}" for i in range(len(x))]), seed, step)
        assert np.array_equal(gumbel_device.draw(mx.array(x), 0.3, keys), gumbel_rows(x, 0.3, keys))


def test_near_ties_are_left_to_the_host_sampler(monkeypatch):
    """Rows built so that two tokens' float64 scores differ by 1e-9: float32 cannot order them,
    so none is certified, and the host sampler's draw is returned."""
    n, v, t = 40, 500, 0.3
    keys = row_keys(item_keys([f"tie-{i}" for i in range(n)]), 5, 1)
    g = gumbel(keys, np.broadcast_to(np.arange(v), (n, v)))
    x = np.full((n, v), -20.0)
    x[:, 0] = 0.0  # tokens 0 and 1 get scores z + G that differ by 1e-9 only
    x[:, 1] = t * (g[:, 0] - g[:, 1] + 1e-9 * np.where(np.arange(n) % 2, 1, -1))
    x = x.astype(np.float32)
    sure = []
    block = gumbel_device._draw_block
    monkeypatch.setattr(gumbel_device, "_draw_block", lambda *a: (r := block(*a), sure.append(r[1]))[0])
    got = gumbel_device.draw(mx.array(x), t, keys)
    assert not np.concatenate([np.array(s) for s in sure]).any()
    assert np.array_equal(got, gumbel_rows(x, t, keys)) and set(got) == {0, 1}


def test_float32_noise_stays_within_the_bound():
    keys = row_keys(item_keys([f"k{i}" for i in range(64)]), 3, 0)
    g32 = np.array(gumbel_device._gumbel(mx.array(keys), 4096)).astype(np.float64)
    g64 = gumbel(keys, np.broadcast_to(np.arange(4096), (64, 4096)))
    assert np.abs(g32 - g64).max() < 40 * 2.0**-24


def test_greedy_and_empty_batches():
    x = np.random.default_rng(0).normal(size=(5, 30)).astype(np.float32)
    keys = row_keys(item_keys([str(i) for i in range(5)]), 1, 0)
    assert np.array_equal(gumbel_device.draw(mx.array(x), 0.0, keys), x.argmax(axis=1))
    assert gumbel_device.draw(mx.zeros((0, 30)), 0.3, keys[:0]).shape == (0,)


def test_next_tokens_on_a_gpu_draw_on_the_device(monkeypatch):
    from compbias.inference import sampling

    calls = []
    draw = gumbel_device.draw
    monkeypatch.setattr(gumbel_device, "draw", lambda *a: (calls.append(1), draw(*a))[1])
    x = _rows("flat", 6, 300, np.random.default_rng(1))
    items = [f"g-{i}" for i in range(6)]
    host = sampling.next_tokens("gumbel", mx.array(x), 0.3, 7, items, 2)

    class Gpu:
        type = mx.DeviceType.gpu

    monkeypatch.setattr(mx, "default_device", lambda: Gpu())
    assert np.array_equal(sampling.next_tokens("gumbel", mx.array(x), 0.3, 7, items, 2), host) and calls


def test_a_device_whose_noise_differs_keeps_the_host_sampler(monkeypatch):
    assert gumbel_device.usable()
    gumbel_device.usable.cache_clear()
    monkeypatch.setattr(gumbel_device, "_gumbel", lambda keys, v: mx.zeros((keys.shape[0], v)))
    try:
        assert not gumbel_device.usable()
    finally:
        gumbel_device.usable.cache_clear()
