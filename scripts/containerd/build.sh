#!/usr/bin/env bash
# Build the real node's container runtime from upstream Go modules, each into its own cache dir:
#   containerd, containerd-shim-runc-v2, ctr  -> $KUBEACCEL_CACHE/containerd/v<CONTAINERD_VERSION>/bin
#   runc (cgo + libseccomp)                   -> $KUBEACCEL_CACHE/runc/v<RUNC_VERSION>/bin
#   CNI plugins bridge/host-local/loopback/portmap -> $KUBEACCEL_CACHE/cni/v<CNI_PLUGINS_VERSION>/bin
# Versions come from src/kubeaccel/cluster/versions.env (the one place). Idempotent: whatever is
# present is kept; a binary is written under a temporary name and renamed, so an interrupted build
# leaves nothing half-made.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=../../src/kubeaccel/cluster/versions.env
source "$HERE/../../src/kubeaccel/cluster/versions.env"
CACHE=${KUBEACCEL_CACHE:-$HOME/.cache/kubeaccel}
CONTAINERD_BIN=$CACHE/containerd/v$CONTAINERD_VERSION/bin
RUNC_BIN=$CACHE/runc/v$RUNC_VERSION/bin
CNI_BIN=$CACHE/cni/v$CNI_PLUGINS_VERSION/bin
CONTAINERD_CMDS=(containerd containerd-shim-runc-v2 ctr)
CNI_PLUGINS=(main/bridge ipam/host-local main/loopback meta/portmap)
log() { printf '\033[1m[containerd]\033[0m %s\n' "$*"; }

missing=()
for b in "${CONTAINERD_CMDS[@]}"; do [ -x "$CONTAINERD_BIN/$b" ] || missing+=("$b"); done
[ -x "$RUNC_BIN/runc" ] || missing+=(runc)
for p in "${CNI_PLUGINS[@]}"; do [ -x "$CNI_BIN/${p#*/}" ] || missing+=("${p#*/}"); done
if ((${#missing[@]} == 0)); then
  log "binaries present (containerd v$CONTAINERD_VERSION, runc v$RUNC_VERSION, CNI plugins v$CNI_PLUGINS_VERSION)"
  exit 0
fi
if ! command -v go >/dev/null; then
  echo "containerd build: Go is not installed; install Go >= 1.26 (https://go.dev/dl) and re-run scripts/bootstrap.sh" >&2
  exit 1
fi
NICE=(nice -n 10)
export GOTOOLCHAIN=local GOFLAGS=-mod=mod

# go install pkg@version builds each module exactly as its go.mod says (none of the three has replace
# directives). It installs into GOBIN; a temporary GOBIN then a rename keeps the cache all-or-nothing.
install_into() {  # install_into DEST_DIR MODULE@VERSION-PACKAGES... (all of one module)
  local dest=$1; shift
  local tmp
  tmp=$(mktemp -d)
  GOBIN=$tmp "${NICE[@]}" go install -trimpath "$@"
  mkdir -p "$dest"
  for f in "$tmp"/*; do mv -f "$f" "$dest/"; done
  rmdir "$tmp"
}

need=0
for b in "${CONTAINERD_CMDS[@]}"; do [ -x "$CONTAINERD_BIN/$b" ] || need=1; done
if ((need)); then
  log "building containerd, containerd-shim-runc-v2, ctr v$CONTAINERD_VERSION (a few minutes on 2 cores)"
  start=$SECONDS
  mod=github.com/containerd/containerd/v2
  # Static, cgo-free (the btrfs snapshotter, the only cgo user, drops out; the node uses overlayfs).
  # The shim never serves gRPC to containerd (ttrpc), as upstream's Makefile builds it.
  CGO_ENABLED=0 install_into "$CONTAINERD_BIN" -tags "urfave_cli_no_docs" \
    -ldflags "-s -w -X $mod/version.Version=v$CONTAINERD_VERSION" \
    "$mod/cmd/containerd@v$CONTAINERD_VERSION" "$mod/cmd/ctr@v$CONTAINERD_VERSION"
  CGO_ENABLED=0 install_into "$CONTAINERD_BIN" -tags "urfave_cli_no_docs no_grpc" \
    -ldflags "-s -w -X $mod/version.Version=v$CONTAINERD_VERSION" \
    "$mod/cmd/containerd-shim-runc-v2@v$CONTAINERD_VERSION"
  log "built containerd in $((SECONDS - start)) s"
fi

if [ ! -x "$RUNC_BIN/runc" ]; then
  # runc's nsenter is C (cgo is required), and seccomp filters need libseccomp's headers to build.
  if [ ! -f /usr/include/seccomp.h ] || ! command -v gcc >/dev/null; then
    echo "containerd build: runc needs gcc and libseccomp's headers; apt-get install gcc libseccomp-dev" >&2
    exit 1
  fi
  log "building runc v$RUNC_VERSION (cgo, seccomp)"
  start=$SECONDS
  # Not the libpathrs tag: that links a Rust library; runc's pure-Go path fallback is used instead.
  CGO_ENABLED=1 install_into "$RUNC_BIN" -tags "seccomp urfave_cli_no_docs" \
    -ldflags "-s -w -X main.version=$RUNC_VERSION" "github.com/opencontainers/runc@v$RUNC_VERSION"
  log "built runc in $((SECONDS - start)) s"
fi

need=0
for p in "${CNI_PLUGINS[@]}"; do [ -x "$CNI_BIN/${p#*/}" ] || need=1; done
if ((need)); then
  log "building CNI plugins v$CNI_PLUGINS_VERSION (${CNI_PLUGINS[*]})"
  start=$SECONDS
  pkgs=()
  for p in "${CNI_PLUGINS[@]}"; do pkgs+=("github.com/containernetworking/plugins/plugins/$p@v$CNI_PLUGINS_VERSION"); done
  CGO_ENABLED=0 install_into "$CNI_BIN" -ldflags "-s -w" "${pkgs[@]}"
  log "built CNI plugins in $((SECONDS - start)) s"
fi
log "binaries ready: $CONTAINERD_BIN, $RUNC_BIN, $CNI_BIN"
