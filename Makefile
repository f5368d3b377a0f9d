# Set-up and the two entry points of the README: `make test` and `make demo`.
VENV ?= .venv
PYTHON ?= python3
CORES ?= 2
BBQ ?= ../shared/bbq/data
PY := $(VENV)/bin/python
EXTRAS ?= test

.PHONY: setup test test-fast demo clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[$(EXTRAS)]"
	bash scripts/install_blas.sh $(VENV)
	touch $@

setup: $(VENV)/.installed

test: setup
	$(PY) -m pytest -q

test-fast: setup
	$(PY) -m pytest -q -m "not slow"

demo: setup
	$(VENV)/bin/snakemake --cores $(CORES) all --configfile config/demo.yaml \
		--config 'dataset={path: $(BBQ)}'
	$(VENV)/bin/snakemake --configfile config/demo.yaml --config 'dataset={path: $(BBQ)}' \
		--report results/report.html
	@echo; cat results/summary.md

clean:
	rm -rf results logs .snakemake
