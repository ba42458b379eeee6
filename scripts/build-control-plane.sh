#!/usr/bin/env bash
# Builds the Kubernetes control-plane binaries ebb's local stack runs (kube-apiserver,
# kube-controller-manager, kube-scheduler, kubectl, etcd, kwok) from Go modules, and caches
# them by version outside the repository: only the first run on a machine pays the build.
# (helm and the other tools that check the chart: scripts/build-chart-tools.sh.)
#
# Why a wrapper module: `go install k8s.io/kubernetes/cmd/...` fails because that module's
# go.mod replaces its staging repos (k8s.io/api, ...) with relative paths
# (kubernetes/kubernetes#113302). We generate a module that requires k8s.io/kubernetes and
# replaces every staging `v0.0.0` require with the published v0.<minor>.<patch> tag.
#
# Prints the directory holding the binaries on its last line.
set -euo pipefail

K8S_VERSION="${EBB_K8S_VERSION:-v1.36.3}"
KWOK_VERSION="${EBB_KWOK_VERSION:-v0.8.0}"
CACHE="${EBB_CACHE:-$HOME/.cache/ebb}"
BIN="$CACHE/k8s-$K8S_VERSION-kwok-$KWOK_VERSION/bin"
WANT=(kube-apiserver kube-controller-manager kube-scheduler kubectl etcd kwok)

have_control_plane() { for b in "${WANT[@]}"; do [ -x "$BIN/$b" ] || return 1; done; [ -s "$BIN/kwok-stages.yaml" ]; }
LOG_NAME=build-control-plane
# shellcheck source=scripts/lib.sh
. "$(dirname "$0")/lib.sh"
exit_if_built have_control_plane "$BIN" "$CACHE/build.lock"
need_go "the control plane"
mkdir -p "$BIN"
start_heartbeat

work="$CACHE/wrapper-$K8S_VERSION"
rm -rf "$work"; mkdir -p "$work"; cd "$work"
log "building Kubernetes $K8S_VERSION and kwok $KWOK_VERSION into $BIN (first run only; ~15-25 min on 2 cores)"

# The published go.mod of k8s.io/kubernetes tells which staging modules exist in this release.
gomod=$(go_module_gomod "k8s.io/kubernetes@$K8S_VERSION")
staging_version="v0.${K8S_VERSION#v1.}"
go_line=$(grep -E '^go [0-9]' "$gomod" | head -n1)
{
  echo "module ebb.local/controlplane"
  echo
  echo "$go_line"
  echo
  echo "require k8s.io/kubernetes $K8S_VERSION"
  echo
  echo "replace ("
  # Every `k8s.io/<name> v0.0.0` require is a staging repo published as v0.<minor>.<patch>.
  grep -E '^\s*k8s\.io/[a-z0-9./-]+ v0\.0\.0(\s|$)' "$gomod" | awk -v v="$staging_version" '{print "\t" $1 " => " $1 " " v}'
  echo ")"
} > go.mod
log "wrapper go.mod has $(grep -c '=>' go.mod) staging replaces"

pkgs=(k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager
      k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kubectl go.etcd.io/etcd/server/v3)
# etcd comes at the version the Kubernetes release itself requires (no @latest).
go get "k8s.io/kubernetes@$K8S_VERSION"
minor="${K8S_VERSION#v1.}"; minor="${minor%%.*}"
ver=k8s.io/component-base/version
ldflags="-s -w -X $ver.gitVersion=$K8S_VERSION -X $ver.gitMajor=1 -X $ver.gitMinor=$minor -X $ver.gitTreeState=clean"
log "go build ${pkgs[*]}"
go build -mod=mod -trimpath -ldflags "$ldflags" -o "$BIN/" "${pkgs[@]}"
# go.etcd.io/etcd/server/v3's main package is named after its module's last element.
[ -x "$BIN/v3" ] && mv "$BIN/v3" "$BIN/etcd"
[ -x "$BIN/server" ] && mv "$BIN/server" "$BIN/etcd"

log "go install sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION"
GOBIN="$BIN" go install -trimpath -ldflags "-s -w" "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION"

# kwok acts only through Stage objects; the ones it publishes for fast node and pod lifecycles
# come with its module: gather them from the module cache (kwok --config takes a multi-doc file).
kwok_src="$(go env GOMODCACHE)/sigs.k8s.io/kwok@$KWOK_VERSION/kustomize/stage"
for f in node/fast/node-initialize.yaml node/heartbeat/node-heartbeat.yaml \
         pod/fast/pod-ready.yaml pod/fast/pod-complete.yaml pod/fast/pod-delete.yaml; do
  echo "---"; cat "$kwok_src/$f"
done > "$BIN/kwok-stages.yaml"

have_control_plane || { echo "error: missing binaries in $BIN: $(ls "$BIN")" >&2; exit 1; }
log "done"
echo "$BIN"
