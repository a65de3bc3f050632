#!/usr/bin/env bash
# Helm, built from its Go module (helm.sh/helm/v4) into ~/.cache/kubeaccel/helm/<version>/bin/helm:
# the chart in deploy/helm/ is linted, templated, installed, upgraded and uninstalled with it in the
# tests, and `kubeaccel demo` installs the device plugin through it. Idempotent: a no-op when the
# binary is there and reports the wanted version. Keep HELM_VERSION in sync with
# kubeaccel.deploy_helm.HELM_VERSION (tests/deploy checks it).
set -euo pipefail
HELM_VERSION=${HELM_VERSION:-4.3.1}
CACHE=${KUBEACCEL_HELM_CACHE:-$HOME/.cache/kubeaccel/helm}
BIN=$CACHE/v$HELM_VERSION/bin
log() { printf '\033[1m[helm]\033[0m %s\n' "$*"; }

if [ -x "$BIN/helm" ] && "$BIN/helm" version --template '{{.Version}}' 2>/dev/null | grep -qx "v$HELM_VERSION"; then
  log "helm v$HELM_VERSION present in $BIN"
  exit 0
fi
if ! command -v go >/dev/null; then
  echo "40-helm: Go is not installed; install Go >= 1.26 (https://go.dev/dl) and re-run scripts/bootstrap.sh" >&2
  exit 1
fi
mkdir -p "$BIN"
export CGO_ENABLED=0 GOTOOLCHAIN=local GOFLAGS=-mod=mod
# helm's go.mod has no replace directives, so `go install module@version` builds exactly the release.
# The version stamps are the ones helm's own Makefile sets for a tagged build.
pkg=helm.sh/helm/v4/internal/version
ldflags="-s -w -X $pkg.version=v$HELM_VERSION -X $pkg.metadata= -X $pkg.gitTreeState=clean"
log "building helm v$HELM_VERSION from the Go module proxy (a few minutes on 2 cores the first time)"
start=$SECONDS
tmp=$(mktemp -d "$BIN/.build.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
GOBIN=$tmp nice -n 10 go install -trimpath -ldflags "$ldflags" "helm.sh/helm/v4/cmd/helm@v$HELM_VERSION"
mv "$tmp/helm" "$BIN/helm"
log "built helm v$HELM_VERSION in $((SECONDS - start)) s: $BIN/helm"
