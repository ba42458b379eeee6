#!/usr/bin/env bash
# The tools that check deploy/ and the Helm chart (tests/deploy_manifests.rs, tests/chart.rs),
# from package registries, each cached in a directory of its own version under ~/.cache/ebb, so
# only the first run on a machine pays for it and a version bump rebuilds only that tool:
#   helm         helm.sh/helm/v4, go install                       helm-<version>/bin/helm
#   kubeconform  github.com/yannh/kubeconform, go install          kubeconform-<version>/bin/
#   kube-score   github.com/zegl/kube-score, go install            kube-score-<version>/bin/
#   Kubernetes JSON schemas (strict and not) of v1.36, from the PyPI package kubernetes-validate
#                (pip download of the wheel, which carries them)  kubernetes-validate-<version>/
#   cert-manager's CRDs (Certificate, Issuer, ...), deploy/crds of the Go module
#                github.com/cert-manager/cert-manager              cert-manager-<version>/crds/
#   the Prometheus Operator's ServiceMonitor and PodMonitor CRDs, example/prometheus-operator-crd
#                of the Go module github.com/prometheus-operator/prometheus-operator
#                                                                  prometheus-operator-<version>/crds/
# and links them into one directory named after all the versions, printed on the last line:
#   helm, kubeconform, kube-score, kubernetes-json-schema/v1.36.0-local{,-strict}/,
#   cert-manager-crds/, prometheus-operator-crds/
# scripts/test starts it in the background beside scripts/build-control-plane.sh and cargo's build.
set -euo pipefail

HELM_VERSION="${EBB_HELM_VERSION:-v4.3.2}"
KUBECONFORM_VERSION="${EBB_KUBECONFORM_VERSION:-v0.8.0}"
KUBE_SCORE_VERSION="${EBB_KUBE_SCORE_VERSION:-v1.20.0}"
# kubernetes-validate 1.37.0 carries the schemas of Kubernetes 1.32-1.37; the control plane is 1.36.
SCHEMAS_VERSION="${EBB_K8S_SCHEMAS_VERSION:-1.37.0}"
SCHEMAS_K8S="${EBB_K8S_SCHEMAS_K8S:-v1.36.0}"
CERT_MANAGER_VERSION="${EBB_CERT_MANAGER_VERSION:-v1.21.2}"
PROMETHEUS_OPERATOR_VERSION="${EBB_PROMETHEUS_OPERATOR_VERSION:-v0.85.0}"
CACHE="${EBB_CACHE:-$HOME/.cache/ebb}"

HELM_DIR="$CACHE/helm-$HELM_VERSION"
KUBECONFORM_DIR="$CACHE/kubeconform-$KUBECONFORM_VERSION"
KUBE_SCORE_DIR="$CACHE/kube-score-$KUBE_SCORE_VERSION"
SCHEMAS_DIR="$CACHE/kubernetes-validate-$SCHEMAS_VERSION"
CERT_MANAGER_DIR="$CACHE/cert-manager-$CERT_MANAGER_VERSION"
PROMETHEUS_OPERATOR_DIR="$CACHE/prometheus-operator-$PROMETHEUS_OPERATOR_VERSION"
OUT="$CACHE/chart-tools/helm-$HELM_VERSION+kubeconform-$KUBECONFORM_VERSION+kube-score-$KUBE_SCORE_VERSION"
OUT+="+k8s-schemas-$SCHEMAS_VERSION-$SCHEMAS_K8S+cert-manager-$CERT_MANAGER_VERSION+prometheus-operator-$PROMETHEUS_OPERATOR_VERSION"

SCHEMAS_DONE="$SCHEMAS_DIR/kubernetes-json-schema/$SCHEMAS_K8S-local-strict/.for-kubeconform"
CERT_MANAGER_DONE="$CERT_MANAGER_DIR/crds/cert-manager.io_certificates.yaml"
PROMETHEUS_OPERATOR_DONE="$PROMETHEUS_OPERATOR_DIR/crds/monitoring.coreos.com_servicemonitors.yaml"

# name in $OUT, what it links to, the file whose presence says it is complete
links() {
  echo "helm $HELM_DIR/bin/helm $HELM_DIR/bin/helm"
  echo "kubeconform $KUBECONFORM_DIR/bin/kubeconform $KUBECONFORM_DIR/bin/kubeconform"
  echo "kube-score $KUBE_SCORE_DIR/bin/kube-score $KUBE_SCORE_DIR/bin/kube-score"
  echo "kubernetes-json-schema $SCHEMAS_DIR/kubernetes-json-schema $SCHEMAS_DONE"
  echo "cert-manager-crds $CERT_MANAGER_DIR/crds $CERT_MANAGER_DONE"
  echo "prometheus-operator-crds $PROMETHEUS_OPERATOR_DIR/crds $PROMETHEUS_OPERATOR_DONE"
}
have_all() {
  local name target done
  while read -r name target done; do
    [ -e "$done" ] && [ "$(readlink "$OUT/$name")" = "$target" ] || return 1
  done < <(links)
}
LOG_NAME=build-chart-tools
# shellcheck source=scripts/lib.sh
. "$(dirname "$0")/lib.sh"
exit_if_built have_all "$OUT" "$CACHE/chart-tools.lock"
start_heartbeat

