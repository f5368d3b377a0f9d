"""Tests for compbias.compress.pruning on tiny random mlx_lm models (llama, qwen2, phi3)."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest
from mlx.utils import tree_flatten

from compbias.compress.pruning import (
    CalibrationSpec,
    PruneSpec,
    calibration_tokens,
    magnitude_mask,
    prunable_linears,
    prune_checkpoint,
    prune_model,
    validate_spec,
    wanda_mask,
)
from compbias.compress.pruning.wanda import _InputRecorder
from compbias.data.corpus import load_texts

WORDS = ["alpha", "beta", "gamma", "delta", "river", "stone", "light", "cloud", "north", "south", "ember", "frost"]
VOCAB_SIZE = 320  # byte-level BPE of 300 tokens (+1 that Qwen2Tokenizer adds), padded
BASE_ARGS = dict(
    hidden_size=64,
    num_hidden_layers=2,
    intermediate_size=96,
    num_attention_heads=4,
    num_key_value_heads=2,
    rms_norm_eps=1e-5,
    vocab_size=VOCAB_SIZE,
)
ARCHS = {
    "llama": dict(BASE_ARGS, model_type="llama", tie_word_embeddings=False),
    "qwen2": dict(BASE_ARGS, model_type="qwen2", tie_word_embeddings=True),
    "phi3": dict(BASE_ARGS, model_type="phi3", num_key_value_heads=4, tie_word_embeddings=False),
}
CALIB = {"n_samples": 8, "seq_len": 32, "seed": 3}


def build_model(config: dict, seed: int = 0) -> nn.Module:
    arch = importlib.import_module(f"mlx_lm.models.{config['model_type']}")
    mx.random.seed(seed)
    model = arch.Model(arch.ModelArgs.from_dict(config))
    for _, mod in model.named_modules():
        if isinstance(mod, nn.RMSNorm):  # ones at init: randomise so "unchanged" is a real check
            mod.weight = mod.weight + 0.1 * mx.random.normal(mod.weight.shape)
    mx.eval(model.parameters())
    return model


def write_tokenizer(path: Path) -> None:
    """A byte-level BPE tokenizer (transformers maps qwen2 to Qwen2Tokenizer, which needs one)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300, special_tokens=["<eos>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(random_texts(50, seed=9), trainer)
    tok.save(str(path / "tokenizer.json"))
    (path / "tokenizer_config.json").write_text(
        json.dumps({"tokenizer_class": "PreTrainedTokenizerFast", "eos_token": "<eos>"})
    )


def save_checkpoint(path: Path, model: nn.Module, config: dict) -> Path:
    from mlx_lm.utils import save_config, save_model

    save_model(path, model)
    save_config(dict(config), config_path=path / "config.json")
    write_tokenizer(path)
    return path


def random_texts(n_docs: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, size=rng.integers(20, 60))) for _ in range(n_docs)]


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("ckpts")
    return {name: save_checkpoint(root / name, build_model(cfg), cfg) for name, cfg in ARCHS.items()}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("corpus")
    texts = random_texts(30, seed=1)
    (root / "a.txt").write_text("\n".join(texts[:10]))
    with open(root / "b.jsonl", "w") as fh:
        for t in texts[10:]:
            fh.write(json.dumps({"text": t, "id": 0}) + "\n")
    return root


def load_weights(path: Path) -> dict[str, mx.array]:
    weights: dict[str, mx.array] = {}
    for f in sorted(path.glob("model*.safetensors")):
        weights.update(mx.load(str(f)))
    return weights


SPECS = [
    ("random", 0.5, {}),
    ("random", 0.3, {}),
    ("magnitude", 0.5, {}),
    ("magnitude", 0.5, {"granularity": "layer"}),
    ("wanda", 0.5, {}),
]


