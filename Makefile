# Conveyor's developer entry points. Every target installs what it needs itself.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | sha256sum | cut -c1-12)
PYTEST_ARGS ?=

.PHONY: install example test unit lint crds crds-check testenv integration e2e dev-cluster images kind-up kind-down clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	rm -f $(VENV)/.installed-* && touch $@

install: $(STAMP) ## the package and its development tools, in .venv

example: install ## run the breast-cancer example on the local runner and print its metrics
	$(BIN)/conveyor run examples/breast-cancer/pipeline.yaml

testenv: ## build etcd, kube-*, kubectl, kwok, MinIO, helm, the kubelet, CNI plugins and Prometheus into the cache; PostgreSQL and Chromium from packages (skips what exists)
	hack/install-testenv.sh
	hack/install-postgres.sh
	hack/install-chromium.sh

lint: install ## ruff and mypy (strict on the package)
	$(BIN)/ruff check operator tests $(wildcard bench)
	$(BIN)/mypy
	$(BIN)/lint-imports

crds: install ## regenerate crds/ and charts/conveyor/crds/ from the API models
	$(BIN)/conveyor crds --out crds

crds-check: install
	$(BIN)/conveyor crds --out crds --check

unit: install ## fast tests: no network, no subprocess cluster
	$(BIN)/pytest tests/unit $(PYTEST_ARGS)

test: install testenv images lint crds-check ## everything CI runs: lint, unit, integration, e2e and container tests
	$(BIN)/pytest tests --durations=30 $(PYTEST_ARGS)

dev-cluster: install testenv ## a local control plane + MinIO + node agent + operator, in the foreground
	cd tests && ../$(BIN)/python -m testenv.devcluster

# ---- packaging: images, a kind cluster, the Helm chart (kind-up needs kind and a registry-capable Docker; the tests build the images and run them on a real kubelet node)
VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
IMAGE_REPO ?= ghcr.io/conveyor-dev
IMAGE_TAG ?= $(VERSION)
OPERATOR_IMAGE ?= $(IMAGE_REPO)/conveyor-operator:$(IMAGE_TAG)
STEP_IMAGE ?= $(IMAGE_REPO)/conveyor-step:$(IMAGE_TAG)
SERVER_IMAGE ?= $(IMAGE_REPO)/conveyor-server:$(IMAGE_TAG)
# Empty: hack/images.sh uses Debian's client, /usr/bin/docker (the client on PATH may lack buildx).
DOCKER ?=
# The release base; when it cannot be pulled, hack/images.sh builds a stand-in from Debian's packages.
PYTHON_IMAGE ?= python:3.11.13-slim-bookworm
# Extra `docker build` flags, e.g. DOCKER_BUILD_FLAGS='--no-cache' or '--build-arg ...'.
DOCKER_BUILD_FLAGS ?=
KIND ?= kind
HELM ?= helm
KUBECTL ?= kubectl
KIND_CLUSTER ?= conveyor
RELEASE_NAMESPACE ?= conveyor-system
RUN_NAMESPACE ?= default
S3_ENDPOINT ?=
S3_BUCKET ?= conveyor
S3_ACCESS_KEY ?=
S3_SECRET_KEY ?=

images: ## build the operator, step and model-server images (installs and starts Docker if needed; no registry needed)
	IMAGE_REPO='$(IMAGE_REPO)' IMAGE_TAG='$(IMAGE_TAG)' OPERATOR_IMAGE='$(OPERATOR_IMAGE)' STEP_IMAGE='$(STEP_IMAGE)' \
	  SERVER_IMAGE='$(SERVER_IMAGE)' PYTHON_IMAGE='$(PYTHON_IMAGE)' DOCKER_BUILD_FLAGS='$(DOCKER_BUILD_FLAGS)' \
	  DOCKER='$(DOCKER)' hack/images.sh

kind-up: images ## kind cluster + the images + the chart: make kind-up S3_ENDPOINT=http://... S3_ACCESS_KEY=... S3_SECRET_KEY=...
	@test -n "$(S3_ENDPOINT)" || { echo "make kind-up: set S3_ENDPOINT to an S3 endpoint reachable from pods (and S3_BUCKET, S3_ACCESS_KEY, S3_SECRET_KEY)" >&2; exit 1; }
	@test -n "$(S3_ACCESS_KEY)" -a -n "$(S3_SECRET_KEY)" || { echo "make kind-up: set S3_ACCESS_KEY and S3_SECRET_KEY" >&2; exit 1; }
	@command -v $(KIND) >/dev/null || { echo "make kind-up: '$(KIND)' not found (install kind, or set KIND=/path/to/kind)" >&2; exit 1; }
	@command -v $(HELM) >/dev/null || { echo "make kind-up: '$(HELM)' not found (install helm 3, or set HELM=/path/to/helm)" >&2; exit 1; }
	$(KIND) get clusters 2>/dev/null | grep -qx '$(KIND_CLUSTER)' || $(KIND) create cluster --name $(KIND_CLUSTER) --config kind-config.yaml
	$(KIND) load docker-image --name $(KIND_CLUSTER) $(OPERATOR_IMAGE) $(STEP_IMAGE) $(SERVER_IMAGE)
	$(HELM) upgrade --install conveyor charts/conveyor --kube-context kind-$(KIND_CLUSTER) \
	  --namespace $(RELEASE_NAMESPACE) --create-namespace --wait --timeout 5m \
	  --set image.repository=$(IMAGE_REPO)/conveyor-operator --set image.tag=$(IMAGE_TAG) \
	  --set steps.image=$(STEP_IMAGE) --set servers.image=$(SERVER_IMAGE) \
	  --set artifacts.endpoint=$(S3_ENDPOINT) --set artifacts.bucket=$(S3_BUCKET) \
	  --set artifacts.credentials.create=true \
	  --set-string artifacts.credentials.accessKey=$(S3_ACCESS_KEY) --set-string artifacts.credentials.secretKey=$(S3_SECRET_KEY)
	$(KUBECTL) --context kind-$(KIND_CLUSTER) -n $(RUN_NAMESPACE) create secret generic conveyor-artifacts \
	  --from-literal=accessKey=$(S3_ACCESS_KEY) --from-literal=secretKey=$(S3_SECRET_KEY) \
	  --dry-run=client -o yaml | $(KUBECTL) --context kind-$(KIND_CLUSTER) apply -f -

kind-down: ## delete the kind cluster
	$(KIND) delete cluster --name $(KIND_CLUSTER)

clean:
	rm -rf .conveyor .pytest_cache .mypy_cache .ruff_cache
