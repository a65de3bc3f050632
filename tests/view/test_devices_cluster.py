"""``kubeaccel devices`` on the real local control plane.

Plugin pods are kwok pods whose IP is this host's, so the API server's pod proxy really fetches their
metrics: from the real plugin daemon (simulated devices, health scripted through its state file) or
from an HTTP server (allocations with real holder pods, junk, 10 MB). DRA devices are real
ResourceSlices and ResourceClaims. Matrix: health per device; holder, Spark app and tenant; junk and
oversized answers reported per plugin (exit 7); a user without pods/proxy rights (hint, exit 7);
DRA allocated and reserved; filters; -o json/wide.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fixtures.cluster import LocalCluster, wait_for
from fixtures.plugin import SIM_RESOURCE, PluginDaemon, short_socket_dir, write_sim_config
from fixtures.rbac import rule
from view.cluster import kubeaccel, plugin_pod, serving

from kubeaccel.devices.config import load_config
from kubeaccel.plugin.daemon import BackgroundDaemon, Daemon
from kubeaccel.view.readers import PROXY_HINT

pytestmark = pytest.mark.cluster


@pytest.fixture
def namespace(cluster: LocalCluster) -> Iterator[str]:
    name = cluster.create_namespace("view")
    yield name
    # its plugin pods go now: a terminating namespace's pods still count as plugins for the next test's node
    cluster.kubectl("delete", "pods", "--all", "-n", name, "--grace-period=0", "--force", check=False)
    cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture
def daemon_on_all_addresses(tmp_path: Path) -> Iterator[PluginDaemon]:
    """The real plugin daemon (simulated devices) with its metrics on every address, as the chart runs it."""
    socket_dir = short_socket_dir()
    state_file = tmp_path / "state.json"
    config = write_sim_config(tmp_path / "plugin.yaml", state_file, tmp_path / "dev")
    runner = BackgroundDaemon(Daemon(lambda: load_config(config), socket_dir, metrics_port=0, metrics_addr="0.0.0.0"))
    runner.start()
    try:
        yield PluginDaemon(socket_dir, config, state_file, runner)
    finally:
        runner.stop()
        for leftover in socket_dir.iterdir():
            leftover.unlink()
        socket_dir.rmdir()


def _json(*argv: str) -> tuple[int, dict[str, Any]]:
    code, out, err = kubeaccel("devices", *argv, "-o", "json")
    assert not err, err
    return code, json.loads(out)


def test_the_real_plugins_devices_and_health_through_the_pod_proxy(
    cluster: LocalCluster, kubeconfig: Path, namespace: str, daemon_on_all_addresses: PluginDaemon
) -> None:
    daemon = daemon_on_all_addresses
    node = cluster.nodes[0]
    wait_for("the daemon's metrics port", lambda: bool(daemon.daemon.metrics_port))
    plugin_pod(cluster, namespace, node, int(daemon.daemon.metrics_port or 0))
    daemon.set_states({"sim-1": "Unhealthy"})

    def seen() -> list[tuple[str, str, str]]:
        code, view = _json("--kubeconfig", str(kubeconfig), "--node", node)
        assert code == 0, view["unavailable"]
        return [(d["device"], d["health"], d["numa"]) for d in view["devices"] if d["resource"] == SIM_RESOURCE]

    wait_for("sim-1 unhealthy in the table", lambda: ("sim-1", "Unhealthy", "0") in seen(), timeout=20)
    assert seen() == [("sim-0", "Healthy", "0"), ("sim-1", "Unhealthy", "0"),
                      ("sim-2", "Healthy", "1"), ("sim-3", "Healthy", "1")]
    code, out, _ = kubeaccel("devices", "--kubeconfig", str(kubeconfig), "--node", node, "--unhealthy")
    assert code == 0
    assert [line.split()[2] for line in out.splitlines()[1:]] == ["sim-1"]


def test_holders_apps_and_tenants(cluster: LocalCluster, kubeconfig: Path, namespace: str) -> None:
    cluster.kubectl("label", "namespace", namespace, "kubeaccel.io/tenant=team-view")
    executor = {"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": "exec-1", "namespace": namespace,
                             "labels": {"spark-app-selector": "spark-0123", "spark-role": "executor"}},
                "spec": {"nodeName": cluster.nodes[1], "containers": [{"name": "spark-kubernetes-executor",
                                                                       "image": "spark"}]}}
    cluster.apply(json.dumps(executor))
    body = (
        '# TYPE kubeaccel_device_health gauge\n'
        'kubeaccel_device_health{resource="nec.com/ve",device="ve0",index="0",numa="0",health="Healthy"} 1.0\n'
        'kubeaccel_device_health{resource="nec.com/ve",device="ve1",index="1",numa="1",health="Healthy"} 1.0\n'
        f'kubeaccel_device_allocated{{resource="nec.com/ve",device="ve1",namespace="{namespace}",pod="exec-1",'
        'container="spark-kubernetes-executor"} 1.0\n'
    ).encode()
    with serving(body) as server:
        plugin_pod(cluster, namespace, cluster.nodes[1], server.port)
        code, view = _json("--kubeconfig", str(kubeconfig), "--namespace", namespace)
        code_wide, wide, _ = kubeaccel("devices", "--kubeconfig", str(kubeconfig), "-n", namespace, "-o", "wide")
    # other tests' plugins (and kwok nodes without one) may be unavailable meanwhile: 7, but never this one
    assert code == code_wide and code in (0, 7)
    assert not [p for p in view["unavailable"] if p["source"].startswith(f"{namespace}/")]
    (row,) = view["devices"]
    assert (row["node"], row["device"], row["holder"], row["app"], row["tenant"], row["mode"]) == (
        cluster.nodes[1], "ve1", f"{namespace}/exec-1/spark-kubernetes-executor", "spark-0123", "team-view", "plugin")
    assert row["since"]
    assert "team-view" in wide and "spark-0123" in wide


def test_junk_and_huge_answers_are_reported_per_plugin_and_the_rest_still_shows(
    cluster: LocalCluster, kubeconfig: Path, namespace: str
) -> None:
    good = b'kubeaccel_device_health{resource="nec.com/ve",device="ve0",index="0",numa="",health="Healthy"} 1\n'
    node = cluster.nodes[0]
    with serving(good) as ok, serving(b"<html>\x00\xff junk") as junk, serving(b"#" * (10 << 20)) as huge:
        names = {plugin_pod(cluster, namespace, node, s.port): what
                 for s, what in ((ok, "ok"), (junk, "junk"), (huge, "huge"))}
        code, out, err = kubeaccel("devices", "--kubeconfig", str(kubeconfig), "--node", node)
        _, view = _json("--kubeconfig", str(kubeconfig), "--node", node)
    assert code == 7, err
    assert "ve0" in out
    reasons = {names[p["source"].split("/")[1]]: p["reason"] for p in view["unavailable"]
               if p["source"].startswith(namespace)}
    assert set(reasons) == {"junk", "huge"}
    assert "not UTF-8" in reasons["junk"]
    assert "answered more than 4194304 bytes" in reasons["huge"]
    assert "unavailable (their devices are not listed above)" in err


def test_a_user_without_pod_proxy_rights_sees_the_hint_and_exit_7(
    cluster: LocalCluster, namespace: str, make_user: Any
) -> None:
    body = b'kubeaccel_device_health{resource="nec.com/ve",device="ve0",index="0",numa="",health="Healthy"} 1\n'
    reader = [rule("pods", "list"), rule("nodes", "list"), rule("namespaces", "list"),
              rule("resourceslices", "list", group="resource.k8s.io"),
              rule("resourceclaims", "list", group="resource.k8s.io")]
    limited = make_user({None: reader})
    allowed = make_user({None: reader, namespace: [rule("pods/proxy", "get")]})
    with serving(body) as server:
        plugin_pod(cluster, namespace, cluster.nodes[0], server.port)
        code, _out, err = kubeaccel("devices", "--kubeconfig", str(limited), "--node", cluster.nodes[0])
        code_ok, out_ok, _ = kubeaccel("devices", "--kubeconfig", str(allowed), "--node", cluster.nodes[0])
    assert code == 7
    assert "not allowed to read its metrics through the pod proxy" in err and PROXY_HINT in err
    assert "ve0" in out_ok and code_ok in (0, 7)


def test_dra_devices_allocated_and_reserved(cluster: LocalCluster, kubeconfig: Path, namespace: str) -> None:
    node = cluster.nodes[1]
    slice_name = f"view-{uuid.uuid4().hex[:6]}"
    pool = f"{node}/{slice_name}"
    cluster.apply(json.dumps({
        "apiVersion": "resource.k8s.io/v1", "kind": "ResourceSlice", "metadata": {"name": slice_name},
        "spec": {"driver": "dra.kubeaccel.io", "nodeName": node,
                 "pool": {"name": pool, "generation": 1, "resourceSliceCount": 1},
                 "devices": [
                     {"name": "veslot0", "attributes": {"index": {"int": 0}, "resource": {"string": "dra.test/ve"},
                                                        "numaNode": {"int": 1}}},
                     {"name": "veslot1", "attributes": {"index": {"int": 1}, "resource": {"string": "dra.test/ve"}},
                      "taints": [{"key": "kubeaccel.io/unhealthy", "value": "Unhealthy", "effect": "NoSchedule"}]},
                 ]}}))
    try:
        cluster.apply(json.dumps({
            "apiVersion": "resource.k8s.io/v1", "kind": "ResourceClaim", "metadata": {"name": "c0"},
            "spec": {"devices": {"requests": [{"name": "r", "exactly": {"deviceClassName": "ve.dra.test"}}]}}}),
            namespace)
        cluster.apply(json.dumps({
            "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "holder", "namespace": namespace},
            "spec": {"nodeName": node, "resourceClaims": [{"name": "ve", "resourceClaimName": "c0"}],
                     "containers": [{"name": "c", "image": "x"}]}}))
        uid = cluster.kubectl("get", "pod", "-n", namespace, "holder", "-o", "jsonpath={.metadata.uid}").stdout
        status = {"allocation": {"devices": {"results": [
                      {"driver": "dra.kubeaccel.io", "pool": pool, "device": "veslot0", "request": "r"}]}},
                  "reservedFor": [{"resource": "pods", "name": "holder", "uid": uid}]}
        cluster.kubectl("patch", "resourceclaim", "-n", namespace, "c0", "--subresource=status", "--type=merge",
                        "-p", json.dumps({"status": status}))
        _, view = _json("--kubeconfig", str(kubeconfig), "--resource", "dra.test/ve")
    finally:
        cluster.kubectl("delete", "resourceslice", slice_name, check=False)
    got = [(d["node"], d["device"], d["index"], d["health"], d["numa"], d["mode"], d["holder"])
           for d in view["devices"]]
    assert got == [(node, "veslot0", "0", "Healthy", "1", "dra", f"{namespace}/holder"),
                   (node, "veslot1", "1", "Unhealthy", "", "dra", "")]


def _spark_pod(cluster: LocalCluster, namespace: str, name: str, role: str, app: str, node: str) -> None:
    cluster.apply(json.dumps({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace,
                     "labels": {"spark-app-selector": app, "spark-role": role, "spark-app-name": "pi"}},
        "spec": {"nodeName": node, "containers": [{"name": f"spark-kubernetes-{role}", "image": "spark"}]}}))


def test_spark_status_devices_lists_each_executors_devices(
    cluster: LocalCluster, kubeconfig: Path, namespace: str
) -> None:
    node = cluster.nodes[1]
    _spark_pod(cluster, namespace, "pi-driver", "driver", "spark-abc", node)
    for i in (1, 2):
        _spark_pod(cluster, namespace, f"pi-exec-{i}", "executor", "spark-abc", node)
    health = "".join(f'kubeaccel_device_health{{resource="nec.com/ve",device="ve{i}",index="{i}",numa="",'
                     f'health="{"Unhealthy" if i == 3 else "Healthy"}"}} 1\n' for i in range(4))
    held = "".join(f'kubeaccel_device_allocated{{resource="nec.com/ve",device="ve{d}",namespace="{namespace}",'
                   f'pod="pi-exec-{e}",container="spark-kubernetes-executor"}} 1\n'
                   for e, d in ((1, 2), (2, 0), (2, 3)))
    with serving((health + held).encode()) as server:
        plugin_pod(cluster, namespace, node, server.port)
        sid = f"{namespace}:pi-driver"
        code, out, err = kubeaccel("spark", "status", sid, "--devices", "--kubeconfig", str(kubeconfig),
                                   "-o", "json")
        code_table, table, _ = kubeaccel("spark", "status", sid, "--devices", "--kubeconfig", str(kubeconfig))
    assert code == code_table == 0, err
    report = json.loads(out)
    assert report["apps"][0]["executors"] == 2
    got = [(p["pod"], p["role"], p["addresses"], p["unhealthy"]) for p in report["devices"][sid]]
    assert got == [("pi-exec-1", "executor", ["2"], []), ("pi-exec-2", "executor", ["0", "3"], ["3"])]
    assert report["devicesUnavailable"] == []
    lines = [line.split() for line in table.splitlines()]
    assert [sid, "pi-exec-2", "executor", node, "nec.com/ve", "0,3", "3"] in lines


def test_spark_status_devices_says_when_a_plugin_there_did_not_answer(
    cluster: LocalCluster, kubeconfig: Path, namespace: str
) -> None:
    node = cluster.nodes[0]
    _spark_pod(cluster, namespace, "d", "driver", "spark-x", node)
    with serving(b"junk") as server:
        plugin_pod(cluster, namespace, node, server.port)
        code, out, err = kubeaccel("spark", "status", f"{namespace}:d", "--devices",
                                   "--kubeconfig", str(kubeconfig))
    assert code == 7
    assert "metrics unreadable" in err and "no devices held by these apps' pods" in err
    assert out.splitlines()[0].split()[:2] == ["ID", "APP"]
