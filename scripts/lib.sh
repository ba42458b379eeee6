# Shared by scripts/build-control-plane.sh and scripts/build-chart-tools.sh (sourced, not run).
# Set LOG_NAME before sourcing.

# Prints OUT and exits when CHECK (a command) finds the build in place; otherwise waits for
# another run's build (LOCK, held until this script exits), then checks again.
#   exit_if_built CHECK OUT LOCK
exit_if_built() {
  if "$1"; then echo "$2"; exit 0; fi
  mkdir -p "$(dirname "$3")"
  exec 9>"$3"
  flock 9
  if "$1"; then echo "$2"; exit 0; fi
}

log() { printf '[%s %s] %s\n' "${LOG_NAME:-build}" "$(date +%H:%M:%S)" "$*" >&2; }

# `go build` is silent for minutes: say every minute that it is still going, until the script
# exits.
start_heartbeat() {
  local started
  started=$(date +%s)
  # fd 9 (the build lock) closed: its `sleep` would hold the lock up to a minute after we exit.
  ( while sleep 60; do log "still building ($(( ($(date +%s) - started) / 60 )) min so far)"; done ) >&2 9>&- &
  heartbeat=$!
  trap 'kill "$heartbeat" 2>/dev/null || true' EXIT
}

need_go() {
  command -v go >/dev/null || { echo "error: Go is needed to build $1 (go >= 1.26)" >&2; exit 1; }
  export GOFLAGS="${GOFLAGS:--buildvcs=false}"
}

# The directory a Go module version is unpacked in, in Go's module cache (downloaded if needed).
go_module_dir() {
  go mod download -json "$1" | python3 -c 'import json,sys; d=json.load(sys.stdin); print(d["Dir"])'
}

# The go.mod of a Go module version, from Go's module cache.
go_module_gomod() {
  go mod download -json "$1" | python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])'
}
