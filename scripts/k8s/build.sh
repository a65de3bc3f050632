#!/usr/bin/env bash
# Build kube-apiserver, kube-controller-manager, kube-scheduler, kubelet (k8s.io/kubernetes at
# KUBE_VERSION), kubectl, kwok (KWOK_VERSION) and etcd (ETCD_VERSION) into
# $KUBEACCEL_K8S_CACHE/v<KUBE_VERSION>/bin. The versions are set in one place,
# src/kubeaccel/cluster/versions.env, which kubeaccel.cluster.versions reads too.
#
# `go install k8s.io/kubernetes/cmd/...@vX` is refused because k8s.io/kubernetes points its
# staging modules (k8s.io/api, client-go, ...) at ./staging with replace directives. A throw-away
# main module that requires k8s.io/kubernetes and replaces every staging module with the published
# v0.<minor>.<patch> tag builds the same code. From v1.27 on, the generated code is committed, so
# no code generation is needed.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=../../src/kubeaccel/cluster/versions.env
source "$HERE/../../src/kubeaccel/cluster/versions.env"
CACHE=${KUBEACCEL_K8S_CACHE:-${KUBEACCEL_CACHE:-$HOME/.cache/kubeaccel}/k8s}
BIN=$CACHE/v$KUBE_VERSION/bin
KUBE_BINS=(kube-apiserver kube-controller-manager kube-scheduler kubelet)
# kubectl is always built: the tests drive the cluster with it, and a machine's own may be outside the version skew.
KUBE_BINS+=(kubectl)
log() { printf '\033[1m[kubernetes]\033[0m %s\n' "$*"; }

missing=()
for b in "${KUBE_BINS[@]}" kwok etcd; do [ -x "$BIN/$b" ] || missing+=("$b"); done
if ((${#missing[@]} == 0)); then
  log "binaries present in $BIN"
  exit 0
fi

if ! command -v go >/dev/null; then
  echo "kubernetes build: Go is not installed; install Go >= 1.23 (https://go.dev/dl) and re-run scripts/bootstrap.sh" >&2
  exit 1
fi
mkdir -p "$BIN"
# Be gentle with a shared machine: lower priority, and builds use the CPUs Go finds anyway.
NICE=(nice -n 10)
export GOFLAGS=-mod=mod CGO_ENABLED=0 GOTOOLCHAIN=local

need_kube=0
for b in "${KUBE_BINS[@]}"; do [ -x "$BIN/$b" ] || need_kube=1; done
if ((need_kube)); then
  MOD=$CACHE/v$KUBE_VERSION/src
  mkdir -p "$MOD"
  minor_patch=${KUBE_VERSION#*.}   # 32.5
  minor=${minor_patch%%.*}         # 32
  staging_version=v0.$minor_patch
  if [ ! -f "$MOD/go.mod.done" ]; then
    log "preparing build module for k8s.io/kubernetes v$KUBE_VERSION in $MOD"
    proxy=$(go env GOPROXY | tr ',|' '\n\n' | grep -E '^https?://' | head -1)
    upstream_mod=$(curl -fsSL "$proxy/k8s.io/kubernetes/@v/v$KUBE_VERSION.mod")
    {
      echo "module kubeaccel.local/k8sbuild"
      echo
      # The main module's go line sets GODEBUG defaults; keep upstream's.
      echo "$upstream_mod" | grep -m1 -E '^go '
      echo
      echo "require k8s.io/kubernetes v$KUBE_VERSION"
      echo
      echo "replace ("
      echo "$upstream_mod" | sed -n -E 's#^[[:space:]]*(k8s\.io/[A-Za-z0-9._-]+) => \./staging/src/.*#\t\1 => \1 '"$staging_version"'#p'
      echo ")"
    } >"$MOD/go.mod"
    cat >"$MOD/tools.go" <<'GO'
//go:build tools

// Package k8sbuild only exists so that `go build` can resolve the upstream commands.
package k8sbuild

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubelet"
)
GO
    (cd "$MOD" && log "resolving modules (downloads on first run)" && "${NICE[@]}" go mod tidy -e >/dev/null 2>&1 || true)
    (cd "$MOD" && "${NICE[@]}" go mod download k8s.io/kubernetes)
    touch "$MOD/go.mod.done"
  fi
  # Version stamps so `kubectl version` and node status report the real release, not v0.0.0.
  vpkg=k8s.io/component-base/version
  cpkg=k8s.io/client-go/pkg/version
  ldflags="-s -w"
  for p in $vpkg $cpkg; do
    ldflags+=" -X $p.gitVersion=v$KUBE_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$minor -X $p.gitTreeState=clean -X $p.buildDate=1970-01-01T00:00:00Z"
  done
  for b in "${KUBE_BINS[@]}"; do
    [ -x "$BIN/$b" ] && continue
    log "building $b v$KUBE_VERSION (several minutes on 2 cores the first time)"
    start=$SECONDS
    (cd "$MOD" && "${NICE[@]}" go build -trimpath -ldflags "$ldflags" -o "$BIN/$b.tmp" "k8s.io/kubernetes/cmd/$b")
    mv "$BIN/$b.tmp" "$BIN/$b"
    log "built $b in $((SECONDS - start)) s"
  done
fi

if [ ! -x "$BIN/kwok" ]; then
  log "building kwok v$KWOK_VERSION"
  start=$SECONDS
  tmp=$(mktemp -d)
  GOBIN=$tmp "${NICE[@]}" go install -trimpath -ldflags "-s -w" "sigs.k8s.io/kwok/cmd/kwok@v$KWOK_VERSION"
  mv "$tmp/kwok" "$BIN/kwok"
  rmdir "$tmp"
  log "built kwok in $((SECONDS - start)) s"
fi
if [ ! -x "$BIN/etcd" ]; then
  # go.etcd.io/etcd/server/v3 (its main package is the etcd server) has replace directives too, which
  # only bind in its own module: required from a throw-away module, its dependencies resolve normally.
  log "building etcd v$ETCD_VERSION"
  start=$SECONDS
  EMOD=$CACHE/etcd-v$ETCD_VERSION/src
  mkdir -p "$EMOD"
  printf 'module kubeaccel.local/etcdbuild\n\ngo 1.23.0\n\nrequire go.etcd.io/etcd/server/v3 v%s\n' "$ETCD_VERSION" >"$EMOD/go.mod"
  printf '//go:build tools\n\npackage etcdbuild\n\nimport _ "go.etcd.io/etcd/server/v3"\n' >"$EMOD/tools.go"
  (cd "$EMOD" && "${NICE[@]}" go mod tidy -e >/dev/null 2>&1 || true)
  (cd "$EMOD" && "${NICE[@]}" go build -trimpath -ldflags "-s -w" -o "$BIN/etcd.tmp" go.etcd.io/etcd/server/v3)
  mv "$BIN/etcd.tmp" "$BIN/etcd"
  log "built etcd in $((SECONDS - start)) s"
fi
log "binaries ready in $BIN"
