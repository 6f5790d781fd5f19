# syntax=docker/dockerfile:1
# The dsgd operator image: kopf and the Kubernetes client, no torch.
#
#   docker build -t ghcr.io/dsgd-io/dsgd-operator:<project.version> -f Dockerfile .
#
# Dependency versions come from pyproject.toml (the `operator` extra), the only place
# they are pinned. The Helm chart runs this image with `dsgd operator` flags as args.

ARG PYTHON_IMAGE=python:3.11.14-slim-trixie

FROM ${PYTHON_IMAGE} AS build
WORKDIR /src
# What the `dsgd` distribution is built from; everything else stays out (.dockerignore).
COPY pyproject.toml README.md ./
COPY contract/dsgd_contract/ contract/dsgd_contract/
COPY operator/dsgd_operator/ operator/dsgd_operator/
COPY trainer_image/dsgd_trainer/ trainer_image/dsgd_trainer/
# DL3013: the versions are pinned in pyproject.toml, which this install reads.
# hadolint ignore=DL3013
RUN pip install --no-cache-dir --root-user-action=ignore --prefix=/install ".[operator]"

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="dsgd-operator" \
      org.opencontainers.image.description="Kubernetes operator for DistributedSGDJobs (kopf)" \
      org.opencontainers.image.source="https://github.com/dsgd-io/dsgd" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
COPY --from=build /install /usr/local
# A fixed numeric uid so that `runAsNonRoot` can verify it; no home, no shell.
RUN groupadd --system --gid 10001 dsgd \
 && useradd --system --uid 10001 --gid dsgd --no-create-home --shell /usr/sbin/nologin dsgd
USER 10001:10001
# 8080: kopf's liveness endpoint (/healthz); 9300: the operator's Prometheus metrics.
EXPOSE 8080 9300
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=4)"]
ENTRYPOINT ["dsgd", "operator"]
