"""Benchmark scripts of compbias: not part of the workflow or the test suite.

Run each from the repository root with the project's environment, e.g.
``.venv/bin/python -m benchmarks.answering CHECKPOINT --items 200``:

* :mod:`benchmarks.answering`: answering throughput, the reference generate loop vs
  ``mlx_lm.batch_generate`` vs compbias, on one loaded model;
* :mod:`benchmarks.analysis`: the analysis (merge, rates, transitions, regression) at study scale
  on synthetic answers;
* :mod:`benchmarks.expected_emergence`: one ``virtual_seeds`` job and the expected-emergence table
  at study scale on synthetic scores;
* :mod:`benchmarks.random_model`: random-weight checkpoints of a study model's shape (used by
  ``gpu_7b.sh``);
* :mod:`benchmarks.rule_times`: per-rule wall time of a workflow run from Snakemake's benchmark
  files;
* :mod:`benchmarks.memory`: the peak-memory helpers they share.

Each prints ``RESULT key=value ...`` as its last line; ``benchmarks/README.md`` has the measurements.
"""
