#!/usr/bin/env bash
# The kubeaccel Spark image as an OCI archive in ~/.cache/kubeaccel/images (no registry, no Docker
# engine: Debian packages + pyspark from the venv). Cached by content: a no-op when nothing changed.
# The tests and `kubeaccel demo` import it into the real node's containerd themselves.
set -euo pipefail
cd "${ROOT:-$(dirname "$0")/../..}"
if [ "$(id -u)" != 0 ]; then
  echo "50-spark-image: not root, so the Spark image is not built (the real-node tests and the demo need root)" >&2
  exit 0
fi
.venv/bin/python deploy/spark/build_image.py --keep-rootfs
