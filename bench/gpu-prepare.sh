#!/usr/bin/env bash
# Fill .gpu/ (git-ignored) with what bench/gpu.sh carries to a GPU machine that has no network.
# Usage: bench/gpu-prepare.sh NVIDIA_DEVICE_PLUGIN_BINARY
#   NVIDIA_DEVICE_PLUGIN_BINARY: NVIDIA/k8s-device-plugin's `nvidia-device-plugin` (v0.20.0 was
#   measured), built by you from its source for x86-64; it is copied, never built here.
# Fills:
#   .gpu/nvidia-device-plugin  that binary
#   .gpu/nvidia-ctk            the NVIDIA Container Toolkit CLI, the one scripts/bootstrap.d/30-nvidia-ctk.sh
#                              builds from the Go module proxy (for `cdi generate` and as the CDI hook)
#   .gpu/whl/                  kubeaccel's runtime wheels for the GPU machine's Python (3.12, x86-64)
# Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -eq 1 ] && [ -x "$1" ] || { echo "usage: $0 NVIDIA_DEVICE_PLUGIN_BINARY (an executable file)" >&2; exit 2; }
PY_VERSION=${GPU_PYTHON_VERSION:-3.12}
mkdir -p .gpu/whl
grep -qx '/.gpu/' .git/info/exclude 2>/dev/null || echo '/.gpu/' >>.git/info/exclude
cp "$1" .gpu/nvidia-device-plugin

bash scripts/bootstrap.d/30-nvidia-ctk.sh
version=$(sed -n 's/^NVIDIA_CTK_VERSION=\${NVIDIA_CTK_VERSION:-\([0-9.]*\)}.*/\1/p' scripts/bootstrap.d/30-nvidia-ctk.sh)
cp "${KUBEACCEL_NVIDIA_CTK_CACHE:-$HOME/.cache/kubeaccel/nvidia-ctk}/v$version/bin/nvidia-ctk" .gpu/nvidia-ctk

# kubeaccel's runtime needs for the plugin and DRA commands, at the versions this checkout's .venv
# runs (the GPU machine already has torch, nvidia-ml-py, rich and prometheus-client).
pins=()
for dist in grpcio protobuf pydantic pydantic_core annotated-types typing-inspection typing_extensions \
  inotify_simple click PyYAML; do
  pins+=("$dist==$(.venv/bin/python -c "import importlib.metadata as m, sys; print(m.version(sys.argv[1]))" "$dist")")
done
python3 -m pip download -q --no-deps --only-binary=:all: --python-version "$PY_VERSION" --implementation cp \
  --platform manylinux_2_34_x86_64 --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform any -d .gpu/whl "${pins[@]}"
du -sh .gpu
