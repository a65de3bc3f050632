#!/usr/bin/env bash
# The kubeaccel device-plugin image as an OCI archive in ~/.cache/kubeaccel/images (no registry, no
# Docker engine: Debian packages + pip, see deploy/plugin/build_image.py). Cached by content: a no-op
# when nothing that goes into the image changed. The Helm tests and `kubeaccel demo` import it into
# the real node's containerd themselves.
set -euo pipefail
cd "${ROOT:-$(dirname "$0")/../..}"
if [ "$(id -u)" != 0 ]; then
  echo "55-plugin-image: not root, so the device-plugin image is not built (the real-node tests and the demo need root)" >&2
  exit 0
fi
nice -n 10 .venv/bin/python deploy/plugin/build_image.py
