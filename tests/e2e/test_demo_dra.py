"""``kubeaccel demo --dra``: its pure parts and the real run on the session's real node.

The real run installs the chart in ``mode: dra`` (the DRA driver as a DaemonSet pod from the plugin
image), waits for the node's devices in ResourceSlices, submits the Pi app with its executors' VEs
claimed through DRA (NUMA node 1 selector) and checks what a user would look at: the app succeeded,
every task held one VE, the VEs the tasks saw are exactly the devices allocated to the executors'
claims, all on NUMA node 1; the node advertises no allocatable ``nec.com/ve``; the release is gone
afterwards (the cluster is the session's and stays).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner
from deploy.chart import find, rendered

from kubeaccel.cli import cli
from kubeaccel.demo.common import PLUGIN_NAMESPACE, DemoOptions, helm
from kubeaccel.demo.dra import (
    DRA_RELEASE,
    DRIVER,
    QUOTA_KEY,
    claim_rows,
    dra_app_confs,
    dra_values,
    render_dra,
    run_demo_dra,
    slice_devices,
)
from kubeaccel.spark.conf import SubmitRequest
from kubeaccel.spark.submit import prepare


def _values() -> dict[str, Any]:
    return dra_values(4, "docker.io/kubeaccel/device-plugin:0.1.0-abcd1234", "vm", kubelet_dir=Path("/s/node/kubelet"),
                      cdi_dir=Path("/s/node/cdi"), state_dir=Path("/s/node/kubeaccel-dra"),
                      server="https://127.0.0.1:40123")  # fmt: skip


def test_dra_values_pass_the_chart_in_dra_mode() -> None:
    docs = rendered(_values())
    assert not [d for d in docs if d["kind"] == "DaemonSet" and d["metadata"]["name"] != DRA_RELEASE]
    pod = find(docs, "DaemonSet")["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"kubernetes.io/hostname": "vm"} and pod["hostNetwork"] is True
    command = pod["containers"][0]["command"]
    assert "/s/node/kubelet/plugins_registry" in command and "/s/node/cdi" in command
    assert [c["metadata"]["name"] for c in docs if c["kind"] == "DeviceClass"] == ["ve.nec.com"]


def test_dra_app_confs_claim_the_executors_ves(tmp_path: Path) -> None:
    template = tmp_path / "driver.yaml"
    template.write_text(yaml.safe_dump({"kind": "Pod", "spec": {"hostNetwork": True}}))
    confs = dra_app_confs(1, namespace="t", image="spark:x", node="vm", server="https://127.0.0.1:6443",
                          template=template, executors=2)  # fmt: skip
    prepared = prepare(SubmitRequest("local:///opt/app.py", master="k8s://https://127.0.0.1:6443", conf=confs))
    manifests = prepared.manifests
    (claim_template,) = manifests.claim_templates
    request = claim_template["spec"]["spec"]["devices"]["requests"][0]["exactly"]
    assert request["selectors"] == [{"cel": {"expression": f'device.attributes["{DRIVER}"].numaNode == 1'}}]
    assert prepared.app.app_requests()[QUOTA_KEY] == 2


def test_slices_and_claims_are_read_as_rows() -> None:
    slices = [{"metadata": {"name": "s1"}, "spec": {"devices": [
        {"name": "sim-1", "attributes": {"index": {"string": "1"}, "numaNode": {"int": 1}}},
        {"name": "sim-0", "attributes": {"index": {"string": "0"}, "numaNode": {"int": 0}},
         "taints": [{"key": "k", "effect": "NoSchedule"}]}]}}]
    rows = slice_devices(slices)
    assert [(r.device, r.index, r.numa, r.tainted) for r in rows] == [("sim-0", "0", "0", True),
                                                                      ("sim-1", "1", "1", False)]
    claims = [
        {"metadata": {"name": "c1", "ownerReferences": [{"kind": "Pod", "name": "exec-1"}]},
         "status": {"allocation": {"devices": {"results": [{"driver": DRIVER, "device": "sim-3"},
                                                           {"driver": "other", "device": "x"}]}}}},
        {"metadata": {"name": "c2"}, "status": {}},  # not allocated yet: no row
    ]
    assert [(r.pod, r.claim, r.devices) for r in claim_rows(claims)] == [("exec-1", "c1", ["sim-3"])]


def test_the_cli_has_the_flag() -> None:
    out = CliRunner().invoke(cli, ["demo", "--help"])
    assert out.exit_code == 0 and "--dra" in out.output


@pytest.mark.real_node
@pytest.mark.spark
@pytest.mark.slow
def test_demo_dra_runs_on_the_session_cluster(real_node: Any, capsys: pytest.CaptureFixture[str]) -> None:
    messages: list[str] = []
    options = DemoOptions(state_dir=real_node.cluster.state_dir, keep=False, devices=4, executors=2, partitions=6)
    result = run_demo_dra(options, messages.append, numa=1)
    assert result.phase == "Succeeded", result.driver_log_tail
    assert result.pi is not None and abs(result.pi - 3.14159) < 0.05
    assert sorted(t["partition"] for t in result.tasks) == list(range(6))
    assert all(len(t["resources"]["ve"]) == 1 for t in result.tasks)
    # the node advertises no nec.com/ve of its own: the VEs are ResourceSlice devices of our driver
    (real,) = [row for row in result.nodes if row.kind == "real"]
    assert real.allocatable == "0"
    assert sorted(d.device for d in result.devices) == [f"sim-{i}" for i in range(4)]
    numa = {d.device: d.numa for d in result.devices}
    index = {d.device: d.index for d in result.devices}
    # each executor's claim got one VE of NUMA node 1, and the tasks saw exactly the claimed VEs
    assert len(result.claims) == 2 and all(len(c.devices) == 1 for c in result.claims), result.claims
    claimed = {device for claim in result.claims for device in claim.devices}
    assert {numa[d] for d in claimed} == {"1"}
    seen = {address for addresses in result.allocations.values() for address in addresses}
    assert seen == {index[d] for d in claimed}
    assert len(result.allocations) == 2
    pod = result.driver_pod
    assert pod.ready and pod.node == real_node.node_name and pod.image.startswith("docker.io/kubeaccel/device-plugin:")
    assert any("DRA mode" in m for m in messages)
    render_dra(result)
    out = capsys.readouterr().out
    assert "ResourceSlice devices on the real node" in out and "Allocations seen by Spark tasks" in out
    # not kept: the release the demo installed is gone, the session's cluster stays
    assert json.loads(helm(result.kubeconfig, "list", "-n", PLUGIN_NAMESPACE, "-o", "json", "--filter",
                           f"^{DRA_RELEASE}$")) == []  # fmt: skip
    real_node.cluster.kubectl("get", "nodes")