@pytest.mark.parametrize("arch", list(ARCHS))
@pytest.mark.parametrize(
    "method,sparsity,extra", SPECS, ids=[f"{m}-{s}-{e.get('granularity', 'row')}" for m, s, e in SPECS]
)
def test_prune_checkpoint(ckpts, corpus, tmp_path, arch, method, sparsity, extra):
    from mlx_lm import load

    src = ckpts[arch]
    spec = {
        "method": method,
        "sparsity": sparsity,
        "mask_seed": 7,
        "calibration": dict(CALIB, source=str(corpus)),
        **extra,
    }
    out = tmp_path / "pruned"
    manifest = prune_checkpoint(src, out, f"{arch}-{method}", spec)  # the manifest's pruning section

    assert not (out / "prune_manifest.json").exists()  # one manifest, written by build_checkpoint
    assert not list(tmp_path.glob(".*tmp*"))
    for f in ("config.json", "tokenizer.json", "tokenizer_config.json", "model.safetensors"):
        assert (out / f).exists()
    assert manifest["method"] == method and manifest["target_sparsity"] == sparsity
    assert abs(manifest["sparsity"] - sparsity) <= 0.001
    assert manifest["prunable"] == sum(
        v.size for k, v in load_weights(src).items() if k.removesuffix(".weight") in manifest["layer_sparsity"]
    )
    assert manifest["zeroed"] == round(manifest["sparsity"] * manifest["prunable"])
    assert manifest["seconds"] > 0
    assert (manifest["calibration"] is not None) == (method == "wanda")

    names = manifest["layer_sparsity"]
    assert any(n.endswith("self_attn.o_proj") for n in names) and any(n.endswith("mlp.down_proj") for n in names)
    assert all(".layers." in n for n in names)
    for name, frac in names.items():
        assert abs(frac - sparsity) <= 0.002, (name, frac)

    before, after = load_weights(src), load_weights(out)
    assert before.keys() == after.keys()
    pruned_keys = {f"{n}.weight" for n in names}
    assert any("embed_tokens" in k for k in before) and any("norm" in k for k in before)
    for key, w in before.items():
        if key in pruned_keys:
            zero = after[key] == 0
            assert mx.array_equal(mx.where(zero, 0, w), after[key])  # pruning only zeroes
            assert zero.sum().item() == round(names[key.removesuffix(".weight")] * w.size)
        else:
            assert mx.array_equal(w, after[key]), key

    model, tokenizer = load(str(out))
    ids = tokenizer.encode("alpha beta river stone")
    logits = model(mx.array([ids]))
    assert logits.shape == (1, len(ids), VOCAB_SIZE) and bool(mx.all(mx.isfinite(logits)))


def test_magnitude_removes_smallest():
    w = mx.array([[0.1, -5.0, 0.3, -0.2], [4.0, -0.05, 0.5, 2.0], [-0.6, 0.7, -3.0, 0.01]])
    expected_row = [[True, False, False, True], [False, True, True, False], [True, False, False, True]]
    assert magnitude_mask(w, 0.5, "row").tolist() == expected_row
    # Per layer: the 6 smallest |W| overall are 0.01, 0.05, 0.1, 0.2, 0.3, 0.5.
    expected_layer = [[True, False, True, True], [False, True, True, False], [False, False, False, True]]
    assert magnitude_mask(w, 0.5, "layer").tolist() == expected_layer


def test_row_remainder_keeps_layer_count_exact():
    w = mx.array(np.random.default_rng(0).normal(size=(7, 10)).astype(np.float32))
    mask = magnitude_mask(w, 0.33, "row")
    assert mask.sum().item() == round(70 * 0.33)  # 23 = 7 rows x 3 + 2 rows with one more
    assert sorted(mask.sum(axis=1).tolist()) == [3] * 5 + [4] * 2


