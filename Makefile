# dsgd: `make demo` runs the example job locally, `make test` runs the whole suite.
# Both install what is missing first: Debian packages, then a virtual environment in
# this clone (.venv) holding torch and the project. Nothing is installed into the
# Python that creates the venv (Debian's is externally managed, PEP 668), and each
# clone has its own venv, so two clones never re-point each other's install.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# As after `source .venv/bin/activate`: tools the tests and benchmarks look up on PATH
# (hadolint) come from the venv too.
IN_VENV := env PATH="$(CURDIR)/$(VENV)/bin:$$PATH" VIRTUAL_ENV="$(CURDIR)/$(VENV)"
# pyproject.toml pins every version; torch is installed on its own first, at its pin.
TORCH_VERSION := $(shell sed -n 's/^ *"torch==\([^"]*\)".*/\1/p' pyproject.toml)
DEBIAN_PACKAGES := dataset-fashion-mnist iproute2 prometheus python3-venv
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
REGISTRY ?= ghcr.io/dsgd-io
DEMO ?= examples/fashion-mnist-local-sgd.yaml
# Inside the venv: deleting .venv forgets the install; a new pin (pyproject.toml) redoes it.
STAMP := $(VENV)/.dsgd-installed

.PHONY: install system-deps demo test test-fast lint format crds dashboards images bench clean \
	cluster cluster-down cluster-binaries cluster-monitoring

install: $(STAMP)

# A venv without pip is one whose creation failed half-way (Debian's Python without
# python3-venv): it is made again. A venv that works is kept; pip updates it to new pins.
$(STAMP): pyproject.toml
	$(MAKE) system-deps
	@$(PIP) --version >/dev/null 2>&1 || $(PYTHON) -m venv --clear $(VENV)
	$(PIP) install -q torch==$(TORCH_VERSION)
	$(PIP) install -q -e '.[dev]'
	@touch $@

system-deps:
	@if ! dpkg -s $(DEBIAN_PACKAGES) >/dev/null 2>&1; then \
		$(SUDO) apt-get update -q && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q --no-install-recommends $(DEBIAN_PACKAGES); \
	fi

demo: $(STAMP)
	$(IN_VENV) $(VENV)/bin/dsgd run $(DEMO) --out runs/demo

# The cluster tier needs the control plane's binaries: built here, before pytest, so
# that the first build never counts against a test's timeout.
test: $(STAMP) cluster-binaries
	$(IN_VENV) $(PY) -m pytest -q

# The unit tier only: no multi-process training, no operator, no Prometheus.
test-fast: $(STAMP)
	$(IN_VENV) $(PY) -m pytest -q -m "not slow"

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(STAMP)
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

crds: $(STAMP)
	$(PY) -m dsgd_operator.crd
	$(PY) -m dsgd_operator.crd --output helm/dsgd/crds/distributedsgdjobs.dsgd.io.yaml
	$(PY) -m dsgd_operator.experiments.crd

# The chart's Grafana dashboards, built with grafana-foundation-sdk (a test runs --check).
dashboards: $(STAMP)
	$(PY) -m dsgd_operator.dashboards

# A real local control plane (etcd, kube-apiserver, controller manager, scheduler, node
# agent) built from cluster/go.mod; admin kubeconfig at .cluster/kubeconfig. The first
# build takes a while (Go), then it is cached per machine under ~/.cache/dsgd/cluster.
cluster: $(STAMP) cluster-binaries
	$(IN_VENV) $(PY) -m dsgd_cluster up --dir .cluster

cluster-down:
	$(IN_VENV) $(PY) -m dsgd_cluster down --dir .cluster

# The Prometheus Operator and the Prometheus it configures from every namespace's
# ServiceMonitors, PodMonitors and PrometheusRules, on the cluster above (started if needed).
cluster-monitoring: $(STAMP) cluster-binaries
	$(IN_VENV) $(PY) -m dsgd_cluster monitoring --dir .cluster

# Go builds once per machine (the cache is keyed by cluster/go.mod, go.sum and the
# script); afterwards this costs a hash. The Prometheus Operator and Prometheus
# (cluster/monitoring/*/go.mod) likewise.
cluster-binaries:
	@bash cluster/build.sh >/dev/null
	@bash cluster/monitoring.sh >/dev/null

images:
	docker build -t $(REGISTRY)/dsgd-operator:$(VERSION) -f Dockerfile .
	docker build -t $(REGISTRY)/dsgd-trainer:$(VERSION) -f trainer_image/Dockerfile .

# Quick versions by default (about 15 minutes on 2 cores); `make bench FULL=1` for the
# full ones (about 40 minutes). Results: docs/benchmarks/. time_to_accuracy needs root
# (one network namespace per node, links shaped with tc).
bench: $(STAMP)
	$(IN_VENV) $(PY) benchmarks/overhead.py $(if $(FULL),--full)
	$(IN_VENV) $(PY) benchmarks/paper_findings.py $(if $(FULL),--full)
	$(SUDO) $(IN_VENV) $(PY) benchmarks/time_to_accuracy.py $(if $(FULL),--full)
	$(IN_VENV) $(PY) benchmarks/operator_bench.py

clean:
	rm -rf runs .pytest_cache .ruff_cache .cluster
