# Conveyor's developer entry points. Every target installs what it needs itself.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | sha256sum | cut -c1-12)
PYTEST_ARGS ?=

.PHONY: install example test unit lint crds crds-check testenv integration e2e dev-cluster clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	rm -f $(VENV)/.installed-* && touch $@

install: $(STAMP) ## the package and its development tools, in .venv

example: install ## run the breast-cancer example on the local runner and print its metrics
	$(BIN)/conveyor run examples/breast-cancer/pipeline.yaml

testenv: ## build etcd, kube-*, kubectl, kwok, MinIO and helm into the cache (skips what is built)
	hack/install-testenv.sh

lint: install ## ruff and mypy (strict on the package)
	$(BIN)/ruff check operator tests bench
	$(BIN)/mypy

crds: install ## regenerate crds/ from the API models
	$(BIN)/conveyor crds --out crds

crds-check: install
	$(BIN)/conveyor crds --out crds --check

unit: install ## fast tests: no network, no subprocess cluster
	$(BIN)/pytest tests/unit $(PYTEST_ARGS)

test: install testenv lint crds-check ## everything CI runs: lint, unit, integration and e2e tests
	$(BIN)/pytest tests $(PYTEST_ARGS)

dev-cluster: install testenv ## a local control plane + MinIO + node agent + operator, in the foreground
	cd tests && ../$(BIN)/python -m testenv.devcluster

clean:
	rm -rf .conveyor .pytest_cache .mypy_cache .ruff_cache
