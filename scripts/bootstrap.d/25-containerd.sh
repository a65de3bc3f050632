#!/usr/bin/env bash
# Builds the real node's container runtime from upstream Go modules into ~/.cache/kubeaccel:
# containerd 2 (with its runc shim and ctr), runc and the CNI plugins (versions in
# src/kubeaccel/cluster/versions.env). Idempotent: when every binary is present the step returns at once.
set -euo pipefail
ROOT=${ROOT:-$(cd "$(dirname "$0")/../.." && pwd)}
exec bash "$ROOT/scripts/containerd/build.sh" "$@"
