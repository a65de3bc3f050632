#!/usr/bin/env bash
# Kueue, built from its Go module into ~/.cache/kubeaccel/kueue/v<version>/: the manager binary (bin/kueue)
# and its CustomResourceDefinitions (crds/, copied from the module's config/components/crd/bases). The
# gang tests run the manager as a local process against the test control plane (see
# tests/fixtures/kueue.py). Idempotent: a no-op when both are there.
set -euo pipefail
KUEUE_VERSION=${KUEUE_VERSION:-0.17.0}
CACHE=${KUBEACCEL_KUEUE_CACHE:-$HOME/.cache/kubeaccel/kueue}
DIR=$CACHE/v$KUEUE_VERSION
log() { printf '\033[1m[kueue]\033[0m %s\n' "$*"; }

if [ -x "$DIR/bin/kueue" ] && [ -s "$DIR/crds/kueue.x-k8s.io_localqueues.yaml" ]; then
  log "kueue $KUEUE_VERSION present in $DIR"
  exit 0
fi
if ! command -v go >/dev/null; then
  echo "45-kueue: Go is not installed; install Go >= 1.25 (https://go.dev/dl) and re-run scripts/bootstrap.sh" >&2
  exit 1
fi
export CGO_ENABLED=0 GOTOOLCHAIN=local GOFLAGS=-mod=mod
mkdir -p "$DIR"
tmp=$(mktemp -d "$DIR/.build.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
# The module has no replace directives, so `go install module@version` builds the release.
log "building kueue $KUEUE_VERSION from the Go module proxy (several minutes on 2 cores the first time)"
start=$SECONDS
GOBIN=$tmp/bin nice -n 10 go install -trimpath -ldflags "-s -w" "sigs.k8s.io/kueue/cmd/kueue@v$KUEUE_VERSION"
src=$(go mod download -json "sigs.k8s.io/kueue@v$KUEUE_VERSION" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
mkdir -p "$tmp/crds"
cp "$src"/config/components/crd/bases/*.yaml "$tmp/crds/"
chmod -R u+w "$tmp/crds"
rm -rf "$DIR/bin" "$DIR/crds"
mv "$tmp/bin" "$DIR/bin"
mv "$tmp/crds" "$DIR/crds"
log "built kueue $KUEUE_VERSION in $((SECONDS - start)) s: $DIR/bin/kueue"
