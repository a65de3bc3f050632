#!/usr/bin/env bash
# nvidia-ctk (NVIDIA Container Toolkit), built from its Go module into
# ~/.cache/kubeaccel/nvidia-ctk/<version>/bin/: the reference the NVIDIA CDI tests compare kubeaccel's
# generated spec against (`nvidia-ctk cdi generate` over the same fake driver root). No GPU is needed
# to build or to run it in `--mode=management`. Idempotent: a no-op when the binary is there and
# reports the wanted version. Keep NVIDIA_CTK_VERSION in sync with tests/devices/test_nvcdi.py.
set -euo pipefail
NVIDIA_CTK_VERSION=${NVIDIA_CTK_VERSION:-1.20.2}
CACHE=${KUBEACCEL_NVIDIA_CTK_CACHE:-$HOME/.cache/kubeaccel/nvidia-ctk}
BIN=$CACHE/v$NVIDIA_CTK_VERSION/bin
log() { printf '\033[1m[nvidia-ctk]\033[0m %s\n' "$*"; }

if [ -x "$BIN/nvidia-ctk" ] && "$BIN/nvidia-ctk" --version 2>/dev/null | grep -q "version $NVIDIA_CTK_VERSION\b"; then
  log "nvidia-ctk $NVIDIA_CTK_VERSION present in $BIN"
  exit 0
fi
if ! command -v go >/dev/null; then
  echo "30-nvidia-ctk: Go is not installed; install Go >= 1.26 (https://go.dev/dl) and re-run scripts/bootstrap.sh" >&2
  exit 1
fi
mkdir -p "$BIN"
# cgo stays on: go-nvml dlopens libnvidia-ml through cgo (absent here, which management mode tolerates).
export CGO_ENABLED=1 GOTOOLCHAIN=local GOFLAGS=-mod=mod
# The toolkit's go.mod has no replace directives, so `go install module@version` builds the release.
# The version stamp is the one its Makefile sets (internal/info.version), so --version names it.
ldflags="-s -w -X github.com/NVIDIA/nvidia-container-toolkit/internal/info.version=$NVIDIA_CTK_VERSION"
log "building nvidia-ctk $NVIDIA_CTK_VERSION from the Go module proxy (a few minutes on 2 cores the first time)"
start=$SECONDS
tmp=$(mktemp -d "$BIN/.build.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
GOBIN=$tmp nice -n 10 go install -trimpath -ldflags "$ldflags" \
  "github.com/NVIDIA/nvidia-container-toolkit/cmd/nvidia-ctk@v$NVIDIA_CTK_VERSION"
mv "$tmp/nvidia-ctk" "$BIN/nvidia-ctk"
log "built nvidia-ctk $NVIDIA_CTK_VERSION in $((SECONDS - start)) s: $BIN/nvidia-ctk"
