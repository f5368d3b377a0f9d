#!/usr/bin/env bash
# Answering throughput of a 7B-shaped model (random weights, Mistral-7B dimensions) on a GPU,
# bf16 and q4 (dequantized at load, as the workflow runs it; (a) also with native q4 kernels).
#   bash benchmarks/gpu_7b.sh TOKENIZER_DIR BBQ_DIR [WORK_DIR] [ITEMS]
# Runs python -m benchmarks.random_model and python -m benchmarks.answering with the repository
# root on PYTHONPATH, so it works from any directory (relative paths are taken from the caller's).
set -euo pipefail
tok=$1 data=$2 work=${3:-/tmp/compbias-7b} items=${4:-2000}
root=$(cd "$(dirname "$0")/.." && pwd) py=${PYTHON:-python}
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}"
"$py" -m benchmarks.random_model "$work" --tokenizer "$tok" --data "$data" --shape mistral-7b --quantize 4
"$py" -m benchmarks.answering "$work/bf16" --items "$items" --ref-items 40 --data "$data"
"$py" -m benchmarks.answering "$work/q4" --items "$items" --ref-items 40 --native-ref-items 40 --data "$data"
