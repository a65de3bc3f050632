"""Wire compatibility with the kubelet's own Go API package (k8s.io/kubelet deviceplugin/v1beta1).

``gokubelet/`` is a small Go program built from the kubelet's published stubs that plays the
kubelet's device manager; it registers our daemon, lists, asks for a preferred allocation,
allocates, and sends an unknown ID. If our .proto differed from the kubelet's in any field
number or type, the Go side would decode garbage or fail here. Building needs Go and the Go
module proxy (the bootstrap provides both for the Kubernetes build).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from fixtures.plugin import SIM_RESOURCE, PluginDaemon

GO_DIR = Path(__file__).parent / "gokubelet"


@pytest.mark.slow
def test_go_kubelet_drives_our_daemon(plugin_daemon: PluginDaemon, tmp_path: Path) -> None:
    go = shutil.which("go")
    assert go, "Go is required for this test (scripts/bootstrap.sh installs it)"
    binary = tmp_path / "gokubelet"
    env = {**os.environ, "GOFLAGS": "-mod=mod", "CGO_ENABLED": "0"}
    subprocess.run([go, "build", "-o", str(binary), "."], cwd=GO_DIR, env=env, check=True, timeout=540)

    proc = subprocess.run([str(binary), str(plugin_daemon.socket_dir), "10"], capture_output=True, text=True,
                          timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    seen = json.loads(proc.stdout)

    assert seen["resource"] == SIM_RESOURCE and seen["endpoint"] == "kubeaccel-example.com_sim.sock"
    assert seen["preferred_offered"] is True and seen["pre_start_required"] is False
    assert [(d["id"], d["numa"]) for d in seen["devices"]] == [("sim-0", [0]), ("sim-1", [0]), ("sim-2", [1]),
                                                                 ("sim-3", [1])]
    assert {d["health"] for d in seen["devices"]} == {"Healthy"}
    assert seen["preferred"] == ["sim-2", "sim-3"]  # must-include sim-3, same NUMA node
    # Asked for sim-1 and sim-0 in that order: answered in sorted order.
    assert seen["allocate_envs"] == {"KUBEACCEL_DEVICES_EXAMPLE_COM_SIM": "0,1"}
    assert [s.split("=")[0] for s in seen["allocate_devices"]] == ["/dev/sim-0", "/dev/sim-1"]
    assert all(s.endswith(":rw") for s in seen["allocate_devices"])
    assert seen["unknown_code"] == "InvalidArgument"
    assert "'no-such-device'" in seen["unknown_message"]
