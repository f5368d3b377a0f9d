# Config helpers and input functions; no rules here.
import os
import re
from pathlib import Path

from compbias.stats.tables import TABLES  # a light module: no statistics imported
from compbias.config import validate, model_source
from compbias.keys import checkpoint_key
from compbias.data.bbq import CATEGORIES as BBQ_FILES
from compbias.compress.checkpoints import build_spec, variant_bits, variant_kind
from compbias.settings import study, variant_dtype
from compbias.inference.jobs import group_seeds
from compbias.inference.memory import build_mb, job_mb

# the schema ships with the package (compbias/schemas; workflow/schemas links to it)
validate(config)

# Before the DAG is built (docs/resuming.md: "Resuming", "What triggers a rerun"): every input is checked,
# so a bad one stops the run before any job (and before Snakemake deletes any output); locks of
# killed runs are cleared; outputs marked incomplete by a killed run are verified and kept, or
# deleted to be rebuilt. Job subprocesses (run: rules, cluster jobs) skip all of it.
from compbias.checks import preflight

PREFLIGHT = preflight.before_dag(config, main=workflow.is_main_process)


onstart:
    # after Snakemake took its lock, before the first job: own the lock, check hub models
    preflight.on_start(config)


# Job processes inherit these: importing compbias loads the chosen optimized BLAS before MLX,
# and keeps an installed PyTorch from being imported (compbias.inference.runtime.keep_torch_out;
# COMPBIAS_NO_TORCH=0 in the environment turns that off).
os.environ.update(COMPBIAS_BLAS=config["runtime"]["blas"])
os.environ.setdefault("COMPBIAS_NO_TORCH", "1")

MODELS = list(config["models"])
VARIANTS = list(config["variants"])
BASELINE = config["baseline"]
SEEDS = [int(s) for s in config["seeds"]]
PLACEBO_SEEDS = [int(s) for s in config["placebo_seeds"]]
SHARDS = list(range(int(config["shards"])))


wildcard_constraints:
    model="|".join(map(re.escape, MODELS)),
    variant="|".join(map(re.escape, VARIANTS)),
    seed=r"\d+",
    shard=r"\d+",
    group=r"fixed|seed=\d+",
    ckey=r"[0-9a-f]{12}",


def variant_seeds(variant):
    """Seeds answered for a variant: the study seeds, plus placebo seeds at the baseline."""
    return SEEDS + (PLACEBO_SEEDS if variant == BASELINE else [])


def score_group(seed):
    """Scores are shared by all seeds with fixed option order, per seed when shuffled."""
    return "fixed" if config["decoding"]["option_order"] == "fixed" else f"seed={seed}"


STUDY = study(config)


def compression_priority(wildcards):
    """Scheduler priority from a variant's compression, for its scores jobs among those that
    answer as many seeds (:func:`scores_priority`) and its virtual_seeds jobs
    (:func:`virtual_seeds_priority`): the more compressed the variant, the higher. A degraded model answers less often with a bare letter, so its scores jobs continue
    more answers and run longest (in the full demo on an H200 q3's prompt pass took
    81 s, q4's 43-45 s), and they set the wall time when they start last, as they did when the
    scheduler chose by input size, the largest checkpoints first. Quantized: 16 - bits; pruned:
    10 x sparsity; a perturbation control: its ``like`` variant's; others 0."""
    spec = config["variants"][wildcards.variant]
    if "perturb" in spec:
        spec = config["variants"][spec["perturb"]["like"]]
    if "prune" in spec:
        return 10 * float(spec["prune"]["sparsity"])
    return 16 - variant_bits(spec)


def virtual_seeds_priority(wildcards):
    """Scheduler priority of a virtual_seeds job: its variant's compression (:func:`compression_priority`)
    plus one, so that it goes before the answers jobs (priority 0) that become ready with it. Both
    feed the analysis, but an answers job whose seeds the scores job answered takes a second or
    two, a virtual_seeds job several: in the full demo on an H200 the baseline's virtual_seeds job,
    then of priority 0, waited behind answers jobs and ran last, 16 s after the last scores job."""
    return 1 + compression_priority(wildcards)


def scores_priority(wildcards):
    """Scheduler priority of a scores job: first by the seeds it answers (the baseline's placebo
    seeds double its draws: in the 7B-shaped study on an H200, whose random model continues every
    answer, the bf16 job ran longest, 141 s against 108-128 s, and set the wall time when it ran
    last), then by compression (:func:`compression_priority`)."""
    served = group_seeds(wildcards.group, variant_seeds(wildcards.variant))  # as the scores job
    return 20 * len(served) + compression_priority(wildcards)


