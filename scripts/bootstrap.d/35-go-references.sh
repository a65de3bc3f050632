#!/usr/bin/env bash
# The Go references the conformance checkers are tested against, built from this repository's own
# Go sources into ~/.cache/kubeaccel/<name>/<source hash>/<name>:
#   bench/goplugin   a device plugin written the way Go plugins are (plain Go errors, a server restarted
#                    when kubelet.sock appears); also the benchmark's Go peer (bench/plugin.py, same path)
#   tests/dra/godriver  a DRA driver on the upstream kubelet-plugin helper
#                    (k8s.io/dynamic-resource-allocation/kubeletplugin at the cluster's version)
# The hash is sha256 over go.mod, go.sum and the .go files (sorted), first 16 hex digits: a changed
# source gets a new binary and tests find it (tests/fixtures/goref.py computes the same). Idempotent:
# a no-op when each binary is there. Tests never build: they fail naming this script when one is missing.
set -euo pipefail
ROOT=${ROOT:-$(cd "$(dirname "$0")/../.." && pwd)}
CACHE=${KUBEACCEL_CACHE:-$HOME/.cache/kubeaccel}
log() { printf '\033[1m[go-references]\033[0m %s\n' "$*"; }

source_hash() {  # the files in the order tests/fixtures/goref.py reads them
  (cd "$1" && cat go.mod go.sum $(ls *.go | LC_ALL=C sort)) | sha256sum | cut -c1-16
}

build() {  # build SOURCE_DIR NAME
  local src=$ROOT/$1 name=$2
  [ -f "$src/go.mod" ] || { log "no $1 here: skipped"; return 0; }
  local out=$CACHE/$name/$(source_hash "$src")
  if [ -x "$out/$name" ]; then
    log "$name present: $out/$name"
    return 0
  fi
  if ! command -v go >/dev/null; then
    echo "35-go-references: Go is not installed; install Go >= 1.26 and re-run scripts/bootstrap.sh" >&2
    exit 1
  fi
  mkdir -p "$out"
  log "building $name from $1 (module proxy; a few minutes on 2 cores the first time)"
  local start=$SECONDS tmp
  tmp=$(mktemp "$out/.build.XXXXXX")
  (cd "$src" && GOTOOLCHAIN=local GOFLAGS="-mod=mod -buildvcs=false" CGO_ENABLED=0 nice -n 10 go build -trimpath -o "$tmp" .)
  mv "$tmp" "$out/$name"
  log "built $name in $((SECONDS - start)) s: $out/$name"
}

build bench/goplugin goplugin
build tests/dra/godriver godriver