# go install MODULE/CMD@VERSION into DIR/bin, through DIR.tmp so that an interrupted build
# leaves nothing that looks finished. Outside any module: each tool is a module of its own.
go_install() {
  local dir=$1 pkg=$2 version=$3 ldflags=$4 t0
  need_go "$pkg"
  t0=$(date +%s)
  log "go install $pkg@$version into $dir (first run only)"
  rm -rf "$dir.tmp"; mkdir -p "$dir.tmp/bin"
  (cd "$CACHE" && GOBIN="$dir.tmp/bin" go install -trimpath -ldflags "-s -w $ldflags" "$pkg@$version")
  rm -rf "$dir"; mv "$dir.tmp" "$dir"
  log "$pkg@$version built in $(( $(date +%s) - t0 )) s"
}

# helm v4 takes the Kubernetes version `helm template` assumes (.Capabilities.KubeVersion) from
# the client-go it is built with: no ldflags for it, unlike v3.
[ -x "$HELM_DIR/bin/helm" ] || go_install "$HELM_DIR" helm.sh/helm/v4/cmd/helm "$HELM_VERSION" \
  "-X helm.sh/helm/v4/internal/version.version=$HELM_VERSION -X helm.sh/helm/v4/internal/version.gitTreeState=clean"
[ -x "$KUBECONFORM_DIR/bin/kubeconform" ] || go_install "$KUBECONFORM_DIR" \
  github.com/yannh/kubeconform/cmd/kubeconform "$KUBECONFORM_VERSION" "-X main.version=$KUBECONFORM_VERSION"
[ -x "$KUBE_SCORE_DIR/bin/kube-score" ] || go_install "$KUBE_SCORE_DIR" \
  github.com/zegl/kube-score/cmd/kube-score "$KUBE_SCORE_VERSION" "-X main.version=$KUBE_SCORE_VERSION"

if [ ! -e "$SCHEMAS_DONE" ]; then
  log "pip download kubernetes-validate==$SCHEMAS_VERSION: the JSON schemas of Kubernetes $SCHEMAS_K8S"
  rm -rf "$SCHEMAS_DIR.tmp"; mkdir -p "$SCHEMAS_DIR.tmp/wheel"
  python3 -m pip download --quiet --no-deps --only-binary=:all: -d "$SCHEMAS_DIR.tmp/wheel" \
    "kubernetes-validate==$SCHEMAS_VERSION" >&2
  # Only this version's two directories of the wheel (it carries several). Each kind's schema
  # has an $id under https://kubernetes.io/api/ and refers to the definitions by
  # "/api/_definitions.json#/$defs/...", which a resolver would fetch from kubernetes.io:
  # without the $id, "_definitions.json#..." resolves to the file beside it, as kubeconform
  # (and any reader of files) reads them.
  python3 - "$SCHEMAS_DIR.tmp" "$SCHEMAS_K8S" "$SCHEMAS_DIR.tmp"/wheel/*.whl <<'EOF'
import json, os, sys, zipfile
out, k8s, wheel = sys.argv[1:]
prefix = "kubernetes_validate/kubernetes-json-schema/"
def local(v):
    if isinstance(v, dict):
        # ("$ref" and "$id" can also be property names, with schemas as their values.)
        return {k: x.replace("/api/_definitions.json#", "_definitions.json#")
                if k == "$ref" and isinstance(x, str) else local(x)
                for k, x in v.items() if not (k == "$id" and isinstance(x, str))}
    if isinstance(v, list):
        return [local(x) for x in v]
    return v
with zipfile.ZipFile(wheel) as z:
    names = [n for n in z.namelist() if n.startswith(prefix + k8s + "-local") and n.endswith(".json")]
    if not names:
        sys.exit(f"{wheel} has no schemas of Kubernetes {k8s}")
    for n in names:
        dest = os.path.join(out, "kubernetes-json-schema", n[len(prefix):])
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        with open(dest, "w") as f:
            json.dump(local(json.loads(z.read(n))), f)
for d in os.listdir(os.path.join(out, "kubernetes-json-schema")):
    open(os.path.join(out, "kubernetes-json-schema", d, ".for-kubeconform"), "w").close()
EOF
  rm -rf "$SCHEMAS_DIR.tmp/wheel" "$SCHEMAS_DIR"; mv "$SCHEMAS_DIR.tmp" "$SCHEMAS_DIR"
fi

# CRDs from a Go module's source: DIR MODULE VERSION FILES (paths in the module, globs).
module_crds() {
  local dir=$1 module=$2 version=$3 src f
  shift 3
  need_go "$module's CRDs"
  log "CRDs from the Go module $module@$version: $*"
  src=$(cd "$CACHE" && go_module_dir "$module@$version")
  rm -rf "$dir.tmp"; mkdir -p "$dir.tmp/crds"
  for f in "$@"; do cp "$src"/$f "$dir.tmp/crds/"; done
  chmod -R u+w "$dir.tmp"
  rm -rf "$dir"; mv "$dir.tmp" "$dir"
}
[ -e "$CERT_MANAGER_DONE" ] || module_crds "$CERT_MANAGER_DIR" \
  github.com/cert-manager/cert-manager "$CERT_MANAGER_VERSION" 'deploy/crds/*.yaml'
[ -e "$PROMETHEUS_OPERATOR_DONE" ] || module_crds \
  "$PROMETHEUS_OPERATOR_DIR" github.com/prometheus-operator/prometheus-operator "$PROMETHEUS_OPERATOR_VERSION" \
  example/prometheus-operator-crd/monitoring.coreos.com_servicemonitors.yaml \
  example/prometheus-operator-crd/monitoring.coreos.com_podmonitors.yaml

mkdir -p "$OUT"
while read -r name target _; do ln -sfn "$target" "$OUT/$name"; done < <(links)
have_all || { echo "error: missing tools in $OUT: $(ls -l "$OUT")" >&2; exit 1; }
log "done"
echo "$OUT"