def gpu_mem(kind):
    """Resource function: the device memory (MiB) a model job of ``kind`` declares
    (compbias.inference.memory.job_mb; <TBD> until its checkpoint exists)."""

    def mem(wildcards, input):
        seed = int(wildcards.seed) if kind == "answers" else None
        scores = input.scores if kind == "answers" else None
        return job_mb(kind, input.checkpoint, STUDY, scores, seed)

    return mem


def checkpoint_gpu_mem(wildcards, input):
    """Device memory (MiB) of a checkpoint build (compbias.inference.memory.build_mb); a source
    the build reads itself (hub repo) is sized by cluster.checkpoint_mem_mb."""
    if not input.source:
        return config["cluster"]["checkpoint_mem_mb"]
    return build_mb(input.source[0], build_spec(config["variants"], wildcards.variant))


def checkpoint_dir(model, variant):
    """results/checkpoints/{model}/{variant}/{key}: the key hashes the model source and the build
    spec (compbias.keys), so a changed spec builds beside the old checkpoint."""
    return f"results/checkpoints/{model}/{variant}/{checkpoint_key(config, model, variant)}"


def answer_shards():
    return [
        f"results/answers/{m}/{v}/seed={s}/shard={k}.parquet"
        for m in MODELS
        for v in VARIANTS
        for s in variant_seeds(v)
        for k in SHARDS
    ]


def score_shards(model, variant, shard):
    """The scores shard ``shard`` of (model, variant) for every study seed's scores group (one
    group, ``fixed``, unless option_order is shuffled): what virtual seed sets draw from."""
    groups = sorted({score_group(s) for s in SEEDS})
    return [f"results/scores/{model}/{variant}/{g}/shard={shard}.parquet" for g in groups]


def virtual_seed_tables():
    """One table per model x variant x shard: each starts once its own scores shard is there,
    so the last one waits for one shard, not for all."""
    return expand(
        "results/virtual_seeds/{model}/{variant}/shard={shard}.parquet",
        model=MODELS,
        variant=VARIANTS,
        shard=SHARDS,
    )


def bbq_files():
    """The upstream BBQ files the items table reads (none for a Hugging Face copy)."""
    ds = config["dataset"]
    if ds["source"] != "jsonl":
        return []
    return [ancient(str(Path(ds["path"]) / f"{BBQ_FILES[c]}.jsonl")) for c in ds["categories"]]


def checkpoint_source(wildcards):
    """Input of a checkpoint build: the base variant's checkpoint, a converted GGUF, or nothing
    (a hub repo or local directory is read by the build itself)."""
    spec = config["variants"][wildcards.variant]
    if variant_kind(spec) in ("checkpoint", "gguf"):
        return []
    if "base" in spec:
        return [checkpoint_dir(wildcards.model, spec["base"])]
    # prune and perturb read a local checkpoint: the baseline's
    if variant_kind(spec) in ("prune", "perturb"):
        return [checkpoint_dir(wildcards.model, BASELINE)]
    kind, location = model_source(config["models"][wildcards.model])
    if kind == "gguf":
        return [f"resources/sources/{wildcards.model}"]
    # a local model directory is identified by its path (docs/resuming.md, "What triggers a rerun")
    return [ancient(location)] if kind == "path" else []


def checkpoint_source_location(wildcards, input):
    if input.source:
        return str(input.source[0])
    return model_source(config["models"][wildcards.model])[1]


PERPLEXITY = config["perplexity"]["enabled"]
ANALYSIS_TABLES = [t for t in TABLES if PERPLEXITY or t != "perplexity"]


def perplexity_tables():
    if not PERPLEXITY:
        return []
    return expand("results/perplexity/{model}/{variant}.parquet", model=MODELS, variant=VARIANTS)


# results/figures/{figure}.png and .pdf (rule figures, report.smk)
FIGURES = [
    "dose_response",
    "transitions",
    "perplexity_vs_bias",
    "category_heatmap",
    "pruning",
]


def report_table_source(table):
    """The Parquet table beside the CSV that report_tables copies (results/rates.csv for rates)."""
    return "results/rates.parquet" if table == "rates" else f"results/analysis/{table}.parquet"


def maybe_temp(path):
    return temp(path) if config["delete_checkpoints"] else path


def all_outputs():
    # The shards are targets themselves so that a deleted shard is rebuilt (and everything
    # downstream of it), rather than skipped as a no-longer-needed intermediate.
    return (
        answer_shards()
        + [
            "results/items.parquet",
            "results/answers.parquet",
            "results/variants.parquet",
            "results/rates.parquet",
        ]
        + expand("results/analysis/{table}.parquet", table=ANALYSIS_TABLES)
        + expand("results/figures/{figure}.{ext}", figure=FIGURES, ext=("png", "pdf"))
        + ["results/summary.md"]
    )
