"""Perturbation control variants (compbias.compress.perturb): noise of a quantizer's per-matrix RMS error."""

from __future__ import annotations

import json
from pathlib import Path

import mlx.core as mx
import numpy as np
import polars as pl
import pytest
from conftest import ROOT, SHARED_BBQ, SNAKEMAKE

from compbias.compress.checkpoints import MANIFEST, build_checkpoint, build_spec, variant_bits, variant_kind
from compbias.compress.perturb import PerturbSpec, noise_key, perturb_model, validate_spec
from compbias.config import ConfigError, validate
from compbias.stats.regression import dose_response, transition_model
from compbias.stats.transitions import item_table
from compbias.testing.synthetic import synthetic_answers

VARIANTS = {
    "bf16": {"dtype": "bfloat16"},
    "q4": {"quantize": {"bits": 4, "group_size": 64}},
    "q8": {"quantize": {"bits": 8, "group_size": 32, "mode": "affine"}},
    "q4-noise": {"perturb": {"like": "q4", "seed": 0}},
    "q8-noise": {"perturb": {"like": "q8"}},
}
TOLERANCE = 0.02  # the criterion: RMS of the stored perturbation within 2% of the quantizer's


def _rms(x: mx.array) -> float:
    return float(mx.sqrt(mx.mean(mx.square(x.astype(mx.float32)))).item())


def _weights(path: Path) -> dict[str, mx.array]:
    out: dict[str, mx.array] = {}
    for f in sorted(path.glob("*.safetensors")):
        out.update(mx.load(str(f)))
    return out


@pytest.fixture(scope="module")
def built(tmp_path_factory, tiny_model):
    """The tiny model's bf16 baseline, q4 and q8 (mlx_lm convert) and their noise controls, as the workflow builds them."""
    root = tmp_path_factory.mktemp("perturb")
    out = {}
    for name in ("bf16", "q4", "q8"):
        out[name] = root / name
        build_checkpoint(str(tiny_model), out[name], VARIANTS[name], "tiny", name)
    for name in ("q4-noise", "q8-noise"):
        out[name] = root / name
        build_checkpoint(str(out["bf16"]), out[name], build_spec(VARIANTS, name), "tiny", name)
    return out


def _quantized_names(ckpt: dict[str, mx.array]) -> list[str]:
    return sorted(k.removesuffix(".scales") + ".weight" for k in ckpt if k.endswith(".scales"))


@pytest.mark.parametrize("control, like, group_size, bits", [("q4-noise", "q4", 64, 4), ("q8-noise", "q8", 32, 8)])
def test_perturbation_rms_matches_the_quantization(built, control, like, group_size, bits):
    base, pert, quant = (_weights(built[v]) for v in ("bf16", control, like))
    manifest = json.loads((built[control] / MANIFEST).read_text())
    # exactly the matrices mlx_lm quantized in the real q4/q8 checkpoint (embeddings and lm_head too)
    names = _quantized_names(quant)
    assert sorted(manifest["rms_error"]) == names and manifest["n_perturbed"] == len(names) > 10
    assert "model.embed_tokens.weight" in names
    rel, rel_ckpt = [], []
    for name in names:
        w = base[name]
        assert pert[name].dtype == w.dtype == mx.bfloat16
        # the quantizer's RMS error on the stored baseline weight, recomputed here
        q_rms = _rms(mx.dequantize(*mx.quantize(w, group_size, bits), group_size, bits) - w.astype(mx.float32))
        p_rms = _rms(pert[name].astype(mx.float32) - w.astype(mx.float32))
        rel.append(abs(p_rms / q_rms - 1))
        # the real quantized checkpoint has that error, and the manifest records it
        stem = name.removesuffix(".weight")
        dq = mx.dequantize(quant[name], quant[stem + ".scales"], quant.get(stem + ".biases"), group_size, bits)
        rel_ckpt.append(abs(_rms(dq - w.astype(mx.float32)) / manifest["rms_error"][name] - 1))
        assert manifest["perturbation_rms"][name] == pytest.approx(p_rms, rel=1e-5)
    print(f"{control}: max relative RMS difference over {len(names)} matrices {max(rel):.2e}")
    assert max(rel) < TOLERANCE
    assert max(rel_ckpt) < 1e-5 and manifest["rms_max_rel_diff"] == pytest.approx(max(rel), abs=1e-5)
    # everything else (norms) is the baseline's, bit for bit
    others = set(base) - set(names)
    assert others and set(pert) == set(base)
    assert all(mx.array_equal(pert[k], base[k]).item() for k in others)


