"""Study configuration: schema validation with messages that name the key, and helpers."""

from __future__ import annotations

from collections.abc import Mapping
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

SCHEMA = "config.schema.yaml"
"""The study config's JSON schema, shipped as package data in ``compbias/schemas/``."""


@cache
def _schema_text(name: str) -> str:
    return resources.files("compbias").joinpath("schemas", name).read_text(encoding="utf-8")


def load_schema(path: str | Path | None = None) -> dict[str, Any]:
    """The config schema: the packaged one, or the YAML file at ``path``."""
    return yaml.safe_load(Path(path).read_text() if path is not None else _schema_text(SCHEMA))


class ConfigError(ValueError):
    """An invalid study configuration; the message names the key."""


def _key(path) -> str:
    return ".".join(str(p) for p in path) or "<top level>"


def _defaults(schema: Mapping[str, Any], obj: Any) -> Any:
    if not isinstance(obj, dict):
        return obj
    for name, sub in schema.get("properties", {}).items():
        if name not in obj and "default" in sub:
            obj[name] = _copy(sub["default"])
        if name in obj and isinstance(sub, Mapping):
            _defaults(sub, obj[name])
    return obj


def _copy(v: Any) -> Any:
    return yaml.safe_load(yaml.safe_dump(v))


def load_yaml(path: str | Path) -> Any:
    """Parse a YAML file; a syntax error raises ConfigError naming the file, line and column."""
    path = Path(path)
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        problem = getattr(exc, "problem", None) or str(exc)
        context = getattr(exc, "context", None)
        raise ConfigError(f"{where}: invalid YAML: {problem}" + (f" ({context})" if context else "")) from exc


def _resolve(schema: Mapping[str, Any], root: Mapping[str, Any]) -> Mapping[str, Any]:
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/"):
        node: Any = root
        for part in ref[2:].split("/"):
            node = node[part]
        return _resolve(node, root)
    return schema


_TYPES = {
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
}


def _takes_type(schema: Mapping[str, Any], value: Any, root: Mapping[str, Any]) -> bool:
    """Whether ``schema`` allows values of ``value``'s type (its other constraints aside)."""
    schema = _resolve(schema, root)
    if "const" in schema:
        return schema["const"] == value and type(schema["const"]) is type(value)
    if "enum" in schema:
        return any(e == value and type(e) is type(value) for e in schema["enum"])
    branches = schema.get("oneOf", []) + schema.get("anyOf", [])
    if branches:
        return any(_takes_type(b, value, root) for b in branches)
    types = schema.get("type")
    types = [types] if isinstance(types, str) else types or []
    return any(_TYPES.get(t, lambda v: False)(value) for t in types)


def coerce(schema: Mapping[str, Any], obj: Any, root: Mapping[str, Any] | None = None) -> Any:
    """Return ``obj`` with strings turned into the number, boolean or null the schema asks for.

    Snakemake's ``--config 'runtime={batch_tokens: 256}'`` reads values inside a mapping as
    strings; a string is replaced by its YAML value only where the schema rejects the string and
    accepts the value, so strings the schema wants (names, paths) are never touched.
    """
    import jsonschema

    root = schema if root is None else root
    schema = _resolve(schema, root)
    if isinstance(obj, str):
        try:
            value = yaml.safe_load(obj)
        except yaml.YAMLError:
            return obj
        if isinstance(value, (bool, int, float)) or value is None:
            check = jsonschema.Draft7Validator({**schema, "definitions": root.get("definitions", {})})
            if not check.is_valid(obj) and _takes_type(schema, value, root):
                return value  # then validated, so that e.g. '8' below a minimum reads "8 is ..."
        return obj
    if isinstance(obj, dict):
        props = schema.get("properties", {})
        extra = schema.get("additionalProperties")
        for key, val in obj.items():
            sub = props.get(key, extra if isinstance(extra, Mapping) else None)
            if sub is None:
                for option in schema.get("oneOf", []) + schema.get("anyOf", []):
                    option = _resolve(option, root)
                    if key in option.get("properties", {}):
                        sub = option["properties"][key]
                        break
            if isinstance(sub, Mapping):
                obj[key] = coerce(sub, val, root)
        return obj
    if isinstance(obj, list) and isinstance(schema.get("items"), Mapping):
        return [coerce(schema["items"], v, root) for v in obj]
    return obj


