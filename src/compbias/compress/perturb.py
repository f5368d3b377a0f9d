"""Perturbation control variants: Gaussian noise as large as a quantizer's error.

A variant ``{perturb: {like: q4, seed: 0}}`` starts from the baseline checkpoint and adds, to
every weight matrix that the ``like`` variant's quantization would touch, i.i.d. Gaussian noise
with that quantization's per-matrix RMS error. Which matrices, and their round-trip error, come
from mlx_lm's own ``quantize_model`` applied to the baseline weights (its predicate: modules with
``to_quantized`` whose weight's last dimension divides by the group size, embeddings included,
plus any ``quant_predicate`` of the model), so the noise lands exactly where the quantizer's
error does. Its bias emergence is what "any change of this size" does; the quantizer's excess
over it is what is specific to quantization.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten, tree_unflatten

from compbias.compress.checkpoints import save_derived
from compbias.io import atomic_dir
from compbias.settings import quantize, schema_defaults

#: Rescaling passes that make the stored (rounded) perturbation's RMS equal the target.
_CALIBRATION_STEPS = 3


@dataclass(frozen=True)
class PerturbSpec:
    """A perturbation control: the quantization it mimics (``like``, bits, group_size, mode) and its noise seed."""

    like: str
    bits: int
    group_size: int | None = None  # None: mlx_lm's default for the mode
    mode: str = "affine"
    seed: int = 0


def _fail(variant: str, msg: str) -> ValueError:
    return ValueError(f"variant {variant!r}: {msg}")


def validate_spec(
    variant_name: str,
    spec: Mapping[str, Any],
    variants: Mapping[str, Mapping[str, Any]] | None = None,
    baseline: str | None = None,
) -> PerturbSpec:
    """Check a variant's ``perturb`` settings and return a :class:`PerturbSpec`.

    ``spec`` holds ``like`` (another variant's name) and ``seed`` (integer, default 0). The
    quantization is read from ``variants[like]["quantize"]``, or from ``spec["quantize"]`` when
    the spec was already resolved (:func:`compbias.compress.checkpoints.build_spec`). Raises ValueError
    naming the variant when ``like`` is missing, names itself or no variant, names a variant
    without ``quantize`` or one built on a variant other than ``baseline`` (its error would not
    be the quantizer's error on the baseline weights), or when ``seed`` is not an integer.
    """
    like = spec.get("like")
    if not isinstance(like, str) or not like:
        raise _fail(variant_name, f"perturb.like must name a quantized variant, got {like!r}")
    if like == variant_name:
        raise _fail(variant_name, "perturb.like cannot name the variant itself")
    seed = {**schema_defaults("perturb"), **spec}["seed"]
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise _fail(variant_name, f"perturb.seed must be an integer, got {seed!r}")
    q = spec.get("quantize")
    if q is None:
        if variants is None or like not in variants:
            known = f"; expected one of {list(variants)}" if variants is not None else ""
            raise _fail(variant_name, f"perturb.like {like!r} is not a variant{known}")
        target = variants[like]
        q = target.get("quantize")
        if not q:
            raise _fail(variant_name, f"perturb.like {like!r} is not a quantization (it has no quantize spec)")
        base = target.get("base")
        if base is not None and base != baseline:
            raise _fail(
                variant_name,
                f"perturb.like {like!r} is built on {base!r}, not on the baseline "
                f"{baseline!r}; its error is not the quantizer's on the baseline weights",
            )
    q = quantize(q)
    return PerturbSpec(like, q.bits, q.group_size, q.mode, int(seed))


def noise_key(seed: int, name: str) -> mx.array:
    """MLX PRNG key of the noise of parameter ``name``: from SHA-256 of (seed, name), stable across runs."""
    digest = hashlib.sha256(f"{seed}\x00{name}".encode()).digest()
    return mx.random.key(int.from_bytes(digest[:8], "little"))


def _rms(x: mx.array) -> float:
    return float(mx.sqrt(mx.mean(mx.square(x))).item())


def quantized_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """(path, module) of every quantized module (one with ``scales``) of ``model``, in path order."""
    return sorted(
        ((p, m) for p, m in model.named_modules() if p and "scales" in m and hasattr(m, "bits")),
        key=lambda pm: pm[0],
    )


def dequantized(module: nn.Module) -> mx.array:
    """The weight a quantized module computes with: ``mx.dequantize`` of its packed weight."""
    return mx.dequantize(
        module.weight, module.scales, module.get("biases"), module.group_size, module.bits, module.mode
    )


def perturb_weight(weight: mx.array, target_rms: float, key: mx.array) -> tuple[mx.array, float]:
    """``weight + s * N(0, 1)`` in ``weight``'s dtype, with ``s`` set so that the RMS of the stored
    change (after rounding to that dtype) is ``target_rms``; returns it and that achieved RMS.

    ``s`` starts at ``target_rms`` and is rescaled by target / achieved a few times, which removes
    both the sample fluctuation of the noise's RMS and the rounding of the cast (bf16 rounding
    is ~0.1-0.4% of |W|, comparable to a q8 error).
    """
    w = weight.astype(mx.float32)
    noise = mx.random.normal(weight.shape, dtype=mx.float32, key=key)
    scale, new, got = target_rms, weight, 0.0
    for _ in range(_CALIBRATION_STEPS if target_rms > 0 else 0):
        new = (w + scale * noise).astype(weight.dtype)
        mx.eval(new)
        got = _rms(new.astype(mx.float32) - w)
        if got == 0:
            break
        scale *= target_rms / got
    return new, got


def perturb_model(
    model: nn.Module, probe: nn.Module, config: Mapping[str, Any], spec: PerturbSpec, *, variant_name: str = ""
) -> dict[str, Any]:
    """Perturb ``model`` in place like ``spec``'s quantization and return the statistics.

    ``probe`` is a second copy of the same (unquantized) model, quantized here with
    ``mlx_lm.utils.quantize_model`` (bits, group_size, mode of ``spec``) to find the matrices it
    touches and their dequantized values; it is consumed. Per matrix W (float32): rms = RMS of
    dequantize(quantize(W)) - W; W is replaced by :func:`perturb_weight` with noise keyed by
    (``spec.seed``, parameter name). Returns ``rms_error`` (name -> the quantizer's rms),
    ``perturbation_rms`` (name -> achieved RMS of the stored change), ``n_perturbed`` (matrices),
    ``perturbed_params`` (their elements), ``rms_error_overall`` (the quantizer's RMS over all of
    them), ``rms_max_rel_diff`` (largest |achieved / target - 1|) and ``dtype`` (of the matrices).
    Raises ValueError when nothing would be quantized.
    """
    from mlx_lm.utils import quantize_model

    quantize_model(probe, dict(config), spec.group_size, spec.bits, mode=spec.mode)
    weights = dict(tree_flatten(model.parameters()))
    rms_error: dict[str, float] = {}
    achieved: dict[str, float] = {}
    dtypes: set[str] = set()
    n_elements, sq_error = 0, 0.0
    for path, qmod in quantized_modules(probe):
        name = f"{path}.weight"
        w = weights.pop(name)
        target = _rms(dequantized(qmod).astype(mx.float32) - w.astype(mx.float32))
        new, got = perturb_weight(w, target, noise_key(spec.seed, name))
        model.update(tree_unflatten([(name, new)]))
        for k in ("weight", "scales", "biases"):  # free the probe's copy
            if k in qmod:
                setattr(qmod, k, mx.array([]))
        rms_error[name], achieved[name] = target, got
        dtypes.add(str(w.dtype).removeprefix("mlx.core."))
        n_elements += w.size
        sq_error += target**2 * w.size
        del w
    if not rms_error:
        raise _fail(variant_name, f"no weight matrix would be quantized with group_size {spec.group_size}")
    rel = [abs(achieved[k] / t - 1) for k, t in rms_error.items() if t > 0]
    return {
        "rms_error": rms_error,
        "perturbation_rms": achieved,
        "n_perturbed": len(rms_error),
        "perturbed_params": n_elements,
        "rms_error_overall": (sq_error / n_elements) ** 0.5,
        "rms_max_rel_diff": max(rel, default=0.0),
        "dtype": ",".join(sorted(dtypes)),
    }


def perturb_checkpoint(
    src_dir: str | Path,
    out_dir: str | Path,
    variant_name: str,
    spec: PerturbSpec | Mapping[str, Any],
    *,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Write the perturbation control of the MLX checkpoint ``src_dir`` (the baseline) to ``out_dir``.

    ``spec`` is a :class:`PerturbSpec` or a resolved ``perturb`` mapping
    (:func:`compbias.compress.checkpoints.build_spec`). The checkpoint keeps the baseline's dtype and
    config (weights via ``mlx_lm.utils.save_model``, config via ``save_config``, tokenizer and
    other files copied) and appears only when complete (:func:`compbias.io.atomic_dir`).
    Returns the manifest fields: like, like_quantize (bits, group_size, mode), perturb_seed and
    the :func:`perturb_model` statistics.
    """
    from mlx_lm.utils import load_model

    t0 = time.perf_counter()
    if not isinstance(spec, PerturbSpec):
        spec = validate_spec(variant_name, spec)
    src, out = Path(src_dir), Path(out_dir)
    say = log or (lambda _msg: None)
    model, config = load_model(src, lazy=True)
    if config.get("quantization") or config.get("quantization_config"):
        raise _fail(variant_name, f"{src} is quantized; a perturbation control needs an unquantized baseline")
    probe, _ = load_model(src, lazy=True)
    say(f"perturbing {src} like {spec.like} ({spec.bits}-bit, group {spec.group_size}, {spec.mode}), seed {spec.seed}")
    stats = perturb_model(model, probe, config, spec, variant_name=variant_name)
    del probe
    manifest: dict[str, Any] = {
        "variant": variant_name,
        "source": str(src),
        "like": spec.like,
        "like_quantize": {"bits": spec.bits, "group_size": spec.group_size, "mode": spec.mode},
        "perturb_seed": spec.seed,
        **stats,
    }
    with atomic_dir(out) as tmp:
        save_derived(tmp, model, config, src)
    manifest["seconds"] = round(time.perf_counter() - t0, 3)
    say(
        f"wrote {out}: {stats['n_perturbed']} matrices, overall rms {manifest['rms_error_overall']:.3g} "
        f"in {manifest['seconds']} s"
    )
    return manifest