def test_manifest_and_variants_table_fields(built):
    m = json.loads((built["q4-noise"] / MANIFEST).read_text())
    assert m["kind"] == "perturb" and m["bits"] == 16.0 and m["like"] == "q4" and m["perturb_seed"] == 0
    assert m["like_quantize"] == {"bits": 4, "group_size": 64, "mode": "affine"} and m["dtype"] == "bfloat16"
    assert m.get("group_size") is None and "base_variant" not in m
    assert 0 < m["rms_error_overall"] < max(m["rms_error"].values())
    assert json.loads((built["q8-noise"] / MANIFEST).read_text())["perturb_seed"] == 0  # the default
    from compbias.inference.merge import variants_table

    order = ["bf16", "q4", "q8", "q4-noise"]
    t = variants_table([built[v] for v in order], order, "bf16").filter(pl.col("variant") == "q4-noise")
    row = t.row(0, named=True)
    assert (row["kind"], row["bits"], row["like"], row["group_size"], row["method"]) == (
        "perturb",
        16.0,
        "q4",
        None,
        None,
    )


def test_noise_is_keyed_by_seed_and_name(built, tmp_path):
    again = tmp_path / "again"
    build_checkpoint(str(built["bf16"]), again, build_spec(VARIANTS, "q4-noise"), "tiny", "q4-noise")
    a, b = _weights(built["q4-noise"]), _weights(again)
    assert all(mx.array_equal(a[k], b[k]).item() for k in a)
    other = {**VARIANTS, "q4-noise": {"perturb": {"like": "q4", "seed": 1}}}
    build_checkpoint(str(built["bf16"]), tmp_path / "seed1", build_spec(other, "q4-noise"), "tiny", "q4-noise")
    c = _weights(tmp_path / "seed1")
    name = "model.layers.0.mlp.up_proj.weight"
    assert not mx.array_equal(a[name], c[name]).item()
    k1, k2 = noise_key(0, name), noise_key(0, "model.layers.1.mlp.up_proj.weight")
    assert not mx.array_equal(k1, k2).item() and mx.array_equal(k1, noise_key(0, name)).item()
    # the change is noise, not the quantizer's error: nearly uncorrelated with it
    base = _weights(built["bf16"])
    w = base[name].astype(mx.float32)
    delta = np.array(a[name].astype(mx.float32) - w).ravel()
    err = np.array(mx.dequantize(*mx.quantize(base[name], 64, 4), 64, 4).astype(mx.float32) - w).ravel()
    assert abs(np.corrcoef(delta, err)[0, 1]) < 0.1


def test_tied_embeddings_and_group_size_predicate():
    from test_pruning import ARCHS, build_model

    cfg = ARCHS["qwen2"]  # tied embeddings: the embedding is the LM head
    model, probe = build_model(cfg, seed=3), build_model(cfg, seed=3)
    stats = perturb_model(model, probe, cfg, PerturbSpec("q4", 4, 64))
    assert "model.embed_tokens.weight" in stats["rms_error"] and not any("lm_head" in k for k in stats["rms_error"])
    # intermediate_size 96 is not a multiple of 64: mlx_lm leaves down_proj unquantized, so no noise there
    assert not any("down_proj" in k for k in stats["rms_error"]) and stats["rms_max_rel_diff"] < TOLERANCE
    with pytest.raises(ValueError, match="no weight matrix would be quantized with group_size 128"):
        perturb_model(build_model(cfg), build_model(cfg), cfg, PerturbSpec("q4", 4, 128), variant_name="v")


def test_kind_bits_and_build_spec():
    assert variant_kind(VARIANTS["q4-noise"]) == "perturb" and variant_bits(VARIANTS["q4-noise"]) == 16.0
    spec = build_spec(VARIANTS, "q4-noise")
    assert spec == {"perturb": {"like": "q4", "seed": 0, "quantize": {"bits": 4, "group_size": 64}}}
    assert build_spec(VARIANTS, "q4") == VARIANTS["q4"] and "quantize" not in VARIANTS["q4-noise"]["perturb"]
    assert validate_spec("q4-noise", spec["perturb"]) == PerturbSpec("q4", 4, 64, "affine", 0)


def _config(**variants) -> dict:
    return {
        "models": {"m": "org/model"},
        "variants": {"bf16": {}, "q4": {"quantize": {"bits": 4}}, **variants},
        "baseline": "bf16",
        "seeds": [1],
        "shards": 1,
        "dataset": {"source": "hf", "categories": ["age"]},
    }


