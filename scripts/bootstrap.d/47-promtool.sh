#!/usr/bin/env bash
# promtool, built from Prometheus' Go module (github.com/prometheus/prometheus, whose v0.3XX.Y module
# versions are the Prometheus 3.X.Y releases) into ~/.cache/kubeaccel/promtool/<version>/bin/promtool:
# tests/view checks the chart's alert rules and dashboard PromQL with `promtool check rules` and
# unit-tests the alerts with `promtool test rules`. Idempotent: a no-op when the binary is there.
set -euo pipefail
PROMETHEUS_MODULE_VERSION=${PROMETHEUS_MODULE_VERSION:-0.316.0}
CACHE=${KUBEACCEL_PROMTOOL_CACHE:-$HOME/.cache/kubeaccel/promtool}
BIN=$CACHE/v$PROMETHEUS_MODULE_VERSION/bin
log() { printf '\033[1m[promtool]\033[0m %s\n' "$*"; }

if [ -x "$BIN/promtool" ] && "$BIN/promtool" --version >/dev/null 2>&1; then
  log "promtool (module v$PROMETHEUS_MODULE_VERSION) present in $BIN"
  exit 0
fi
if ! command -v go >/dev/null; then
  echo "47-promtool: Go is not installed; install Go >= 1.26 (https://go.dev/dl) and re-run scripts/bootstrap.sh" >&2
  exit 1
fi
mkdir -p "$BIN"
export CGO_ENABLED=0 GOTOOLCHAIN=local GOFLAGS=-mod=mod
log "building promtool from github.com/prometheus/prometheus@v$PROMETHEUS_MODULE_VERSION (minutes the first time)"
start=$SECONDS
tmp=$(mktemp -d "$BIN/.build.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
GOBIN=$tmp nice -n 10 go install -trimpath -ldflags "-s -w" \
  "github.com/prometheus/prometheus/cmd/promtool@v$PROMETHEUS_MODULE_VERSION"
mv "$tmp/promtool" "$BIN/promtool"
log "built promtool in $((SECONDS - start)) s: $BIN/promtool"
