#!/usr/bin/env bash
# Builds the peers `cargo bench --bench peers` runs ebb against, from their Go modules, each
# cached in a directory of its own version under ~/.cache/ebb (beside the control plane), so
# only the first run on a machine pays for it:
#   KEDA               github.com/kedacore/keda/v2     keda-<version>/bin/{keda-adapter,keda-operator}
#                                                      keda-<version>/crds/ (config/crd/bases)
#   prometheus-adapter sigs.k8s.io/prometheus-adapter  prometheus-adapter-<version>/bin/prometheus-adapter
#
# Why not `go install`: KEDA's go.mod has a replace directive and prometheus-adapter's version
# list answers 403 on this proxy (the deprecation lookup fails), so each module is copied out of
# Go's module cache (`go mod download -json` gives its Dir) into a writable directory and built
# there with its own go.mod and go.sum, as its Makefile does (the generated code is in the module).
#
# Not part of scripts/test or .ci/run: KEDA alone takes 15+ minutes on 2 cores (~3.3 GB of Go
# build cache). Prints the two bin directories, one a line, on its last two lines.
set -euo pipefail

KEDA_VERSION="${EBB_KEDA_VERSION:-v2.21.0}"
PROMETHEUS_ADAPTER_VERSION="${EBB_PROMETHEUS_ADAPTER_VERSION:-v0.12.0}"
CACHE="${EBB_CACHE:-$HOME/.cache/ebb}"
KEDA_DIR="$CACHE/keda-$KEDA_VERSION"
PA_DIR="$CACHE/prometheus-adapter-$PROMETHEUS_ADAPTER_VERSION"

have_keda() { [ -x "$KEDA_DIR/bin/keda-adapter" ] && [ -x "$KEDA_DIR/bin/keda-operator" ] && [ -s "$KEDA_DIR/crds/keda.sh_scaledobjects.yaml" ]; }
have_pa() { [ -x "$PA_DIR/bin/prometheus-adapter" ]; }
have_all() { have_keda && have_pa; }
LOG_NAME=build-peers
# shellcheck source=scripts/lib.sh
. "$(dirname "$0")/lib.sh"
exit_if_built have_all "$KEDA_DIR/bin
$PA_DIR/bin" "$CACHE/peers.lock"
need_go "KEDA and prometheus-adapter"
start_heartbeat

# Copies MODULE@VERSION out of the module cache into DIR.tmp/src (writable) and builds PKGS
# there into DIR.tmp/bin; DIR.tmp becomes DIR only when complete.
#   build_module DIR MODULE VERSION LDFLAGS PKG...
build_module() {
  local dir=$1 module=$2 version=$3 ldflags=$4 src t0
  shift 4
  t0=$(date +%s)
  log "building $module@$version ($*) into $dir (first run only)"
  src=$(cd "$CACHE" && go_module_dir "$module@$version")
  rm -rf "$dir.tmp"; mkdir -p "$dir.tmp/bin"
  cp -r "$src" "$dir.tmp/src"
  chmod -R u+w "$dir.tmp/src"
  (cd "$dir.tmp/src" && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w $ldflags" -o "$dir.tmp/bin/" "$@")
  log "$module@$version built in $(( $(date +%s) - t0 )) s"
}

if ! have_pa; then
  build_module "$PA_DIR" sigs.k8s.io/prometheus-adapter "$PROMETHEUS_ADAPTER_VERSION" "" ./cmd/adapter
  mv "$PA_DIR.tmp/bin/adapter" "$PA_DIR.tmp/bin/prometheus-adapter"
  rm -rf "$PA_DIR.tmp/src" "$PA_DIR"; mv "$PA_DIR.tmp" "$PA_DIR"
fi

if ! have_keda; then
  build_module "$KEDA_DIR" github.com/kedacore/keda/v2 "$KEDA_VERSION" \
    "-X=github.com/kedacore/keda/v2/version.Version=${KEDA_VERSION#v}" ./cmd/adapter ./cmd/operator
  mv "$KEDA_DIR.tmp/bin/adapter" "$KEDA_DIR.tmp/bin/keda-adapter"
  mv "$KEDA_DIR.tmp/bin/operator" "$KEDA_DIR.tmp/bin/keda-operator"
  mkdir -p "$KEDA_DIR.tmp/crds"
  cp "$KEDA_DIR.tmp/src"/config/crd/bases/*.yaml "$KEDA_DIR.tmp/crds/"
  rm -rf "$KEDA_DIR.tmp/src" "$KEDA_DIR"; mv "$KEDA_DIR.tmp" "$KEDA_DIR"
fi

have_all || { echo "error: missing peers in $KEDA_DIR or $PA_DIR" >&2; exit 1; }
log "done"
echo "$KEDA_DIR/bin"
echo "$PA_DIR/bin"
