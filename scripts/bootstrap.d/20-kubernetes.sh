#!/usr/bin/env bash
# Builds the upstream Kubernetes server binaries (kube-apiserver, kube-controller-manager,
# kube-scheduler, kubelet) and kwok from the Go module proxy into a cache outside the repo, so
# that `kubeaccel cluster up` and the cluster fixtures run a real control plane. Idempotent:
# when every binary is present the step returns at once. Go's module and build caches are reused.
set -euo pipefail
ROOT=${ROOT:-$(cd "$(dirname "$0")/../.." && pwd)}
exec bash "$ROOT/scripts/k8s/build.sh" "$@"
