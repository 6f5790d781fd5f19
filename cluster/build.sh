#!/usr/bin/env bash
# Builds the local control plane's binaries from the modules pinned in cluster/go.mod
# (and helm at HELM_VERSION) into a per-machine cache keyed by what went into them:
#   ${DSGD_CLUSTER_CACHE:-~/.cache/dsgd/cluster}/<key>/{etcd,kube-apiserver,...,helm}
# Prints the binary directory on stdout. Reuses a complete cache entry, so a second
# call costs a hash. DSGD_CLUSTER_ASSETS=<dir> with ready binaries skips the build
# entirely (like envtest's KUBEBUILDER_ASSETS).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
HELM_VERSION=v3.22.0
# Bump when the build commands below change: with the pinned files it keys the cache.
RECIPE=1
BINARIES=(etcd kube-apiserver kube-controller-manager kube-scheduler kubectl helm)

if [ -n "${DSGD_CLUSTER_ASSETS:-}" ]; then
  for b in "${BINARIES[@]}"; do
    [ -x "$DSGD_CLUSTER_ASSETS/$b" ] || { echo "DSGD_CLUSTER_ASSETS=$DSGD_CLUSTER_ASSETS: no executable $b" >&2; exit 1; }
  done
  echo "$DSGD_CLUSTER_ASSETS"; exit 0
fi

command -v go >/dev/null || {
  echo "cluster/build.sh: the Go toolchain (go 1.26 or newer) is needed to build the control plane" >&2
  exit 1
}
k8s_version=$(sed -n 's/^\s*k8s.io\/kubernetes \(v[0-9.]*\).*/\1/p' "$here/go.mod")
key=$( (cat "$here/go.mod" "$here/go.sum" "$here/etcd/main.go"; echo "$HELM_VERSION $RECIPE") | sha256sum | cut -c1-12)
out="${DSGD_CLUSTER_CACHE:-$HOME/.cache/dsgd/cluster}/$k8s_version-$key"
if [ -f "$out/.complete" ]; then echo "$out"; exit 0; fi

# One build per cache entry at a time: a second caller (another clone's `make test`, a
# test session) waits for the first and then finds the entry complete, instead of
# running the same multi-core Go build beside it.
mkdir -p "$out"
exec 9>"$out.lock"
flock 9
if [ -f "$out/.complete" ]; then echo "$out"; exit 0; fi
start=$(date +%s)
echo "building the control plane ($k8s_version, helm $HELM_VERSION) into $out; the first build takes a while" >&2
# Clients read the version (helm's kubeVersion check, kubectl's skew warning), so stamp it
# where `go build` alone leaves a placeholder.
major=${k8s_version#v}; major=${major%%.*}
minor=${k8s_version#v*.}; minor=${minor%%.*}
stamp=""
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  stamp+=" -X $pkg.gitVersion=$k8s_version -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor"
  stamp+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
done
cd "$here"
# -mod=readonly: go.sum is committed; a build never rewrites the pins.
export CGO_ENABLED=0 GOFLAGS=-mod=readonly
go build -trimpath -ldflags "-s -w $stamp" -o "$out/" \
  k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
  k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kubectl ./etcd
GOBIN="$out" go install -trimpath -ldflags "-s -w" "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
touch "$out/.complete"
echo "built in $(( $(date +%s) - start )) s" >&2
echo "$out"
