"""The ``dra_node`` fixture: the real DRA daemon in-process on temp kubelet directories (see dra/node.py)."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from dra.node import DRIVER, SIM, DraNode, make_node
from fixtures.cluster import RealNode

from kubeaccel.dra.daemon import KubeAccess, Options


@pytest.fixture
def dra_node() -> Iterator[DraNode]:
    node = make_node()
    node.start()
    try:
        yield node
    finally:
        node.stop()
        shutil.rmtree(node.base, ignore_errors=True)


@pytest.fixture(scope="module")
def real_dra(real_node: RealNode) -> Iterator[DraNode]:
    """Our driver on the real node: the kubelet's own plugin directories, the node runtime's CDI dir."""
    base = Path(tempfile.mkdtemp(prefix="kdra-real-"))
    (base / "dev").mkdir()
    state_file = base / "state.json"
    config_path = base / "config.yaml"
    config_path.write_text(yaml.safe_dump({"resources": [{
        "name": SIM, "backend": "simulated", "count": 4, "numaNodes": 2,
        "stateFile": str(state_file), "deviceDir": str(base / "dev")}]}))
    real_node.plugins_registry.mkdir(parents=True, exist_ok=True)
    real_node.kubelet_plugins.mkdir(parents=True, exist_ok=True)
    options = Options(node=real_node.node_name, driver=DRIVER, registry_dir=real_node.plugins_registry,
                      plugins_dir=real_node.kubelet_plugins, state_dir=base / "state", cdi_dir=real_node.cdi_dir,
                      device_classes=True, withdraw=True)
    node = DraNode(base, options, config_path, state_file, KubeAccess(real_node.cluster.kubeconfig))
    node.start()
    try:
        yield node
    finally:
        node.stop()
        shutil.rmtree(base, ignore_errors=True)