def test_wanda_ranks_by_weight_times_input_norm():
    w = mx.array([[1.0, 2.0, 3.0, 4.0], [0.5, 8.0, 0.2, 3.0]])
    x = mx.array([[6.0, 1.0, 0.0, 0.1], [8.0, 0.0, 1.0, 0.0]])  # column norms 10, 1, 1, 0.1
    rec = _InputRecorder(nn.Linear(4, 2))
    rec(x[None])
    norm = mx.sqrt(rec.sqsum)
    assert np.allclose(np.array(norm), [10.0, 1.0, 1.0, 0.1])
    # scores: row 0 = [10, 2, 3, 0.4], row 1 = [5, 8, 0.2, 0.3]
    assert wanda_mask(w, norm, 0.5).tolist() == [[False, True, False, True], [False, False, True, True]]
    assert magnitude_mask(w, 0.5).tolist() == [[True, True, False, False], [True, False, True, False]]


def test_wanda_block_order_uses_pruned_outputs():
    from mlx_lm.models.activations import swiglu

    cfg = ARCHS["llama"]
    model = build_model(cfg, seed=5)
    orig = build_model(cfg, seed=5)  # same seed: an independent unpruned copy
    tokens = mx.array(np.random.default_rng(0).integers(0, VOCAB_SIZE, size=(6, 16)), dtype=mx.int32)
    norms: dict[str, mx.array] = {}
    prune_model(model, PruneSpec("wanda", 0.5), tokens, batch_size=4, norms_out=norms)

    def col_norm(x):
        return mx.sqrt(mx.sum(x.astype(mx.float32) ** 2, axis=(0, 1)))

    h0 = orig.model.embed_tokens(tokens)
    b0, b1 = orig.model.layers
    # Block 0 statistics come from the unpruned block 0 (down_proj input recomputed by hand).
    h = h0 + b0.self_attn(b0.input_layernorm(h0), "causal")
    y = b0.post_attention_layernorm(h)
    expected_down0 = col_norm(swiglu(b0.mlp.gate_proj(y), b0.mlp.up_proj(y)))
    assert np.allclose(np.array(norms["model.layers.0.mlp.down_proj"]), np.array(expected_down0), rtol=1e-4)
    assert np.allclose(
        np.array(norms["model.layers.0.self_attn.q_proj"]), np.array(col_norm(b0.input_layernorm(h0))), rtol=1e-4
    )

    # Block 1 statistics come from block 0's PRUNED outputs.
    h1_pruned = model.model.layers[0](h0, "causal")
    h1_dense = b0(h0, "causal")
    expected_q1 = col_norm(b1.input_layernorm(h1_pruned))
    got_q1 = np.array(norms["model.layers.1.self_attn.q_proj"])
    assert np.allclose(got_q1, np.array(expected_q1), rtol=1e-4)
    assert not np.allclose(got_q1, np.array(col_norm(b1.input_layernorm(h1_dense))), rtol=1e-3)
    # ...and the mask applied to block 1 follows from those statistics.
    expected_mask = wanda_mask(b1.self_attn.q_proj.weight, expected_q1, 0.5)
    assert (model.model.layers[1].self_attn.q_proj.weight == 0).tolist() == expected_mask.tolist()
    # Every linear, o_proj and down_proj included, got its own statistics.
    assert set(norms) == {p.name for p in prunable_linears(model)}
    for p in prunable_linears(model):
        assert norms[p.name].shape == (p.module.weight.shape[1],) and bool(mx.all(norms[p.name] > 0))
    # The recorders were removed again.
    assert all(isinstance(p.module, nn.Linear) for p in prunable_linears(model))


def test_random_mask_seeded():
    cfg = ARCHS["qwen2"]

    def masks(seed):
        model = build_model(cfg, seed=1)
        prune_model(model, PruneSpec("random", 0.4, mask_seed=seed))
        return [np.array(p.module.weight == 0) for p in prunable_linears(model)]

    a, b, c = masks(1), masks(1), masks(2)
    assert all((x == y).all() for x, y in zip(a, b))
    assert not all((x == y).all() for x, y in zip(a, c))


