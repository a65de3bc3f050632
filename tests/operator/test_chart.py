"""The chart deploy/helm/kubeaccel-operator with the real Helm: lint; the CRDs it installs are the generated ones;
the rendering is valid Kubernetes and its RBAC least (no wildcards, no Secrets, nothing cluster-wide when
namespaces are listed); bad values refused by values.schema.json naming the key; and on the real control plane:
install, the controller running as the chart's ServiceAccount (its token, its RBAC and nothing more) takes an app to
RUNNING, upgrade to listed namespaces swaps the ClusterRole for Roles, uninstall removes it all.
"""

from __future__ import annotations

import json
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from deploy.chart import HELM, REPO, yaml_safe_json
from fixtures.cluster import LocalCluster, wait_for
from fixtures.kubeflow import webhook
from fixtures.sparkapps import SPARK_PI, load, on_kwok, state_of

from kubeaccel.kube.client import Kube
from kubeaccel.operator import crds
from kubeaccel.operator.controller import Controller
from kubeaccel.operator.others import OtherControllerError, check_no_other_controller

CHART = REPO / "deploy" / "helm" / "kubeaccel-operator"
K8S_VERSION = "1.37"
FULL: dict[str, Any] = {
    "image": {"repository": "registry.example.com/kubeaccel", "tag": "1.2.3", "pullPolicy": "Always"},
    "imagePullSecrets": [{"name": "pull"}],
    "replicas": 3,
    "leaderElection": {"enabled": True, "leaseName": "op-lock"},
    "namespaces": ["team-a", "team-b"],
    "otherControllerCheck": False,
    "workers": 8,
    "logLevel": "debug",
    "metrics": {"port": 9090, "service": True},
    "apiServer": "https://127.0.0.1:6443",
    "serviceAccount": {"name": "spark-operator"},
    "resources": {"requests": {"cpu": "50m"}},
    "nodeSelector": {"role": "control"},
    "tolerations": [{"operator": "Exists"}],
    "affinity": {},
    "podAnnotations": {"a": "b"},
    "podLabels": {"team": "x"},
}


def helm(*args: str, stdin: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([HELM, *args], capture_output=True, text=True, input=stdin, timeout=180, check=False)
    if check and done.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed ({done.returncode}):\n{done.stderr}")
    return done


def rendered(values: dict[str, Any]) -> list[dict[str, Any]]:
    out = helm("template", "ops", str(CHART), "-n", "ops", "--values", "-", stdin=yaml_safe_json(values)).stdout
    return [d for d in yaml.safe_load_all(out) if d]


@pytest.mark.parametrize("values", [{}, FULL], ids=["defaults", "every-value"])
def test_lints_and_renders_valid_least_privileged_kubernetes(values: dict[str, Any], tmp_path: Path) -> None:
    (tmp_path / "values.yaml").write_text(yaml_safe_json(values))
    assert "0 chart(s) failed" in helm("lint", str(CHART), "--strict", "--values", str(tmp_path / "values.yaml")).stdout
    docs = rendered(values)
    for doc in docs:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    for doc in docs:
        for rule in doc.get("rules", []):
            assert "*" not in rule["verbs"] and "*" not in rule["resources"], rule
            assert "secrets" not in rule["resources"], rule
    cluster_roles = {d["metadata"]["name"]: d for d in docs if d["kind"] == "ClusterRole"}
    assert ("ops-kubeaccel-operator" in cluster_roles) is (not values.get("namespaces"))
    other = cluster_roles.get("ops-kubeaccel-operator-other-controllers")
    assert (other is not None) is values.get("otherControllerCheck", True)
    if other is not None:  # read-only, and only what shows kubeflow's controller
        assert {verb for rule in other["rules"] for verb in rule["verbs"]} == {"list"}
        assert {r for rule in other["rules"] for r in rule["resources"]} == {
            "mutatingwebhookconfigurations", "validatingwebhookconfigurations", "deployments", "leases"}  # fmt: skip
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--leader-elect" in args
    if values:
        assert "--namespace=team-a" in args and "--workers=8" in args and "--lease-name=op-lock" in args


def test_crds_are_the_generated_ones() -> None:
    assert (CHART / "crds" / "crds.yaml").read_text() == crds.crds_yaml()


@pytest.mark.parametrize(
    "values, key",
    [
        ({"workers": 0}, "/workers"),
        ({"namespaces": ["Team A"]}, "/namespaces/0"),
        ({"image": {"repository": ""}}, "/image/repository"),
        ({"metrics": {"port": 70000}}, "/metrics/port"),
        ({"replicaz": 2}, "replicaz"),
        ({"apiServer": "http://x"}, "/apiServer"),
        ({"logLevel": "loud"}, "/logLevel"),
        ({"otherControllerCheck": "yes"}, "/otherControllerCheck"),
    ],
)
def test_bad_values_are_refused_naming_the_key(values: dict[str, Any], key: str) -> None:
    done = helm("template", "ops", str(CHART), "--values", "-", stdin=yaml_safe_json(values), check=False)
    assert done.returncode != 0 and key in done.stderr, done.stderr


def _token_kubeconfig(cluster: LocalCluster, namespace: str, account: str, path: Path) -> Path:
    token = cluster.kubectl("create", "token", account, "-n", namespace, "--duration=1h").stdout.strip()
    config = yaml.safe_load(Path(cluster.kubeconfig).read_text())
    context = next(c for c in config["contexts"] if c["name"] == config["current-context"])
    cluster_entry = next(c for c in config["clusters"] if c["name"] == context["context"]["cluster"])
    ca = cluster_entry["cluster"]
    if "certificate-authority" in ca and not Path(ca["certificate-authority"]).is_absolute():
        ca = {**ca, "certificate-authority": str(Path(cluster.kubeconfig).parent / ca["certificate-authority"])}
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "sa",
        "clusters": [{"name": "c", "cluster": ca}],
        "users": [{"name": "sa", "user": {"token": token}}],
        "contexts": [{"name": "sa", "context": {"cluster": "c", "user": "sa", "namespace": namespace}}],
    }))  # fmt: skip
    return path


