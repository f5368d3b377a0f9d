import subprocess
import sys

import pytest
import yaml
from conftest import ROOT

from compbias.config import ConfigError, validate


def base():
    cfg = yaml.safe_load((ROOT / ".test" / "config.yaml").read_text().replace(".test/", str(ROOT / ".test") + "/"))
    cfg["models"]["tiny"] = {"path": str(ROOT / ".test")}  # any existing folder: nothing is loaded
    return cfg


def test_defaults_are_filled():
    cfg = validate({k: v for k, v in base().items() if k not in ("decoding", "runtime")})
    assert cfg["decoding"] == {
        "temperature": 0.3,
        "max_tokens": 5,
        "parser": "strict",
        "option_order": "fixed",
        "rng": "gumbel",
    }
    assert cfg["runtime"]["blas"] == "auto"


@pytest.mark.parametrize(
    "patch,message",
    [
        ({"shards": 0}, "config key 'shards': 0 is less than the minimum of 1"),
        ({"baseline": "fp32"}, "config key 'baseline': 'fp32' is not one of variants"),
        ({"decoding": {"temperature": -1}}, "config key 'decoding.temperature'"),
        ({"decoding": {"parser": "fuzzy"}}, "config key 'decoding.parser'"),
        ({"variants": {"q5": {"quantize": {"bits": 7}}}}, "config key 'variants.q5.quantize.bits'"),
        ({"seeds": [1, 1]}, "config key 'seeds'"),
        ({"placebo_seeds": [42]}, "config key 'placebo_seeds': [42] also in 'seeds'"),
        (
            {"dataset": {"source": "jsonl", "path": "/nope", "categories": ["age"]}},
            "config key 'dataset.path': directory '/nope' does not exist",
        ),
        ({"dataset": {"source": "jsonl", "path": "/", "categories": ["ages"]}}, "config key 'dataset.categories.0'"),
        ({"models": {"m": {"path": "/no/such/model"}}}, "config key 'models.m.path'"),
        (
            {"variants": {"bf16": {}, "w": {"prune": {"method": "wanda", "sparsity": 1.5}}}},
            "config key 'variants.w.prune'",
        ),
        ({"typo_key": 1}, "Additional properties are not allowed ('typo_key'"),
    ],
)
def test_errors_name_the_key(patch, message):
    cfg = base()
    cfg.update(patch)
    with pytest.raises(ConfigError) as err:
        validate(cfg)
    assert message in str(err.value)


def snakemake(*args, cwd=ROOT, env=None):
    return subprocess.run([sys.executable, "-m", "snakemake", *args], cwd=cwd, text=True, capture_output=True, env=env)


@pytest.mark.slow
def test_dry_run_of_the_paper_study_is_offline(tmp_path):
    """`snakemake -n` on config/config.yaml plans 3 x 5 x (5 + placebo) x shards answer jobs
    with no network and no model downloaded."""
    import os

    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_HOME": str(tmp_path / "hf"),
        "no_proxy": "*",
        "https_proxy": "http://127.0.0.1:9",
        "http_proxy": "http://127.0.0.1:9",
    }
    run = snakemake(
        "-n",
        "--directory",
        str(tmp_path),
        "-s",
        str(ROOT / "workflow" / "Snakefile"),
        "--configfile",
        str(ROOT / "config" / "config.yaml"),
        env=env,
    )
    assert run.returncode == 0, run.stderr + run.stdout
    cfg = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    study = 3 * 5 * 5 * cfg["shards"]
    placebo = 3 * len(cfg["placebo_seeds"]) * cfg["shards"]
    jobs = dict(
        line.split()[:2] for line in run.stdout.splitlines() if len(line.split()) == 2 and line.split()[1].isdigit()
    )
    assert int(jobs["answers"]) == study + placebo
    assert int(jobs["checkpoint"]) == 15
    assert int(jobs["scores"]) == 15 * cfg["shards"]  # one forward pass shared by all seeds
    # scores jobs go by the seeds they answer (bf16 with the placebo seeds first), then compression
    priority, rule, variant = {}, None, None
    for line in run.stdout.splitlines():
        if line.startswith(("rule ", "localrule ")):
            rule, variant = line.split()[1].rstrip(":"), None
        elif rule == "scores" and "wildcards:" in line:
            variant = line.split("variant=")[1].split(",")[0]
        elif rule == "scores" and line.strip().startswith("priority:"):
            priority.setdefault(variant, set()).add(float(line.split()[1]))
    assert min(priority["bf16"]) > max(priority["q3"]) > max(priority["q4"]) > max(priority["q8"])


def test_invalid_config_stops_before_any_job(tmp_path):
    cfg = base()
    cfg["decoding"] = {"temperature": "hot"}
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(cfg))
    run = snakemake(
        "-n", "--directory", str(tmp_path), "-s", str(ROOT / "workflow" / "Snakefile"), "--configfile", str(path)
    )
    assert run.returncode != 0
    assert "config key 'decoding.temperature': 'hot' is not of type 'number'" in run.stderr + run.stdout