@pytest.mark.parametrize(
    "variants, message",
    [
        (
            {"n": {"perturb": {"like": "q9"}}},
            "'variants.n.perturb.like': variant 'n': perturb.like 'q9' is not a variant",
        ),
        ({"n": {"perturb": {"like": "bf16"}}}, "'variants.n.perturb.like': .*'bf16' is not a quantization"),
        ({"n": {"perturb": {"like": "n"}}}, "'variants.n.perturb.like': .*cannot name the variant itself"),
        (
            {
                "w": {"prune": {"method": "random", "sparsity": 0.5}},
                "w4": {"base": "w", "quantize": {"bits": 4}},
                "n": {"perturb": {"like": "w4"}},
            },
            "'variants.n.perturb.like': .*built on 'w', not on the baseline",
        ),
        ({"n": {"perturb": {"like": "q4", "seed": 1.5}}}, "'variants.n.perturb.seed': 1.5 is not of type 'integer'"),
        ({"n": {"perturb": {"seed": 1}}}, "'variants.n.perturb': 'like' is a required property"),
        ({"n": {"perturb": {"like": "q4", "bits": 4}}}, "'variants.n.perturb': Additional properties"),
        (
            {"n": {"perturb": {"like": "q4"}, "base": "q4"}},
            "'variants.n.base': a perturb variant starts from the baseline",
        ),
        ({"n": {"perturb": {"like": "q4"}, "quantize": {"bits": 4}}}, "'variants.n': choose one of"),
    ],
)
def test_config_checks(variants, message):
    with pytest.raises(ConfigError, match=message):
        validate(_config(**variants))


def test_config_accepts_the_demo_and_test_studies():
    cfg = validate(_config(**{"q4-noise": {"perturb": {"like": "q4", "seed": 0}}}))
    assert cfg["variants"]["q4-noise"] == {"perturb": {"like": "q4", "seed": 0}}
    import yaml

    for path in (ROOT / "config" / "demo.yaml", ROOT / ".test" / "config.yaml"):
        variants = yaml.safe_load(path.read_text())["variants"]
        assert variants["q4-noise"] == {"perturb": {"like": "q4", "seed": 0}}, path
        validate_spec("q4-noise", variants["q4-noise"]["perturb"], variants, "bf16")


def test_bits_regressions_leave_the_control_out():
    """A control at nominal 16 bits that is heavily biased would pull the bits slope if it were a
    precision level: the bits fits must equal those without it; C(variant) gets its own term."""
    a, _, v = synthetic_answers(
        600,
        models=("m1",),
        variants={"bf16": 16, "q8": 8, "q4": 4, "q4-noise": 16},
        seeds=3,
        effect=-0.2,
        item_sd=0.3,
        seed=4,
    )
    noisy = pl.col("variant") == "q4-noise"
    a = a.with_columns(role=pl.when(noisy & (pl.col("role") == "unknown")).then(pl.lit("biased")).otherwise("role"))
    v = v.with_columns(kind=pl.when(noisy).then(pl.lit("perturb")).otherwise("kind"))
    full, without = dose_response(a, v), dose_response(a.filter(~noisy), v.filter(~noisy))
    bits_specs = pl.col("spec").str.starts_with("bits")
    c1 = full["coefficients"].filter(bits_specs).sort("spec", "model_scope", "term")
    c0 = without["coefficients"].filter(bits_specs).sort("spec", "model_scope", "term")
    assert c1["term"].to_list() == c0["term"].to_list()
    np.testing.assert_allclose(c1["coef"].to_numpy(), c0["coef"].to_numpy(), rtol=1e-9)
    assert full["coefficients"].filter(spec="variant_cluster", term="C(variant)[T.q4-noise]")["coef"][0] > 1
    lr = full["tests"].filter(test="LR bits (iid)")["statistic"][0]
    assert lr == pytest.approx(without["tests"].filter(test="LR bits (iid)")["statistic"][0])
    t1, t0 = transition_model(item_table(a), v, "bf16"), transition_model(item_table(a.filter(~noisy)), v, "bf16")
    np.testing.assert_allclose(t1["coef"].to_numpy(), t0["coef"].to_numpy(), rtol=1e-9)


@pytest.mark.skipif(not SHARED_BBQ.is_dir(), reason="no BBQ copy")  # the config validation reads dataset.path
def test_workflow_plans_the_control(tmp_path, tiny_model):
    import subprocess

    import yaml

    cfg = yaml.safe_load((ROOT / ".test" / "config.yaml").read_text())
    cfg["models"]["tiny"] = {"path": str(tiny_model)}
    cfg["dataset"]["path"] = str(SHARED_BBQ)
    for spec in cfg["variants"].values():  # corpora relative to the checkout, as in test_workflow
        if spec.get("prune", {}).get("calibration"):
            spec["prune"]["calibration"]["source"] = str(ROOT / spec["prune"]["calibration"]["source"])
    cfg["perplexity"]["path"] = str(ROOT / cfg["perplexity"]["path"])
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    from compbias.keys import checkpoint_key  # checkpoints live under a content key of their spec

    bf16, noise = (f"results/checkpoints/tiny/{v}/{checkpoint_key(cfg, 'tiny', v)}" for v in ("bf16", "q4-noise"))
    run = subprocess.run(
        [
            *SNAKEMAKE,
            "--directory",
            str(tmp_path),
            "--configfile",
            str(tmp_path / "config.yaml"),
            "-n",
            "-p",
            noise,
        ],
        text=True,
        capture_output=True,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert f"input: {bf16}\n    output: {noise}" in run.stdout
