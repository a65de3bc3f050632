"""Where the kubelet's device-plugin files live: constants only, cheap to import (the CLI needs them
before anything heavy is loaded)."""

from __future__ import annotations

from pathlib import Path

DEFAULT_SOCKET_DIR = Path("/var/lib/kubelet/device-plugins")
KUBELET_SOCKET = "kubelet.sock"
# The kubelet's PodResources API (which container holds which device).
DEFAULT_POD_RESOURCES_SOCKET = Path("/var/lib/kubelet/pod-resources/kubelet.sock")