def test_bfloat16_model_keeps_dtype():
    cfg = ARCHS["llama"]
    model = build_model(cfg)
    model.set_dtype(mx.bfloat16)
    tokens = mx.array(np.random.default_rng(0).integers(0, VOCAB_SIZE, size=(2, 8)), dtype=mx.int32)
    stats = prune_model(model, PruneSpec("wanda", 0.5), tokens)
    assert abs(stats["sparsity"] - 0.5) <= 0.001
    assert all(v.dtype == mx.bfloat16 for _, v in tree_flatten(model.parameters()))


@pytest.mark.parametrize(
    "spec,fragment",
    [
        ({"method": "magnitude", "sparsity": 1.0}, "sparsity"),
        ({"method": "magnitude", "sparsity": -0.1}, "sparsity"),
        ({"method": "obd", "sparsity": 0.5}, "method"),
        ({"method": "magnitude", "sparsity": 0.5, "granularity": "column"}, "granularity"),
        ({"method": "wanda", "sparsity": 0.5, "granularity": "layer"}, "granularity"),
        ({"method": "wanda", "sparsity": 0.5, "calibration": {"n_sample": 3}}, "calibration"),
        ({"method": "wanda", "sparsity": 0.5, "calibration": {"seq_len": 0}}, "seq_len"),
    ],
)
def test_validate_spec_rejects(spec, fragment):
    with pytest.raises(ValueError, match="my-variant") as err:
        validate_spec("my-variant", spec)
    assert fragment in str(err.value)


def test_validate_spec_defaults():
    spec = validate_spec("v", {"method": "wanda", "sparsity": 0.5, "kind": "prune", "calibration": {"seed": 4}})
    assert spec == PruneSpec("wanda", 0.5, "row", 0, CalibrationSpec(seed=4))
    assert (spec.calibration.n_samples, spec.calibration.seq_len) == (128, 2048)


def test_too_short_corpus(ckpts, tmp_path):
    spec = {"method": "wanda", "sparsity": 0.5, "calibration": CALIB}
    with pytest.raises(ValueError, match=r"short-variant.*short by \d+"):
        prune_checkpoint(ckpts["llama"], tmp_path / "out", "short-variant", spec, texts=["w1 w2 w3"])
    assert not (tmp_path / "out").exists()


def test_calibration_tokens(ckpts, corpus):
    from mlx_lm.utils import load_tokenizer

    tok = load_tokenizer(ckpts["llama"])
    texts = load_texts(str(corpus))
    assert len(texts) == 21  # one .txt file + 20 jsonl lines
    assert load_texts(str(corpus / "*.jsonl")) == texts[1:]
    a = calibration_tokens(tok, texts, 8, 32, seed=0)
    assert a.shape == (8, 32) and a.dtype == mx.int32
    assert mx.array_equal(a, calibration_tokens(tok, texts, 8, 32, seed=0))
    assert not mx.array_equal(a, calibration_tokens(tok, texts, 8, 32, seed=1))
    stream = []
    for t in texts:
        stream += tok.encode(t, add_special_tokens=False) + [tok.eos_token_id]
    joined = " ".join(map(str, stream))
    assert all(" ".join(map(str, row)) in joined for row in a.tolist())
    with pytest.raises(ValueError, match="'v1'.*short by"):
        calibration_tokens(tok, texts, 1000, 32, seed=0, variant_name="v1")


def test_no_prunable_layers():
    class Toy(nn.Module):
        def __init__(self):
            super().__init__()
            self.model_type = "toy"
            self.embed = nn.Embedding(10, 8)
            self.layers = []

    with pytest.raises(ValueError, match=r"'toyvar'.*'toy'"):
        prunable_linears(Toy(), "toyvar")


def test_quantized_model_rejected():
    model = build_model(ARCHS["llama"])
    nn.quantize(model, group_size=32, bits=4)
    with pytest.raises(ValueError, match="qvar.*prune before quantizing"):
        prune_model(model, PruneSpec("magnitude", 0.5), variant_name="qvar")
