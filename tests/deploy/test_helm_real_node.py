"""The chart on the real node (tier 2: kubelet + containerd), as an operator runs it.

``helm install`` → the DaemonSet pod, running the locally built image with every capability
dropped and a read-only root, registers with the real kubelet and the node's allocatable shows the
devices; a pod asking for one starts and sees the env and device node our Allocate gave it →
``helm upgrade`` with a changed config rolls the pod and allocatable follows → ``helm uninstall``
→ allocatable drops to 0. The default config's ``optional: true`` nvidia resource rides along (no
driver here), proving a skipped optional resource next to another works in the chart.
With ``cdi: true`` the plugin writes its CDI spec into the host's /var/run/cdi and the container
gets its device nodes and env from that spec, applied by containerd, not from DeviceSpecs.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from deploy.chart import CHART, helm, image_builder
from fixtures.cluster import LocalCluster, RealNode, wait_for

from kubeaccel.cluster.images import BUSYBOX_IMAGE

pytestmark = [pytest.mark.real_node, pytest.mark.cluster, pytest.mark.slow]
RESOURCE = "nec.com/ve"
RELEASE = "kubeaccel-test"
NAMESPACE = "kube-system"
SIM_DEV = Path("/dev/kubeaccel-test-sim")  # the simulated devices' nodes, made on the host as a driver would
CDI_DIR = Path("/var/run/cdi")


@pytest.fixture(scope="module")
def plugin_image(real_node: RealNode) -> str:
    """The device-plugin image, built without Docker (cached by content) and imported into the node's containerd."""
    built = image_builder().build()
    real_node.import_image(Path(built["archive"]))
    return str(built["image"])


