"""The chart's `mode: dra` switch, rendered by the real Helm: the DRA daemon instead of the device plugin.

What renders is valid Kubernetes 1.37 and least-privileged; the daemon runs `kubeaccel dra run` from the
plugin image at the kubelet's paths; the RBAC is deploy/dra's (slices read/write, claims get), the
DeviceClasses are exactly what `kubeaccel dra device-classes` makes, the Spark claims policy is
deploy/dra's; bad `mode` / `dra.*` values are refused by the schema, naming the key. The install on
the real node is in tests/e2e/test_demo_dra.py (`kubeaccel demo --dra` installs this mode).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from click.testing import CliRunner
from deploy.chart import K8S_VERSION, REPO, find, least_privilege_problems, rendered, template

from kubeaccel.cli import cli
from kubeaccel.dra.model import device_class

DRA = {"mode": "dra"}
DEPLOY = REPO / "deploy" / "dra"


def _docs(kind: str, docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def test_default_mode_is_the_device_plugin_and_renders_no_dra_objects() -> None:
    kinds = {d["kind"] for d in rendered()}
    assert kinds == {"ConfigMap", "DaemonSet"}
    container = find(rendered(), "DaemonSet")["spec"]["template"]["spec"]["containers"][0]
    assert container["name"] == "device-plugin"


def test_dra_mode_renders_valid_least_privileged_objects() -> None:
    docs = rendered({**DRA, "kubeletDir": "/srv/kubelet/"})
    assert sorted({d["kind"] for d in docs}) == [
        "ClusterRole", "ClusterRoleBinding", "ConfigMap", "DaemonSet", "DeviceClass", "MutatingAdmissionPolicy",
        "MutatingAdmissionPolicyBinding", "ServiceAccount", "ValidatingAdmissionPolicy",
        "ValidatingAdmissionPolicyBinding"]
    for doc in docs:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    daemonset = find(docs, "DaemonSet")
    pod = daemonset["spec"]["template"]["spec"]
    allowed = {"/srv/kubelet/plugins_registry", "/srv/kubelet/plugins", "/var/lib/kubeaccel/dra", "/var/run/cdi",
               "/dev", "/sys"}
    problems = least_privilege_problems(daemonset, allowed)
    # the DRA daemon reads ResourceClaims and writes ResourceSlices: it needs its token (and only that)
    assert problems == ["the service account token is mounted (the plugin never calls the API server)"]
    assert pod["serviceAccountName"] == find(docs, "ServiceAccount")["metadata"]["name"]
    (container,) = pod["containers"]
    command = container["command"]
    assert command[:5] == ["/usr/bin/python3", "-m", "kubeaccel.cli", "dra", "run"]
    args = dict(zip(command[5::2], command[6::2], strict=True))
    assert args["--registry-dir"] == "/srv/kubelet/plugins_registry" and args["--plugins-dir"] == "/srv/kubelet/plugins"
    assert args["--driver"] == "dra.kubeaccel.io" and args["--cdi-dir"] == "/var/run/cdi"
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert {args["--registry-dir"], args["--plugins-dir"], args["--state-dir"]} <= mounts  # host paths = in-pod paths
    # the config the daemon reads is the chart's `config`, under the name the command gives
    config = yaml.safe_load(find(docs, "ConfigMap")["data"]["dra.yaml"])
    assert [r["name"] for r in config["resources"]] == ["nec.com/ve", "nvidia.com/gpu"]
    assert {e["name"] for e in container["env"]} >= {"NODE_NAME", "KUBEACCEL_METRICS_PORT"}


def test_dra_mode_rbac_and_policies_are_deploy_dras() -> None:
    docs = rendered(DRA)
    reference = [d for d in yaml.safe_load_all((DEPLOY / "rbac.yaml").read_text()) if d]
    assert find(docs, "ClusterRole")["rules"] == find(reference, "ClusterRole")["rules"]
    ours, theirs = find(docs, "ValidatingAdmissionPolicy")["spec"], find(reference, "ValidatingAdmissionPolicy")["spec"]
    assert ours["validations"][0]["expression"] == theirs["validations"][0]["expression"]
    sa = find(docs, "ServiceAccount")["metadata"]
    assert sa["name"] in ours["matchConditions"][0]["expression"] and sa["namespace"] == "kube-system"
    policy = [d for d in yaml.safe_load_all((DEPLOY / "spark-claims-policy.yaml").read_text()) if d]
    assert find(docs, "MutatingAdmissionPolicy")["spec"] == find(policy, "MutatingAdmissionPolicy")["spec"]
    binding = find(docs, "ClusterRoleBinding")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": sa["name"], "namespace": "kube-system"}]


@pytest.mark.parametrize("driver", ["dra.kubeaccel.io", "accel.example.org"])
def test_device_classes_are_what_the_driver_makes(driver: str) -> None:
    resources = [{"name": "nec.com/ve", "backend": "simulated", "count": 2},
                 {"name": "example.com/Sim", "backend": "simulated", "count": 1}]
    docs = rendered({**DRA, "dra": {"driverName": driver}, "config": {"resources": resources}})
    classes = sorted(_docs("DeviceClass", docs), key=lambda d: d["metadata"]["name"])
    expected = sorted((device_class(driver, r) for r in ("nec.com/ve", "example.com/Sim")),
                      key=lambda d: d["metadata"]["name"])
    pairs = [(c["metadata"]["name"], c["spec"]) for c in classes]
    assert pairs == [(e["metadata"]["name"], e["spec"]) for e in expected]
    # and what `kubeaccel dra device-classes` prints for the same config
    config = Path(__file__).parent / "_dra_classes.yaml"
    try:
        config.write_text(yaml.safe_dump(yaml.safe_load(find(docs, "ConfigMap")["data"]["dra.yaml"])))
        out = CliRunner().invoke(cli, ["dra", "device-classes", "--config", str(config), "--driver", driver])
    finally:
        config.unlink(missing_ok=True)
    assert out.exit_code == 0, out.output
    printed = {d["metadata"]["name"]: d["spec"] for d in yaml.safe_load_all(out.output) if d}
    assert printed == {c["metadata"]["name"]: c["spec"] for c in classes}


def test_optional_objects_can_be_left_out() -> None:
    docs = rendered({**DRA, "dra": {"deviceClasses": False, "ownNodePolicy": False, "sparkClaimsPolicy": False}})
    assert {d["kind"] for d in docs} == {"ClusterRole", "ClusterRoleBinding", "ConfigMap", "DaemonSet",
                                         "ServiceAccount"}


@pytest.mark.parametrize(("values", "named"), [
    ({"mode": "plugin"}, "mode"),
    ({"mode": "dra", "dra": {"driverName": "Not_A_Name"}}, "driverName"),
    ({"mode": "dra", "dra": {"stateDir": "relative"}}, "stateDir"),
    ({"mode": "dra", "dra": {"colour": "red"}}, "colour"),
    ({"mode": "dra", "dra": {"deviceClasses": "yes"}}, "deviceClasses"),
    ({"mode": "dra", "dra": {"apiServer": "http://insecure:80"}}, "apiServer"),
])
def test_bad_dra_values_are_refused_naming_the_key(values: dict[str, Any], named: str) -> None:
    done = template(values, check=False)
    assert done.returncode == 1, f"{values} was accepted"
    assert "values don't meet the specifications of the schema" in done.stderr and named in done.stderr, done.stderr


@pytest.mark.parametrize(("url", "host", "port"), [("https://127.0.0.1:6443", "127.0.0.1", "6443"),
                                                   ("https://api.example.com/", "api.example.com", "443")])
def test_an_api_server_url_puts_the_daemon_on_the_host_network(url: str, host: str, port: str) -> None:
    pod = find(rendered({**DRA, "dra": {"apiServer": url}}), "DaemonSet")["spec"]["template"]["spec"]
    assert pod["hostNetwork"] is True
    env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
    assert (env["KUBERNETES_SERVICE_HOST"], env["KUBERNETES_SERVICE_PORT"]) == (host, port)
    default = find(rendered(DRA), "DaemonSet")["spec"]["template"]["spec"]
    assert "hostNetwork" not in default and "KUBERNETES_SERVICE_HOST" not in str(default)
