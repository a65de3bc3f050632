"""Pure parts of the local cluster: node resources, kwok manifests and stages, kubeconfig, command lines."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from kubeaccel.cluster import commands, kwok
from kubeaccel.cluster.binaries import Binaries
from kubeaccel.cluster.kubeconfig import build_kubeconfig
from kubeaccel.cluster.layout import Layout
from kubeaccel.cluster.spec import ClusterSpec, node_resources, parse_node_resource
from kubeaccel.errors import ConfigError


def test_node_resources_defaults_and_overrides() -> None:
    assert node_resources(["nec.com/ve=8", "cpu=64"]) == {
        "cpu": "64", "memory": "128Gi", "pods": "110", "nec.com/ve": "8",
    }


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("nec.com/ve", "NAME=QUANTITY"),
        ("=8", "NAME=QUANTITY"),
        ("ve=8", "not a valid extended resource name"),
        ("kubernetes.io/ve=8", "not a valid extended resource name"),
        ("nec.com/ve=eight", "not a Kubernetes quantity"),
        ("nec.com/ve=-1", "not a Kubernetes quantity"),
    ],
)
def test_bad_node_resource_is_a_config_error_with_hint(text: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_node_resource(text)
    assert fragment in err.value.message
    assert err.value.hint


@given(st.integers(min_value=0, max_value=10**6), st.sampled_from(["", "m", "Ki", "Gi", "k", "M"]))
def test_any_plain_quantity_is_accepted(number: int, suffix: str) -> None:
    assert parse_node_resource(f"example.com/sim={number}{suffix}") == ("example.com/sim", f"{number}{suffix}")


def test_spec_validates_prefix_and_names_nodes(tmp_path: Path) -> None:
    spec = ClusterSpec(state_dir=tmp_path, nodes=3, node_prefix="sim")
    assert spec.node_names() == ["sim-0", "sim-1", "sim-2"]
    with pytest.raises(ValueError, match="DNS label"):
        ClusterSpec(state_dir=tmp_path, node_prefix="Not_OK")


def test_node_manifest_carries_resources_and_kwok_annotation() -> None:
    node = kwok.node_manifest("n0", {"cpu": "32", "nec.com/ve": "8"})
    assert node["metadata"]["annotations"][kwok.MANAGED_ANNOTATION] == kwok.MANAGED_VALUE
    assert node["status"]["allocatable"] == node["status"]["capacity"] == {"cpu": "32", "nec.com/ve": "8"}
    assert node["metadata"]["labels"]["kubernetes.io/hostname"] == "n0"


def test_kwok_config_has_pod_lifecycle_stages_keyed_on_the_finish_annotation() -> None:
    everything = list(yaml.safe_load_all(kwok.kwok_config()))
    # kwok >= 0.7 has no built-in stages: without node stages the nodes never become Ready.
    nodes = [s for s in everything if s["spec"]["resourceRef"]["kind"] == "Node"]
    assert [s["metadata"]["name"] for s in nodes] == ["kubeaccel-node-initialize", "kubeaccel-node-heartbeat"]
    stages = [s for s in everything if s not in nodes]
    names = [s["metadata"]["name"] for s in stages]
    assert names[0] == "kubeaccel-pod-running" and "kubeaccel-pod-delete" in names
    finish = {s["metadata"]["name"]: s for s in stages}
    for phase in ("Succeeded", "Failed"):
        stage = finish[f"kubeaccel-pod-{phase.lower()}"]
        keys = [e["key"] for e in stage["spec"]["selector"]["matchExpressions"]]
        assert f'.metadata.annotations["{kwok.FINISH_ANNOTATION}"]' in keys
        assert f"phase: {phase}" in stage["spec"]["next"]["statusTemplate"]
    assert all(s["kind"] == "Stage" and s["spec"]["resourceRef"]["kind"] == "Pod" for s in stages)


def test_kubeconfig_inlines_credentials() -> None:
    config = build_kubeconfig("https://127.0.0.1:1", b"CA", b"CERT", b"KEY", "admin")
    cluster = config["clusters"][0]["cluster"]
    assert cluster["server"] == "https://127.0.0.1:1"
    assert base64.b64decode(cluster["certificate-authority-data"]) == b"CA"
    assert base64.b64decode(config["users"][0]["user"]["client-key-data"]) == b"KEY"
    assert config["current-context"] == config["contexts"][0]["name"]


def test_command_lines_bind_loopback_and_enable_rbac_and_quota(tmp_path: Path) -> None:
    bins = Binaries({n: Path(f"/bin/{n}") for n in ("etcd", "kube-apiserver", "kube-controller-manager",
                                                     "kube-scheduler", "kwok")})
    layout = Layout(tmp_path)
    ports = commands.Ports(etcd_client=2379, etcd_peer=2380, apiserver=6443)
    apiserver = commands.apiserver(bins, layout, ports)
    assert "--bind-address=127.0.0.1" in apiserver and "--secure-port=6443" in apiserver
    assert "--authorization-mode=Node,RBAC" in apiserver
    assert any(a.startswith("--enable-admission-plugins=") and "ResourceQuota" in a for a in apiserver)
    assert "--etcd-servers=http://127.0.0.1:2379" in apiserver
    assert "--kubelet-preferred-address-types=Hostname,InternalIP,ExternalIP" in apiserver
    etcd = commands.etcd(bins, layout, ports)
    assert f"--data-dir={layout.etcd_data}" in etcd
    # No fixed ports for the controllers: several clusters share one machine.
    for argv in (commands.controller_manager(bins, layout), commands.scheduler(bins, layout)):
        assert "--secure-port=0" in argv
        # Gang scheduling (scheduling.k8s.io/v1beta1 Workload/PodGroup) needs the same gate everywhere.
        assert "--feature-gates=GenericWorkload=true" in argv
    assert "--feature-gates=GenericWorkload=true" in apiserver
    assert "--runtime-config=scheduling.k8s.io/v1beta1=true" in apiserver
    assert any(a.startswith("--manage-nodes-with-annotation-selector=") for a in commands.kwok(bins, layout))
