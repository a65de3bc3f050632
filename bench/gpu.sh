#!/usr/bin/env bash
# kubeaccel on a machine with an NVIDIA GPU, beside NVIDIA's own device plugin (see bench/gpu.py).
# Downloads nothing: it needs, under .gpu/ (git-ignored, carried with the checkout):
#   .gpu/whl/*.whl                 kubeaccel's runtime wheels for the machine's Python
#   .gpu/nvidia-device-plugin      NVIDIA/k8s-device-plugin's binary (v0.20.0 measured)
#   .gpu/nvidia-ctk                the NVIDIA Container Toolkit CLI (Go module, for `cdi generate`)
# bench/gpu-prepare.sh NVIDIA_PLUGIN_BINARY fills .gpu/ (it copies NVIDIA's plugin, which you build from its
# source; nothing of NVIDIA's plugin is built or kept in this repository).
# Output: one table on stdout; raw outputs under $OUT (default /tmp/gpu-bench).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/gpu-bench}
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-cache-dir --upgrade --target /tmp/kubeaccel-site \
  .gpu/whl/*.whl || exit 1
export PYTHONPATH="$PWD/src:/tmp/kubeaccel-site" PYTHONUNBUFFERED=1
# Bytecode as an installed package has it (pip compiles; the plugin image is built with it).
python3 -m compileall -q -j 0 src /tmp/kubeaccel-site >/dev/null || exit 1
chmod +x .gpu/nvidia-device-plugin .gpu/nvidia-ctk 2>/dev/null
exec python3 bench/gpu.py --nvidia-plugin .gpu/nvidia-device-plugin --nvidia-ctk .gpu/nvidia-ctk --out "$OUT" "$@"
