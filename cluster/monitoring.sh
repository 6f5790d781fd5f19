#!/usr/bin/env bash
# The local cluster's monitoring, built from published Go modules at the releases pinned in
# cluster/monitoring/*/go.mod:
#   - the Prometheus Operator's `operator`, and from its module its generated CRDs
#     (monitoring.coreos.com: PodMonitor, ServiceMonitor, PrometheusRule, Prometheus, ...)
#     and Prometheus' example ClusterRole;
#   - `prometheus`, because Debian's build leaves out the Kubernetes service discovery
#     that every configuration the operator generates uses.
# Cached per machine like the cluster binaries, keyed by what went into them:
#   ${DSGD_CLUSTER_CACHE:-~/.cache/dsgd/cluster}/monitoring-<operator>-<key>/
#     operator  prometheus  crds/*.yaml  rbac/prometheus-cluster-role.yaml
# Prints the directory on stdout; a second call costs a hash. Only go.mod and go.sum are
# committed.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)/monitoring
operator_module=github.com/prometheus-operator/prometheus-operator
prometheus_module=github.com/prometheus/prometheus
# Bump when the commands below change: with the pinned files it keys the cache.
RECIPE=1

pinned() { sed -n "s|^\s*$2 \(v[0-9.]*\).*|\1|p" "$here/$1/go.mod"; }
operator_version=$(pinned prometheus-operator "$operator_module")
key=$( (cat "$0" "$here"/*/go.mod "$here"/*/go.sum; echo "$RECIPE") | sha256sum | cut -c1-12)
out="${DSGD_CLUSTER_CACHE:-$HOME/.cache/dsgd/cluster}/monitoring-$operator_version-$key"
if [ -f "$out/.complete" ]; then echo "$out"; exit 0; fi
command -v go >/dev/null || {
  echo "$0: the Go toolchain (go 1.26 or newer) is needed to build the Prometheus Operator" >&2
  exit 1
}
# One build per cache entry at a time: a second caller (another test session) waits,
# then finds the entry complete, instead of rewriting files the first one is reading.
mkdir -p "$(dirname "$out")"
exec 9>"$out.lock"
flock 9
if [ -f "$out/.complete" ]; then echo "$out"; exit 0; fi
start=$(date +%s)
# Prometheus' module versions encode its release: v0.316.0 is Prometheus 3.16.0.
prometheus_version=$(pinned prometheus "$prometheus_module" | sed 's/^v0\.\([0-9]\)\([0-9][0-9]\)\./\1.\2./; s/\.0\([0-9]\)\./.\1./')
echo "building the Prometheus Operator $operator_version and Prometheus $prometheus_version into $out; the first build takes a while" >&2
rm -rf "$out" && mkdir -p "$out/crds" "$out/rbac"
# -mod=readonly: go.sum is committed; a build never rewrites the pins. The version stamps
# are what upstream's releases set (`--version`; the operator's config-reloader image tag).
export CGO_ENABLED=0 GOFLAGS=-mod=readonly
stamp=github.com/prometheus/common/version.Version
(cd "$here/prometheus-operator" && go build -trimpath -o "$out/" \
  -ldflags "-s -w -X $stamp=${operator_version#v}" "$operator_module/cmd/operator")
# Upstream's build tags for a Prometheus with only the Kubernetes discovery (besides the
# static, file and HTTP ones every build has): minutes less to build than with all 27.
(cd "$here/prometheus" && go build -tags remove_all_sd,enable_kubernetes_sd -trimpath \
  -o "$out/" -ldflags "-s -w -X $stamp=$prometheus_version" "$prometheus_module/cmd/prometheus")
src=$(cd "$here/prometheus-operator" && go list -m -f '{{.Dir}}' "$operator_module")
cp "$src"/example/prometheus-operator-crd/monitoring.coreos.com_*.yaml "$out/crds/"
cp "$src/example/rbac/prometheus/prometheus-cluster-role.yaml" "$out/rbac/"
chmod -R u+w "$out"
touch "$out/.complete"
echo "built in $(( $(date +%s) - start )) s" >&2
echo "$out"