@pytest.mark.cluster
@pytest.mark.slow
def test_install_run_as_its_account_upgrade_uninstall(cluster: LocalCluster, tmp_path: Path) -> None:
    release_ns = cluster.create_namespace("ops")
    apps_ns = cluster.create_namespace("apps")
    cluster.kubectl("create", "serviceaccount", "spark", "-n", apps_ns)
    kube_args = ["--kubeconfig", str(cluster.kubeconfig), "-n", release_ns]
    values = {"replicas": 1, "nodeSelector": {"type": "kwok"}}
    helm("install", "ops", str(CHART), *kube_args, "--values", "-", stdin=yaml_safe_json(values))
    try:
        _installed(cluster, release_ns, apps_ns, kube_args, values, tmp_path)
    finally:
        helm("uninstall", "ops", *kube_args, "--ignore-not-found")


def _installed(
    cluster: LocalCluster, release_ns: str, apps_ns: str, kube_args: list[str], values: dict[str, Any], tmp_path: Path
) -> None:
    for crd in crds.all_crds():
        name = crd["metadata"]["name"]
        wait_for(name, lambda n=name: cluster.kubectl("get", "crd", n, "-o", "name", check=False).returncode == 0)
    account = "ops-kubeaccel-operator"
    who = f"system:serviceaccount:{release_ns}:{account}"
    can = lambda *a: cluster.kubectl("auth", "can-i", *a, "--as", who, check=False).stdout.strip()  # noqa: E731
    assert can("create", "pods", "-n", apps_ns) == "yes"
    assert can("patch", "sparkapplications", "--subresource=status", "-n", apps_ns) == "yes"
    assert can("get", "secrets", "-n", apps_ns) == "no"
    assert can("delete", "nodes") == "no"

    # the controller with the chart's account and nothing more: an app runs
    kube = Kube.connect(kubeconfig=_token_kubeconfig(cluster, release_ns, account, tmp_path / "sa.kubeconfig"))
    controller = Controller(kube, [apps_ns], workers=2)
    controller.start()
    try:
        wait_for("watches", controller.synced.is_set)
        document = load(SPARK_PI)
        on_kwok(document)
        cluster.apply(yaml.safe_dump(document), apps_ns)
        wait_for(
            "RUNNING as the chart's account", lambda: state_of(cluster, apps_ns, "spark-pi") == "RUNNING", timeout=30
        )
        assert controller.metrics.reconcile_errors._value.get() == 0
    finally:
        controller.stop()

    # otherControllerCheck (on by default): the account may list what shows kubeflow's controller, and the
    # check run as it finds a stand-in of kubeflow's webhook
    assert can("list", "deployments", "-A") == "yes" and can("get", "deployments", "-n", apps_ns) == "no"
    hook = webhook(f"spark-operator-webhook-{apps_ns}", ["sparkoperator.k8s.io"])
    hook |= {"apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration"}
    cluster.apply(json.dumps(hook))
    try:
        with pytest.raises(OtherControllerError, match=hook["metadata"]["name"]):
            check_no_other_controller(kube, datetime.now(UTC))
    finally:
        cluster.kubectl("delete", "mutatingwebhookconfiguration", hook["metadata"]["name"], check=False)

    helm("upgrade", "ops", str(CHART), *kube_args, "--values", "-",
         stdin=yaml_safe_json({**values, "namespaces": [apps_ns], "otherControllerCheck": False}))  # fmt: skip
    assert can("list", "deployments", "-A") == "no"
    roles = json.loads(cluster.kubectl("get", "roles", "-n", apps_ns, "-o", "json").stdout)["items"]
    assert [r["metadata"]["name"] for r in roles] == ["ops-kubeaccel-operator"]
    assert cluster.kubectl("get", "clusterrole", "ops-kubeaccel-operator", check=False).returncode != 0
    assert can("create", "pods", "-n", apps_ns) == "yes" and can("create", "pods", "-n", "default") == "no"

    helm("uninstall", "ops", *kube_args, "--wait")
    left = cluster.kubectl(
        "get", "deployments,serviceaccounts,roles,rolebindings", "-n", release_ns, "-o", "name"
    ).stdout
    assert "kubeaccel-operator" not in left
    assert "kubeaccel-operator" not in cluster.kubectl("get", "roles", "-n", apps_ns, "-o", "name").stdout


@pytest.mark.parametrize(
    "server, host, port", [("https://127.0.0.1:6443", "127.0.0.1", "6443"), ("https://k.example", "k.example", "443")]
)
def test_api_server_becomes_the_in_cluster_variables(server: str, host: str, port: str) -> None:
    deployment = next(d for d in rendered({"apiServer": server}) if d["kind"] == "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
    assert (env["KUBERNETES_SERVICE_HOST"], env["KUBERNETES_SERVICE_PORT"]) == (host, port)
    assert pod["hostNetwork"] is True
