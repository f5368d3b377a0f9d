#!/usr/bin/env bash
# The study of one 7B-shaped model family, end to end with snakemake on one GPU: a random-weight
# llama with Mistral-7B's dimensions (benchmarks/random_model.py: the tokenizer of TOKENIZER_DIR,
# its LM head tilted towards the letters) x bf16/q8/q6/q4/q3 (built by the workflow) x every
# ambiguous BBQ item of BBQ_DIR x 5 seeds + 5 placebo seeds, with the README's GPU command.
#   bash benchmarks/gpu_study.sh TOKENIZER_DIR BBQ_DIR [WORK_DIR] [CORES] [GPU_MEM_MB]
# EXTRA (environment) is added to the snakemake command, e.g. EXTRA="--set-resources
# scores:gpu_mem_mb=60000" to let two scores jobs share the card (their batches then halve).
# Prints RESULT wall_s=... model_compute_s=... (the model jobs' summed run time, from their
# benchmark files) and the rest, the share of the wall time during which a prompt pass ran
# (benchmarks.prompt_passes), then benchmarks.rule_times' table.
set -euo pipefail
tok=$1 data=$(cd "$2" && pwd) work=${3:-/tmp/compbias-study} cores=${4:-12} mem=${5:-135000}
root=$(cd "$(dirname "$0")/.." && pwd) py=${PYTHON:-python}
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}"
mkdir -p "$work"
[ -f "$work/model/bf16/config.json" ] || "$py" -m benchmarks.random_model "$work/model" --tokenizer "$tok" \
    --data "$data" --shape mistral-7b --quantize
"$py" - "$root/config/config.yaml" "$work/study.yaml" "$work/model/bf16" "$data" <<'EOF'
import sys, yaml
config = yaml.safe_load(open(sys.argv[1]))
# offline: the demo's perplexity corpus (the paper config's wikitext needs the hub)
config["perplexity"] = yaml.safe_load(open(sys.argv[1].replace("config.yaml", "demo.yaml")))["perplexity"]
config["models"] = {"mistral-7b-shaped": sys.argv[3]}
config["dataset"] = {**config["dataset"], "source": "jsonl", "path": sys.argv[4]}
config["shards"] = 1
yaml.safe_dump(config, open(sys.argv[2], "w"))
EOF
start=$(date +%s)
(cd "$root" && snakemake all --cores "$cores" --resources gpu_mem_mb="$mem" --scheduler greedy \
    --set-threads answers=1 scores=1 perplexity=1 checkpoint=1 virtual_seeds=2 ${EXTRA:-} \
    --configfile "$work/study.yaml" --directory "$work/run" --snakefile workflow/Snakefile)
wall=$(($(date +%s) - start))
"$py" - "$work/run/results/benchmarks" "$wall" <<'EOF'
import sys
from pathlib import Path
import polars as pl
model_rules = ("scores", "answers", "perplexity", "checkpoint")
total = {}
for f in Path(sys.argv[1]).rglob("*.tsv"):
    rule = f.relative_to(sys.argv[1]).parts[0]
    total[rule] = total.get(rule, 0.0) + float(pl.read_csv(f, separator="\t")["s"][0])
wall = float(sys.argv[2])
model = sum(v for k, v in total.items() if k in model_rules)
print("per rule (summed s):", {k: round(v, 1) for k, v in sorted(total.items())})
print(f"RESULT wall_s={wall:.0f} model_jobs_s={model:.0f} scores_s={total.get('scores', 0):.0f} "
      f"other_jobs_s={sum(total.values()) - model:.0f}")
EOF
"$py" -m benchmarks.prompt_passes "$work/run/logs" "$wall" || true
"$py" -m benchmarks.rule_times "$work/run/results" || true
