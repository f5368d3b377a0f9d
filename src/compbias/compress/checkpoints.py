"""Checkpoints per (model, variant), built with mlx_lm's own convert/quantize API."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from compbias.io import atomic_dir, write_json
from compbias.settings import quantize, variant_dtype

#: The one manifest of a checkpoint: how it was built (model, variant, kind, source, bits, ...),
#: its size, and for a pruned checkpoint (or one built from it) a ``pruning`` section.
MANIFEST = "compbias_manifest.json"
#: The fields of a base checkpoint's ``pruning`` section that a checkpoint built from it keeps.
PRUNE_FIELDS = ("method", "target_sparsity", "sparsity", "zeroed", "prunable")
#: The ``pruning`` section's fields, which manifests written before it held at the top level.
_LEGACY_PRUNING = (*PRUNE_FIELDS, "layer_sparsity", "granularity", "mask_seed", "calibration")


def read_manifest(path: str | Path) -> dict[str, Any]:
    """The manifest of the checkpoint directory ``path`` (ValueError when it is not JSON); a
    manifest from before the ``pruning`` section has its top-level pruning fields moved there."""
    m = json.loads((Path(path) / MANIFEST).read_text())
    if "pruning" not in m and "method" in m:
        m["pruning"] = {k: m.pop(k) for k in _LEGACY_PRUNING if k in m}
    return m


def variant_kind(spec: Mapping[str, Any]) -> str:
    """The kind of a variant spec: quantize, prune, perturb, checkpoint, gguf or dtype."""
    for kind in ("quantize", "prune", "perturb", "checkpoint", "gguf"):
        if kind in spec:
            return kind
    return "dtype"


def variant_bits(spec: Mapping[str, Any]) -> float:
    """Nominal bits per weight of a variant (16 unless quantized; a perturbation control of a
    quantization is not quantized: 16)."""
    q = spec.get("quantize")
    return float(q["bits"]) if q else 16.0


def build_spec(variants: Mapping[str, Mapping[str, Any]], name: str) -> dict[str, Any]:
    """The build spec of variant ``name``: its config spec, with a perturb variant's ``perturb``
    completed by the ``quantize`` spec of its ``like`` variant (so the build needs only its own
    spec, and reruns when that quantization changes); other variants' specs unchanged."""
    spec = dict(variants[name])
    if "perturb" in spec:
        spec["perturb"] = {**spec["perturb"], "quantize": dict(variants[spec["perturb"]["like"]]["quantize"])}
    return spec


def checkpoint_stats(path: str | Path) -> dict[str, Any]:
    """Size on disk of the weight files and parameter count of a checkpoint."""
    from mlx_lm.utils import get_total_parameters, load_model

    path = Path(path)
    size = sum(f.resolve().stat().st_size for f in path.glob("*.safetensors"))
    model, config = load_model(path, lazy=True)
    q = config.get("quantization") or {}
    return {
        "size_bytes": size,
        "n_params": int(get_total_parameters(model)),
        "stored_bits": q.get("bits"),
        "stored_group_size": q.get("group_size"),
    }


#: Files of a source checkpoint that a derived one (pruned, perturbed) does not copy: its
#: weights and config are written anew, and manifests describe the source (prune_manifest.json:
#: the second manifest that pruned checkpoints had before the ``pruning`` section).
DERIVED_SKIP = ("*.safetensors", "*.safetensors.index.json", "config.json", "compbias_*.json", "prune_manifest.json")


def save_derived(tmp: Path, model, config: Mapping[str, Any], src: Path) -> None:
    """Write ``model`` (mlx_lm's ``save_model``) and ``config`` into the build directory ``tmp``,
    with the source checkpoint's other files (tokenizer, generation config) copied beside them."""
    import fnmatch
    import shutil

    from mlx_lm.utils import save_config, save_model

    save_model(tmp, model, donate_model=True)
    save_config(dict(config), config_path=tmp / "config.json")
    for f in sorted(Path(src).iterdir()):
        if f.is_file() and not any(fnmatch.fnmatch(f.name, pat) for pat in DERIVED_SKIP):
            shutil.copy2(f, tmp / f.name)


def checkpoint_dir(source: str) -> Path:
    """The directory of a prebuilt checkpoint: ``source`` itself when it exists locally, otherwise
    the snapshot of the hub repo ``source`` with the files mlx_lm loads (its
    ``DEFAULT_ALLOW_PATTERNS``), downloaded with ``huggingface_hub.snapshot_download`` unless cached."""
    path = Path(source)
    if path.exists():
        return path
    from huggingface_hub import snapshot_download
    from mlx_lm.utils import DEFAULT_ALLOW_PATTERNS

    return Path(snapshot_download(source, allow_patterns=DEFAULT_ALLOW_PATTERNS))


def link_checkpoint(source: str, out: Path) -> None:
    """Make ``out`` a directory of links to a prebuilt MLX checkpoint (a directory or hub repo)."""
    src = checkpoint_dir(source)
    with atomic_dir(out) as tmp:
        tmp.mkdir()
        for f in src.iterdir():
            if f.is_file():
                (tmp / f.name).symlink_to(f.resolve())


def build_checkpoint(source: str, out: str | Path, spec: Mapping[str, Any], model: str, variant: str) -> dict[str, Any]:
    """Build the checkpoint of ``variant`` from ``source`` (hub repo id, MLX/HF directory, or the
    checkpoint of the variant it is based on) into ``out`` and write its manifest.

    ``out`` appears only when complete: builds go to a temporary sibling that is renamed.
    """
    from compbias.inference.runtime import keep_torch_out

    keep_torch_out()
    from mlx_lm import convert

    out = Path(out)
    kind = variant_kind(spec)
    start = time.perf_counter()
    manifest: dict[str, Any] = {
        "model": model,
        "variant": variant,
        "kind": kind,
        "source": str(source),
        "bits": variant_bits(spec),
    }
    if kind == "checkpoint":
        link_checkpoint(spec["checkpoint"], out)
        manifest["source"] = spec["checkpoint"]
    elif kind == "gguf":
        from compbias.compress.gguf import convert_gguf, resolve_gguf

        manifest.update(convert_gguf(resolve_gguf(spec["gguf"]), out, variant_dtype(spec)))
    elif kind == "prune":
        from compbias.compress.pruning import prune_checkpoint

        manifest["pruning"] = prune_checkpoint(source, out, variant, spec["prune"])
    elif kind == "perturb":  # spec from build_spec: carries the like quantization
        from compbias.compress.perturb import perturb_checkpoint

        manifest.update(perturb_checkpoint(source, out, variant, spec["perturb"]))
    else:
        q = quantize(spec["quantize"]) if spec.get("quantize") else None
        with atomic_dir(out) as tmp:
            kw = {"quantize": True, "q_bits": q.bits, "q_group_size": q.group_size, "q_mode": q.mode} if q else {}
            convert(str(source), str(tmp), dtype=variant_dtype(spec), **kw)
        manifest.update(
            dtype=variant_dtype(spec), group_size=q and q.group_size, mode=spec["quantize"].get("mode") if q else None
        )
    if kind not in ("prune", "perturb") and (Path(source) / MANIFEST).exists():
        base = read_manifest(source)  # e.g. wanda-50 then q4 keeps its sparsity
        if base.get("pruning"):
            manifest["pruning"] = {k: base["pruning"][k] for k in PRUNE_FIELDS if k in base["pruning"]}
        manifest["base_variant"] = base["variant"]
    manifest.update(checkpoint_stats(out))
    manifest["build_seconds"] = round(time.perf_counter() - start, 3)
    write_json(manifest, out / MANIFEST)
    return manifest
