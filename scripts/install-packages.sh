#!/usr/bin/env bash
# Installs the Debian packages ebb's local stack and tests need (Prometheus, promtool, RabbitMQ,
# OpenSSL for the harness's certificates; umoci, runc and skopeo for the container image that
# scripts/build-image builds and tests/image.rs runs; pip for scripts/build-chart-tools.sh). Idempotent: does nothing when they are present.
set -euo pipefail
need=()
command -v prometheus >/dev/null || need+=(prometheus)
command -v promtool >/dev/null || need+=(prometheus)
command -v rabbitmq-server >/dev/null || need+=(rabbitmq-server)
command -v openssl >/dev/null || need+=(openssl)
command -v umoci >/dev/null || need+=(umoci)
command -v runc >/dev/null || need+=(runc)
command -v skopeo >/dev/null || need+=(skopeo)
command -v readelf >/dev/null || need+=(binutils)
# pip downloads the Kubernetes JSON schemas (scripts/build-chart-tools.sh).
python3 -m pip --version >/dev/null 2>&1 || need+=(python3-pip)
[ ${#need[@]} -eq 0 ] && exit 0
SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
echo "[install-packages] apt-get install ${need[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq >&2
# policy-rc.d keeps Debian from starting system-wide services we do not want (the harness
# starts its own instances on free loopback ports).
if [ ! -e /usr/sbin/policy-rc.d ]; then
  printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null; $SUDO chmod +x /usr/sbin/policy-rc.d
  trap '$SUDO rm -f /usr/sbin/policy-rc.d' EXIT
fi
$SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >&2
