"""End to end on the real node: kubeaccel's plugin allocates (simulated) VEs through the real kubelet,
``kubeaccel spark submit`` runs the example app in the locally built image, and every task reports
exactly the devices its executor pod was given.

Set-up, all real: the session's control plane and real node (H3's ``real_node`` fixture), the image
archive built by ``deploy/spark/build_image.py`` and imported into the node's containerd, the
plugin daemon (``kubeaccel plugin run``) serving ``nec.com/ve`` on simulated devices in the
kubelet's device-plugin dir, and a tenant namespace from ``kubeaccel tenant create``.

The local control plane has no cluster DNS and its API server listens on 127.0.0.1 only, so the
driver runs on the host network (a driver pod template) and advertises its pod IP to executors
(``KUBEACCEL_DRIVER_HOST=pod-ip``, handled by the image's entrypoint); executors use the pod network.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from e2e.apps import REPO, pi_estimate, task_reports

from kubeaccel.demo.common import app_confs

pytestmark = [pytest.mark.real_node, pytest.mark.spark, pytest.mark.slow]

KUBEACCEL = str(Path(sys.executable).with_name("kubeaccel"))
RESOURCE = "nec.com/ve"
SIM_DEVICES = 4
DEVICE_PLUGIN_DIR = Path("/var/lib/kubelet/device-plugins")


def kubeaccel(
    *args: str, kubeconfig: Path, timeout: float = 120, check: bool = True
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "KUBECONFIG": str(kubeconfig)}
    done = subprocess.run([KUBEACCEL, *args], env=env, capture_output=True, text=True, timeout=timeout, check=False)
    if check:
        assert done.returncode == 0, f"kubeaccel {' '.join(args)} -> {done.returncode}\n{done.stderr}\n{done.stdout}"
    return done


@pytest.fixture(scope="module")
def spark_image(real_node: Any) -> str:
    done = subprocess.run(
        [sys.executable, str(REPO / "deploy/spark/build_image.py"), "--json"],
        capture_output=True, text=True, timeout=900, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    built = json.loads(done.stdout)
    real_node.import_image(Path(built["archive"]))
    return str(built["image"])


def _allocatable(real_node: Any) -> str:
    out = real_node.cluster.kubectl("get", "node", real_node.node_name, "-o", "json").stdout
    return str(json.loads(out)["status"].get("allocatable", {}).get(RESOURCE, "0"))


@pytest.fixture(scope="module")
def ve_plugin(real_node: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """``kubeaccel plugin run`` serving simulated ``nec.com/ve`` to the real kubelet."""
    root = tmp_path_factory.mktemp("ve-plugin")
    config = root / "plugin.yaml"
    resource = {"name": RESOURCE, "backend": "simulated", "count": SIM_DEVICES, "numaNodes": 2}
    resource["stateFile"] = str(root / "state.json")
    config.write_text(yaml.safe_dump({"resources": [resource]}))
    log = root / "plugin.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [KUBEACCEL, "plugin", "run", "--config", str(config), "--socket-dir", str(DEVICE_PLUGIN_DIR)],
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 90
        while _allocatable(real_node) != str(SIM_DEVICES):
            assert proc.poll() is None, f"plugin exited:\n{log.read_text()}"
            assert time.monotonic() < deadline, f"node never showed {RESOURCE}={SIM_DEVICES}:\n{log.read_text()}"
            time.sleep(1)
        yield log
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)


def _pods(real_node: Any, namespace: str, selector: str) -> list[dict[str, Any]]:
    out = real_node.cluster.kubectl("get", "pods", "-n", namespace, "-l", selector, "-o", "json").stdout
    items: list[dict[str, Any]] = json.loads(out)["items"]
    return items


def test_pi_on_the_real_node_gets_the_allocated_ves(
    real_node: Any, spark_image: str, ve_plugin: Path, tmp_path: Path
) -> None:
    kubeconfig = real_node.kubeconfig
    namespace = f"e2e-{uuid.uuid4().hex[:6]}"
    # the driver uses the host network, which Pod Security "baseline" (the tenant default) refuses
    kubeaccel("tenant", "create", namespace, "--pod-security", "privileged", kubeconfig=kubeconfig)
    template = tmp_path / "driver-template.yaml"
    template.write_text(
        yaml.safe_dump(
            {"apiVersion": "v1", "kind": "Pod", "spec": {"hostNetwork": True, "dnsPolicy": "ClusterFirstWithHostNet"}}
        )
    )
    # The documented confs (the demo uses the same): VEs per executor, discovery by kubeaccel, real node.
    confs = app_confs(
        namespace=namespace,
        image=spark_image,
        node=real_node.node_name,
        server=real_node.cluster.server,
        template=template,
        executors=2,
    )
    conf_args = [arg for key, value in confs.items() for arg in ("--conf", f"{key}={value}")]
    submitted = kubeaccel(
        "spark", "submit", "--master", f"k8s://{real_node.cluster.server}", "--name", "accel-pi",
        *conf_args, "-o", "json", "--wait", "local:///opt/kubeaccel/examples/accel_pi.py", "8", "ve",
        kubeconfig=kubeconfig, timeout=480, check=False,
    )  # fmt: skip
    # stdout starts with the submission as JSON (then --wait follows the driver).
    sid = json.JSONDecoder().raw_decode(submitted.stdout.lstrip() or "{}")[0].get("id")
    if submitted.returncode != 0:
        logs = kubeaccel("spark", "logs", sid, kubeconfig=kubeconfig, check=False).stdout if sid else ""
        pods = real_node.cluster.kubectl("get", "pods", "-n", namespace, "-o", "wide", check=False).stdout
        pytest.fail(f"app failed ({submitted.returncode}):\n{submitted.stderr}\n{pods}\n{logs[-6000:]}")

    out = kubeaccel("spark", "logs", sid, kubeconfig=kubeconfig).stdout
    assert abs(pi_estimate(out) - 3.14159) < 0.05
    reports = task_reports(out)
    assert sorted(r["partition"] for r in reports) == list(range(8))
    by_executor: dict[str, set[str]] = {}
    for report in reports:
        allocated = report["env"]["KUBEACCEL_DEVICES_NEC_COM_VE"].split(",")
        # The task holds one VE, and it is one the plugin's Allocate gave this executor's container.
        (address,) = report["resources"]["ve"]
        assert [address] == allocated, report
        assert address in {str(i) for i in range(SIM_DEVICES)}
        by_executor.setdefault(report["executor"], set()).add(address)
    assert len(by_executor) == 2, by_executor
    # Two executor pods, two different devices.
    assert len(set().union(*by_executor.values())) == 2, by_executor

    deadline = time.monotonic() + 120
    while _pods(real_node, namespace, "spark-role=executor") and time.monotonic() < deadline:
        time.sleep(2)
    assert _pods(real_node, namespace, "spark-role=executor") == [], "executor pods were not removed"
    (driver,) = _pods(real_node, namespace, "spark-role=driver")
    assert driver["status"]["phase"] == "Succeeded"
    status = kubeaccel("spark", "status", sid, "-o", "json", kubeconfig=kubeconfig).stdout
    assert json.loads(status)["apps"][0]["phase"] == "Succeeded"
    real_node.cluster.kubectl("delete", "namespace", namespace, "--wait=false", check=False)
