#!/usr/bin/env bash
# The Prometheus Operator's CRDs (monitoring.coreos.com: PodMonitor, ServiceMonitor,
# PrometheusRule, ...) at a pinned release, for the tests that create the chart's monitors
# on the real control plane. Generated as upstream's `make generate-crds` does: its
# controller-gen run on its API types (the Go module .../pkg/apis/monitoring, fetched
# through the Go module proxy; the repository's root module, which holds the generated
# copies, is not served there). Cached per machine like the cluster binaries:
#   ${DSGD_CLUSTER_CACHE:-~/.cache/dsgd/cluster}/prometheus-operator-crds-<version>-<key>/*.yaml
# Prints the directory on stdout; a second call costs a hash.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
PROMETHEUS_OPERATOR_VERSION=v0.95.2
CONTROLLER_TOOLS_VERSION=v0.23.0
# Bump when the commands below change: with the versions it keys the cache.
RECIPE=1
module=github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring

key=$( (cat "$0"; echo "$PROMETHEUS_OPERATOR_VERSION $CONTROLLER_TOOLS_VERSION $RECIPE") | sha256sum | cut -c1-12)
out="${DSGD_CLUSTER_CACHE:-$HOME/.cache/dsgd/cluster}/prometheus-operator-crds-$PROMETHEUS_OPERATOR_VERSION-$key"
if [ -f "$out/.complete" ]; then echo "$out"; exit 0; fi
command -v go >/dev/null || {
  echo "$here/prometheus_operator_crds.sh: the Go toolchain is needed to generate the Prometheus Operator's CRDs" >&2
  exit 1
}
# One generation per cache entry at a time: a second caller (another test session) waits,
# then finds the entry complete, instead of rewriting files the first one is reading.
mkdir -p "$(dirname "$out")"
exec 9>"$out.lock"
flock 9
if [ -f "$out/.complete" ]; then echo "$out"; exit 0; fi
echo "generating the Prometheus Operator $PROMETHEUS_OPERATOR_VERSION CRDs into $out" >&2
work=$(mktemp -d)
trap 'chmod -R u+w "$work"; rm -rf "$work"' EXIT
export GOFLAGS=-mod=readonly GOBIN="$work/bin"
go install "sigs.k8s.io/controller-tools/cmd/controller-gen@$CONTROLLER_TOOLS_VERSION"
src=$(cd "$work" && go mod download -json "$module@$PROMETHEUS_OPERATOR_VERSION" | sed -n 's/^\s*"Dir": "\(.*\)",$/\1/p')
cp -r "$src" "$work/monitoring" && chmod -R u+w "$work/monitoring"
mkdir -p "$out"
(cd "$work/monitoring" && "$work/bin/controller-gen" crd:crdVersions=v1 paths=./... "output:crd:dir=$out")
touch "$out/.complete"
echo "$out"
