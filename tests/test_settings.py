"""The typed study config: sections built once from a validated config, defaults from the schema."""

import dataclasses

import pytest
import yaml
from conftest import ROOT

from compbias import settings
from compbias.config import load_schema, validate
from compbias.inference import prompts
from compbias.inference.jobs import _spec


def _config(**overrides):
    cfg = yaml.safe_load((ROOT / ".test" / "config.yaml").read_text())
    cfg["models"] = {"tiny": "org/tiny"}  # a hub id: validation needs no local model
    cfg.update(overrides)
    return validate(cfg)


def test_every_section_takes_its_defaults_from_the_schema():
    schema = load_schema()
    study = settings.study(_config(decoding={}, runtime={}, analysis={}))
    for name in ("decoding", "runtime", "analysis"):
        defaults = {k: v["default"] for k, v in schema["properties"][name]["properties"].items()}
        assert dataclasses.asdict(getattr(study, name)) == defaults
    assert study.seeds == (42, 123, 456) and isinstance(study.seeds, tuple)


def test_sections_are_frozen_and_keep_what_the_config_says():
    study = settings.study(_config(decoding={"temperature": 0.7, "rng": "reference"}))
    assert (study.decoding.temperature, study.decoding.rng, study.decoding.max_tokens) == (0.7, "reference", 5)
    with pytest.raises(dataclasses.FrozenInstanceError):
        study.decoding.temperature = 1.0


def test_quantize_spec_defaults_come_from_the_schema_definition():
    definition = load_schema()["definitions"]["quantize"]["properties"]
    q = settings.quantize({"bits": 3})
    # no group_size: mlx_lm's default for the mode (64 for affine, 32 for mxfp4, ...)
    assert (q.bits, q.group_size, q.mode) == (3, None, definition["mode"]["default"])
    assert settings.quantize({"bits": 4, "group_size": 32, "mode": "mxfp4"}).group_size == 32
    assert settings.variant_dtype({}) == load_schema()["definitions"]["variant"]["properties"]["dtype"]["default"]


def test_prompt_none_means_the_reference_messages_and_empty_system_stays_empty():
    decoding = settings.section(settings.Decoding, "decoding", {})
    spec = _spec(settings.Prompt(), decoding)
    assert (spec.system, spec.user) == (prompts.DEFAULT_SYSTEM, prompts.DEFAULT_USER)
    assert _spec(settings.Prompt(system=""), decoding).system == ""


def test_a_section_mapping_and_its_dataclass_are_interchangeable():
    ds = settings.section(settings.Dataset, "dataset", {"source": "jsonl", "path": "x", "categories": ["age"]})
    assert settings.coerce_section(settings.Dataset, "dataset", ds) is ds
    assert ds.conditions == ("ambig",) and ds.limit_per_category is None and ds.split == "test"