def validate(config: dict[str, Any], schema_path: str | Path | None = None) -> dict[str, Any]:
    """Validate ``config`` in place against the JSON schema, fill defaults, check the
    cross-key rules and resolve ``dataset.categories: all`` to its list
    (:func:`compbias.data.bbq.resolve_categories`); raise ConfigError naming every bad key.

    Strings where the schema wants a number, boolean or null are coerced first (``coerce``);
    ``schema_path`` defaults to the packaged schema."""
    import jsonschema

    schema = load_schema(schema_path)
    coerce(schema, config)
    validator = jsonschema.Draft7Validator(schema)
    errors = sorted(validator.iter_errors(config), key=lambda e: list(e.absolute_path))
    if errors:
        lines = [f"config key '{_key(e.absolute_path)}': {e.message}" for e in errors]
        raise ConfigError("invalid config:\n  " + "\n  ".join(lines))
    _defaults(schema, config)
    problems = list(_cross_checks(config))
    if problems:
        raise ConfigError("invalid config:\n  " + "\n  ".join(problems))
    _resolve_categories(config)
    return config


def _resolve_categories(config: dict[str, Any]) -> None:
    """``dataset.categories: all`` -> the list of categories it means (in place)."""
    from compbias.data.bbq import ALL_CATEGORIES, BBQRecordError, resolve_categories

    ds = config["dataset"]
    if ds["categories"] == ALL_CATEGORIES:
        try:
            ds["categories"] = resolve_categories(ds)
        except BBQRecordError as exc:
            raise ConfigError(f"invalid config:\n  config key 'dataset.categories': {exc}") from exc


def _cross_checks(config: Mapping[str, Any]):
    variants = config["variants"]
    if config["baseline"] not in variants:
        yield f"config key 'baseline': {config['baseline']!r} is not one of variants {list(variants)}"
    for name, spec in variants.items():
        kinds = [k for k in ("quantize", "checkpoint", "gguf", "prune", "perturb") if k in spec]
        if len(kinds) > 1:
            yield f"config key 'variants.{name}': choose one of {kinds}"
        if "prune" in spec:
            from compbias.compress.pruning import validate_spec

            try:
                validate_spec(name, spec["prune"])
            except ValueError as exc:
                yield f"config key 'variants.{name}.prune': {exc}"
        if "perturb" in spec:
            yield from _perturb_checks(name, spec, variants, config["baseline"])
        base = spec.get("base")
        if base is not None and base not in variants:
            yield f"config key 'variants.{name}.base': unknown variant {base!r}"
        if base == name:
            yield f"config key 'variants.{name}.base': a variant cannot be based on itself"
    overlap = set(config["seeds"]) & set(config["placebo_seeds"])
    if overlap:
        yield f"config key 'placebo_seeds': {sorted(overlap)} also in 'seeds'"
    ds = config["dataset"]
    if ds["source"] == "jsonl" and not ds.get("path"):
        yield "config key 'dataset.path': required when dataset.source is jsonl"
    if ds["source"] == "jsonl" and ds.get("path") and not Path(ds["path"]).is_dir():
        yield f"config key 'dataset.path': directory {ds['path']!r} does not exist"
    from compbias.checks.inputs import local_model_problems

    yield from local_model_problems(config["models"])


def _perturb_checks(name: str, spec: Mapping[str, Any], variants: Mapping[str, Any], baseline: str):
    from compbias.compress.perturb import validate_spec

    key = f"config key 'variants.{name}.perturb"
    try:
        validate_spec(name, spec["perturb"], variants, baseline)
    except ValueError as exc:
        yield f"{key}.like': {exc}" if "perturb.like" in str(exc) else f"{key}': {exc}"
    for other in ("base", "dtype"):
        if other in spec:
            yield (
                f"config key 'variants.{name}.{other}': a perturb variant starts from the baseline "
                "checkpoint and keeps its dtype"
            )


def model_source(spec: str | Mapping[str, Any]) -> tuple[str, str]:
    """(kind, location) of a model source: kind is hf, path or gguf."""
    if isinstance(spec, str):
        return ("path" if Path(spec).expanduser().exists() else "hf"), spec
    for kind in ("gguf", "path", "hf"):
        if kind in spec:
            return kind, spec[kind]
    raise ConfigError(f"model source {spec!r}: needs one of hf, path, gguf")
