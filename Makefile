# dsgd: `make demo` runs the example job locally, `make test` runs the whole suite.
# Both install what is missing first (Debian packages, torch, the project).

PYTHON ?= python3
PIP := $(PYTHON) -m pip
# The CPU build of torch that these machines carry; pinned again in pyproject.toml.
TORCH_VERSION := 2.13.0
DEBIAN_PACKAGES := dataset-fashion-mnist prometheus
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
REGISTRY ?= ghcr.io/dsgd-io
DEMO ?= examples/fashion-mnist-local-sgd.yaml
STAMP := .make/installed

.PHONY: install system-deps demo test test-fast lint format crds images bench clean \
	cluster cluster-down cluster-binaries

install: $(STAMP)

$(STAMP): pyproject.toml
	$(MAKE) system-deps
	$(PIP) install -q torch==$(TORCH_VERSION)
	$(PIP) install -q -e '.[dev]'
	@mkdir -p $(dir $@) && touch $@

system-deps:
	@if ! dpkg -s $(DEBIAN_PACKAGES) >/dev/null 2>&1; then \
		$(SUDO) apt-get update -q && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q --no-install-recommends $(DEBIAN_PACKAGES); \
	fi

demo: $(STAMP)
	dsgd run $(DEMO) --out runs/demo

test: $(STAMP)
	$(PYTHON) -m pytest -q

# The unit tier only: no multi-process training, no operator, no Prometheus.
test-fast: $(STAMP)
	$(PYTHON) -m pytest -q -m "not slow"

lint: $(STAMP)
	ruff check .
	ruff format --check .

format:
	ruff check --fix .
	ruff format .

crds: $(STAMP)
	$(PYTHON) -m dsgd_operator.crd
	$(PYTHON) -m dsgd_operator.crd --output helm/dsgd/crds/distributedsgdjobs.dsgd.io.yaml

# A real local control plane (etcd, kube-apiserver, controller manager, scheduler, node
# agent) built from cluster/go.mod; admin kubeconfig at .cluster/kubeconfig. The first
# build takes a while (Go), then it is cached per machine under ~/.cache/dsgd/cluster.
cluster: $(STAMP)
	$(PYTHON) -m dsgd_cluster up --dir .cluster

cluster-down:
	$(PYTHON) -m dsgd_cluster down --dir .cluster

cluster-binaries:
	bash cluster/build.sh

images:
	docker build -t $(REGISTRY)/dsgd-operator:$(VERSION) -f Dockerfile .
	docker build -t $(REGISTRY)/dsgd-trainer:$(VERSION) -f trainer_image/Dockerfile .

# Quick versions by default (about 15 minutes on 2 cores); `make bench FULL=1` for the
# full ones (about 40 minutes). Results: docs/benchmarks/. time_to_accuracy needs root
# (one network namespace per node, links shaped with tc).
bench: $(STAMP)
	$(PYTHON) benchmarks/overhead.py $(if $(FULL),--full)
	$(PYTHON) benchmarks/paper_findings.py $(if $(FULL),--full)
	$(SUDO) $(PYTHON) benchmarks/time_to_accuracy.py $(if $(FULL),--full)
	$(PYTHON) benchmarks/operator_bench.py

clean:
	rm -rf .make runs .pytest_cache .ruff_cache .cluster
