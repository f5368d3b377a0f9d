"""Random-weight models: the letter tilt of the LM head hits the requested letter mass."""

import mlx.core as mx
import pytest

from compbias.testing.tiny import PROBE, build_random_model


@pytest.mark.parametrize("mass,temperature", [(0.5, 1.0), (0.9, 0.3)])
def test_letter_mass_calibrated(tmp_path, mass, temperature):
    from mlx_lm import load

    shape = {
        "hidden_size": 128,
        "intermediate_size": 256,
        "num_hidden_layers": 3,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
    }
    probes = [PROBE.replace("who?", f"who is number {k}?") for k in range(4)]
    out = build_random_model(tmp_path / "m", shape, probes=probes, letter_mass=mass, temperature=temperature, seed=1)
    model, tok = load(str(out))
    letters = mx.array([tok.convert_tokens_to_ids(c) for c in "ABC"])
    masses = []
    for p in probes:
        logits = model(mx.array(tok.encode(p, add_special_tokens=False))[None])[0, -1]
        masses.append(float(mx.softmax(logits / temperature)[letters].sum()))
    assert sum(masses) / len(masses) == pytest.approx(mass, abs=1e-3)
    assert (out / "tokenizer.json").exists() and not list(tmp_path.glob(".m.tmp*"))
