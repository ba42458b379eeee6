#!/usr/bin/env bash
# Builds tools/dashboard-check (the strict decode of dashboards/ with grafana-foundation-sdk, a
# Go module) and caches it outside the repository, keyed by the SDK's version and a hash of the
# tool's sources: only the first run on a machine (or after the tool changes) pays the build
# (about half a minute on 2 cores, plus the module download). scripts/test starts it in the
# background while cargo builds; tests/dashboards.rs runs it (and so builds it if needed).
#
# Prints the path of the binary on its last line.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
SRC="$ROOT/tools/dashboard-check"
CACHE="${EBB_CACHE:-$HOME/.cache/ebb}"
SDK_VERSION=$(awk '$1 == "require" && $2 == "github.com/grafana/grafana-foundation-sdk/go" {print $3}' "$SRC/go.mod")
[ -n "$SDK_VERSION" ] || { echo "error: no grafana-foundation-sdk version in $SRC/go.mod" >&2; exit 1; }
HASH=$(cat "$SRC/go.mod" "$SRC/go.sum" "$SRC"/*.go | sha256sum | cut -c1-12)
DIR="$CACHE/dashboard-check-sdk-$SDK_VERSION-$HASH"
BIN="$DIR/dashboard-check"
if [ -x "$BIN" ]; then echo "$BIN"; exit 0; fi

mkdir -p "$CACHE"
# A lock of its own: this build runs alongside the control plane's.
exec 9>"$CACHE/dashboard-check.lock"
flock 9
if [ -x "$BIN" ]; then echo "$BIN"; exit 0; fi

command -v go >/dev/null || { echo "error: Go is needed to build tools/dashboard-check" >&2; exit 1; }
started=$(date +%s)
printf '[build-dashboard-check %s] go build (grafana-foundation-sdk %s) into %s (first run only)\n' \
  "$(date +%H:%M:%S)" "$SDK_VERSION" "$DIR" >&2
mkdir -p "$DIR"
(cd "$SRC" && GOFLAGS="${GOFLAGS:--buildvcs=false}" go build -mod=readonly -trimpath -ldflags "-s -w" -o "$BIN.tmp" .)
mv "$BIN.tmp" "$BIN"
printf '[build-dashboard-check %s] done in %d s\n' "$(date +%H:%M:%S)" "$(( $(date +%s) - started ))" >&2
echo "$BIN"
