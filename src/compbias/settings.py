"""The study configuration as typed, frozen dataclasses, built once from a validated config.

Every default lives in the JSON schema (``compbias/schemas/config.schema.yaml``): a section
is built from its mapping with the schema's defaults applied (:func:`section`), so no default
is written twice. Workflow scripts build the sections their rule needs from the ``snakemake``
object and pass them to the package; the package never reads ``.get(key, default)`` from a
config mapping.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from typing import Any, TypeVar

from compbias.config import load_schema

T = TypeVar("T")


@dataclass(frozen=True)
class Decoding:
    """``decoding``: how answers are sampled and parsed."""

    temperature: float
    max_tokens: int
    parser: str
    option_order: str
    rng: str


@dataclass(frozen=True)
class Prompt:
    """``prompt``: system and user templates; None means the reference study's
    (:data:`compbias.inference.prompts.DEFAULT_SYSTEM` / ``DEFAULT_USER``)."""

    system: str | None = None
    user: str | None = None


@dataclass(frozen=True)
class Runtime:
    """``runtime``: where and how MLX runs."""

    blas: str
    compute_dtype: str
    dequantize: str | bool
    batch_tokens: int | str
    max_batch: int | str
    threads: int
    continuation: str = "auto"


@dataclass(frozen=True)
class Dataset:
    """``dataset``: where BBQ items come from and which of them the study uses."""

    source: str
    categories: tuple[str, ...] | str  # "all" until compbias.config.validate resolves it
    conditions: tuple[str, ...]
    split: str
    revision: str | None
    columns: Mapping[str, str]
    limit_per_category: int | None
    path: str | None = None
    name: str = "heegyu/bbq"  # the hub dataset of source hf; not a schema default, so that
    # jsonl configs (whose dataset section is a rule's params) stay as the user wrote them


@dataclass(frozen=True)
class Perplexity:
    """``perplexity``: the corpus and windows every variant of a model is scored on."""

    enabled: bool
    source: str
    name: str
    n_samples: int
    seq_len: int
    seed: int
    batch_size: int
    path: str | None = None


@dataclass(frozen=True)
class Analysis:
    """``analysis``: bootstrap and virtual-seed settings."""

    n_boot: int
    seed: int
    expected_sets: int


@dataclass(frozen=True)
class Quantize:
    """A variant's ``quantize`` spec (definitions/quantize). ``group_size`` None: mlx_lm's
    default for the mode (``mlx_lm.utils.quantize_model``)."""

    bits: int
    mode: str
    group_size: int | None = None


@dataclass(frozen=True)
class Study:
    """The whole validated study config, typed. ``models`` and ``variants`` stay mappings: the
    build code resolves their specs (:func:`compbias.compress.checkpoints.build_spec`)."""

    models: Mapping[str, Any]
    variants: Mapping[str, Mapping[str, Any]]
    baseline: str
    seeds: tuple[int, ...]
    placebo_seeds: tuple[int, ...]
    shards: int
    decoding: Decoding
    prompt: Prompt
    dataset: Dataset
    runtime: Runtime
    perplexity: Perplexity
    analysis: Analysis
    delete_checkpoints: bool
    cluster: Mapping[str, Any] = field(default_factory=dict)

    def variant_seeds(self, variant: str) -> list[int]:
        """Seeds answered for ``variant``: the study seeds, plus the placebo seeds at the baseline."""
        return list(self.seeds) + (list(self.placebo_seeds) if variant == self.baseline else [])


_SECTIONS = {
    "decoding": Decoding,
    "prompt": Prompt,
    "dataset": Dataset,
    "runtime": Runtime,
    "perplexity": Perplexity,
    "analysis": Analysis,
}


@cache
def schema_defaults(name: str) -> dict[str, Any]:
    """Defaults of the schema node ``name``: a top-level property or a definition."""
    schema = load_schema()
    node = schema["properties"].get(name) or schema["definitions"][name]
    return {k: v["default"] for k, v in node.get("properties", {}).items() if "default" in v}


def section(cls: type[T], name: str, mapping: Mapping[str, Any] | None) -> T:
    """Build dataclass ``cls`` from ``mapping`` (the config node ``name``) with the schema's
    defaults for the keys it lacks; keys that are not fields of ``cls`` are ignored."""
    values = {**copy.deepcopy(schema_defaults(name)), **(mapping or {})}  # cached defaults stay unshared
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items() if k in names}
    return cls(**kwargs)


def coerce_section(cls: type[T], name: str, value: T | Mapping[str, Any] | None) -> T:
    """``value`` itself when it is already a ``cls``, else :func:`section` of the mapping."""
    return value if isinstance(value, cls) else section(cls, name, value)


def study(config: Mapping[str, Any]) -> Study:
    """The typed :class:`Study` of a validated config (:func:`compbias.config.validate`)."""
    sections = {name: section(cls, name, config.get(name)) for name, cls in _SECTIONS.items()}
    return Study(
        models=config["models"],
        variants=config["variants"],
        baseline=config["baseline"],
        seeds=tuple(int(s) for s in config["seeds"]),
        placebo_seeds=tuple(int(s) for s in config["placebo_seeds"]),
        shards=int(config["shards"]),
        delete_checkpoints=bool(config["delete_checkpoints"]),
        cluster={**schema_defaults("cluster"), **config["cluster"]},
        **sections,
    )


def quantize(spec: Mapping[str, Any]) -> Quantize:
    """A variant's ``quantize`` spec with the schema's defaults (mode)."""
    return section(Quantize, "quantize", spec)


def variant_dtype(spec: Mapping[str, Any]) -> str:
    """The dtype of a variant or model spec: its own, else the schema's default."""
    return spec.get("dtype") or schema_defaults("variant")["dtype"]