@pytest.fixture(scope="module")
def sim_dev() -> Iterator[Path]:
    """Character devices (/dev/null's numbers) standing in for accelerator nodes. Made here, as root, so
    the plugin needs no CAP_MKNOD: in production the driver creates /dev nodes, not the plugin."""
    SIM_DEV.mkdir(exist_ok=True)
    for i in range(4):
        node = SIM_DEV / f"sim-{i}"
        if not node.is_char_device():
            os.mknod(node, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    yield SIM_DEV
    shutil.rmtree(SIM_DEV, ignore_errors=True)


def values(image: str, node: str, count: int, **resource: Any) -> dict[str, Any]:
    repository, _, tag = image.rpartition(":")
    sim = {"name": RESOURCE, "backend": "simulated", "count": count, "numaNodes": 2, "deviceDir": str(SIM_DEV)}
    return {
        "image": {"repository": repository, "tag": tag, "pullPolicy": "Never"},
        "config": {
            "resources": [{**sim, **resource}, {"name": "nvidia.com/gpu", "backend": "nvidia", "optional": True}]
        },
        "nodeSelector": {"kubernetes.io/hostname": node},  # the kwok nodes have no kubelet
        "logLevel": "debug",
    }


def helm_on(real_node: RealNode, *args: str, vals: dict[str, Any] | None = None) -> str:
    """helm against the session cluster. Installs and upgrades do not --wait: ``wait_for_plugin`` waits,
    watching the node's allocatable too, and shows the pods and their logs when it times out."""
    extra = ["--values", "-"] if vals is not None else []
    return helm(f"--kubeconfig={real_node.kubeconfig}", *args, *extra,
                stdin=yaml.safe_dump(vals) if vals is not None else None).stdout  # fmt: skip


def allocatable(cluster: LocalCluster, node: str, resource: str = RESOURCE) -> str:
    path = "{.status.allocatable." + resource.replace(".", "\\.") + "}"
    return cluster.kubectl("get", "node", node, "-o", f"jsonpath={path}").stdout or "0"


def plugin_pods(cluster: LocalCluster) -> list[dict[str, Any]]:
    out = cluster.kubectl("get", "pods", "-n", NAMESPACE, "-l", f"app.kubernetes.io/instance={RELEASE}", "-o", "json")
    return [p for p in json.loads(out.stdout)["items"] if not p["metadata"].get("deletionTimestamp")]


def ready_pod(cluster: LocalCluster) -> dict[str, Any] | None:
    for pod in plugin_pods(cluster):
        statuses = pod.get("status", {}).get("containerStatuses", [])
        if statuses and all(s.get("ready") for s in statuses):
            return pod
    return None


def describe(cluster: LocalCluster) -> str:
    pods = cluster.kubectl("describe", "pods", "-n", NAMESPACE, "-l", f"app.kubernetes.io/instance={RELEASE}",
                           check=False).stdout  # fmt: skip
    logs = cluster.kubectl("logs", "-n", NAMESPACE, "-l", f"app.kubernetes.io/instance={RELEASE}", "--tail=40",
                           check=False)  # fmt: skip
    return f"{pods[-3000:]}\n--- logs ---\n{logs.stdout}{logs.stderr}"


def wait_for_plugin(cluster: LocalCluster, node: str, want: str, timeout: float = 180) -> dict[str, Any]:
    try:
        wait_for(
            f"{RESOURCE}={want} from a ready plugin pod",
            lambda: allocatable(cluster, node) == want and ready_pod(cluster) is not None,
            timeout=timeout,
        )
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{describe(cluster)}") from None
    pod = ready_pod(cluster)
    assert pod is not None
    return pod


def plugin_process(pod: dict[str, Any]) -> int:
    """The host PID of the plugin daemon in ``pod`` (found by its command line and the pod's cgroup)."""
    uid = pod["metadata"]["uid"]
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes()
            cgroup = (proc / "cgroup").read_text()
        except OSError:
            continue
        if b"kubeaccel.cli\0plugin\0run" in cmdline and (uid in cgroup or uid.replace("-", "_") in cgroup):
            return int(proc.name)
    raise AssertionError(f"no plugin process of pod {pod['metadata']['name']} on this host")


def consumer(cluster: LocalCluster, ns: str, node: str, name: str, command: str) -> list[str]:
    """A pod asking for one device: it must start, and its output is returned."""
    cluster.apply(json.dumps({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
        "spec": {"nodeName": node, "restartPolicy": "Never", "terminationGracePeriodSeconds": 1,
                 "containers": [{"name": "main", "image": BUSYBOX_IMAGE, "imagePullPolicy": "Never",
                                 "command": ["sh", "-c", command], "resources": {"limits": {RESOURCE: "1"}}}]},
    }), ns)  # fmt: skip

    def phase() -> str:
        return cluster.kubectl("get", "pod", name, "-n", ns, "-o", "jsonpath={.status.phase}").stdout

    wait_for(f"pod {name} finished", lambda: phase() in ("Succeeded", "Failed"), timeout=120)
    logs = cluster.kubectl("logs", name, "-n", ns).stdout
    assert phase() == "Succeeded", logs
    return logs.splitlines()


@pytest.fixture
def release(real_node: RealNode) -> Iterator[None]:
    yield
    helm_on(real_node, "uninstall", RELEASE, "-n", NAMESPACE, "--ignore-not-found", "--wait")


def test_install_upgrade_uninstall_with_least_privilege(
    real_node: RealNode, plugin_image: str, sim_dev: Path, release: None
) -> None:
    cluster, node = real_node.cluster, real_node.node_name
    helm_on(real_node, "install", RELEASE, str(CHART), "-n", NAMESPACE,
            vals=values(plugin_image, node, count=2))  # fmt: skip
    first = wait_for_plugin(cluster, node, "2")
    assert first["spec"]["containers"][0]["image"] == plugin_image

    # Least privilege, as the kernel sees the running daemon: no capabilities in any set, no new
    # privileges, seccomp filtering, and a read-only root file system.
    pid = plugin_process(first)
    status = dict(
        line.split(":\t", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":\t" in line
    )
    assert {k: status[k].strip() for k in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb")} == dict.fromkeys(
        ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"), "0000000000000000")  # fmt: skip
    assert status["NoNewPrivs"].strip() == "1" and status["Seccomp"].strip() == "2"
    root = next(line.split() for line in Path(f"/proc/{pid}/mountinfo").read_text().splitlines()
                if line.split()[4] == "/")  # fmt: skip
    assert "ro" in root[5].split(","), root
    # ... and it still serves Allocate: a pod asking for a device starts and sees it.
    ns = cluster.create_namespace("helm")
    log = consumer(
        cluster,
        ns,
        node,
        "gets-one",
        "echo DEVICES=$KUBEACCEL_DEVICES_NEC_COM_VE; for d in /dev/sim-*; do [ -c $d ] && echo NODE=$d; done",
    )
    (devices,) = [x.removeprefix("DEVICES=") for x in log if x.startswith("DEVICES=")]
    assert devices in {"0", "1"}
    assert [x for x in log if x.startswith("NODE=")] == [f"NODE=/dev/sim-{devices}"]

    # A changed config rolls the pod (a new pod, the old one gone) and allocatable follows.
    helm_on(real_node, "upgrade", RELEASE, str(CHART), "-n", NAMESPACE,
            vals=values(plugin_image, node, count=3))  # fmt: skip
    second = wait_for_plugin(cluster, node, "3")
    assert second["metadata"]["uid"] != first["metadata"]["uid"]
    assert [p["metadata"]["uid"] for p in plugin_pods(cluster)] == [second["metadata"]["uid"]]
    history = json.loads(helm_on(real_node, "history", RELEASE, "-n", NAMESPACE, "-o", "json"))
    assert [h["revision"] for h in history] == [1, 2] and history[-1]["status"] == "deployed"

    helm_on(real_node, "uninstall", RELEASE, "-n", NAMESPACE, "--wait")
    wait_for(f"{RESOURCE} allocatable 0 after uninstall", lambda: allocatable(cluster, node) == "0", timeout=120)
    assert plugin_pods(cluster) == []


def test_cdi_devices_come_from_the_plugins_spec(
    real_node: RealNode, plugin_image: str, sim_dev: Path, release: None
) -> None:
    cluster, node = real_node.cluster, real_node.node_name
    helm_on(real_node, "install", RELEASE, str(CHART), "-n", NAMESPACE,
            vals=values(plugin_image, node, count=2, cdi=True))  # fmt: skip
    wait_for_plugin(cluster, node, "2")
    spec_files = [p for p in CDI_DIR.glob("kubeaccel-*") if "nec.com" in p.read_text()]
    assert len(spec_files) == 1, list(CDI_DIR.iterdir())
    spec = json.loads(spec_files[0].read_text())
    assert spec["kind"] == RESOURCE
    common_env = dict(e.split("=", 1) for e in spec["containerEdits"]["env"])
    ns = cluster.create_namespace("cdi")
    env_name = next(iter(common_env))
    log = consumer(cluster, ns, node, "cdi-one",
                   f"echo CDI=${env_name}; echo DEVICES=$KUBEACCEL_DEVICES_NEC_COM_VE; "
                   "for d in /dev/sim-*; do [ -c $d ] && echo NODE=$d; done")  # fmt: skip
    # The env only the spec sets, so containerd applied the spec; the node the spec's entry names.
    assert f"CDI={common_env[env_name]}" in log
    (index,) = [x.removeprefix("DEVICES=") for x in log if x.startswith("DEVICES=")]
    entry = next(d for d in spec["devices"] if d["name"] == index)
    assert [f"NODE={n['path']}" for n in entry["containerEdits"]["deviceNodes"]] == [
        x for x in log if x.startswith("NODE=")
    ]
    helm_on(real_node, "uninstall", RELEASE, "-n", NAMESPACE, "--wait")
    # The plugin removes its spec when it stops.
    wait_for("CDI spec removed", lambda: not spec_files[0].exists(), timeout=60)
