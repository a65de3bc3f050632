"""Tenants are all or nothing and safe (real apiserver, real RBAC, real Pod Security Admission).

Matrix: each of the five steps (Namespace, ServiceAccount, Role, RoleBinding, ResourceQuota) failing for a
user not allowed to write that kind -> nothing of the new tenant is left; an update of an existing tenant
failing at the quota -> the namespace's labels are put back; reserved namespaces get no quota; the tenant's
driver ServiceAccount cannot create a privileged hostPath / hostPID / hostNetwork pod under the default
`baseline`, can create an ordinary pod, and `--pod-security privileged` (what VE pods with IPC_LOCK need) allows it.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from fixtures.rbac import rule, token_for
from fixtures.spark import run_cli

from kubeaccel.errors import KubeaccelError, NotFoundError
from kubeaccel.kube.client import Kube
from kubeaccel.kube.tenancy import create_tenant

pytestmark = pytest.mark.cluster

STEPS = [
    ("namespaces", "", "Namespace"),
    ("serviceaccounts", "", "ServiceAccount"),
    ("roles", "rbac.authorization.k8s.io", "Role"),
    ("rolebindings", "rbac.authorization.k8s.io", "RoleBinding"),
    ("resourcequotas", "", "ResourceQuota"),
]


@pytest.fixture
def tenant_name(kube: Kube) -> Iterator[str]:
    from lightkube.resources.core_v1 import Namespace

    name = f"atomic-{uuid.uuid4().hex[:8]}"
    yield name
    kube.delete(Namespace, name, missing_ok=True)


def _tenant_admin(make_user: Any, failing: str | None) -> Path:
    """May do everything `tenant create` does, except create or patch the kind named `failing`."""
    rules = []
    for resource, group, _ in STEPS:
        verbs = ["get", "list", "delete", "update"]
        if resource != failing:
            verbs += ["create", "patch"]
        rules.append(rule(resource, *verbs, group=group))
    rules.append(rule("roles", "escalate", "bind", group="rbac.authorization.k8s.io"))
    return make_user({None: rules})  # type: ignore[no-any-return]


def _gone(kube: Kube, name: str, timeout: float = 90) -> bool:
    """The namespace does not exist (deletion is asynchronous: the namespace controller empties it first)."""
    from lightkube.resources.core_v1 import Namespace

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            kube.get(Namespace, name)
        except NotFoundError:
            return True
        time.sleep(0.5)
    return False


@pytest.mark.parametrize(("failing", "kind"), [(resource, kind) for resource, _, kind in STEPS])
def test_a_failing_step_leaves_nothing(kube: Kube, tenant_name: str, make_user: Any, failing: str, kind: str) -> None:
    from lightkube.resources.core_v1 import Namespace

    user = _tenant_admin(make_user, failing)
    code, output, error = run_cli(["tenant", "create", tenant_name, "--quota", "cpu=4", "--kubeconfig", str(user)])
    assert code == 5, (output, error)
    assert isinstance(error, KubeaccelError)
    assert f"{kind.lower()} " in error.message and "forbidden" in error.message
    if kind == "Namespace":
        with pytest.raises(NotFoundError):
            kube.get(Namespace, tenant_name)
    else:
        assert f"applied Namespace/{tenant_name}" not in output  # nothing reported as done
        assert _gone(kube, tenant_name), f"{tenant_name} is still there after the {kind} step failed"
    # the same user with every permission creates the whole tenant (the refusal above was the only cause)
    code, output, error = run_cli(
        ["tenant", "create", tenant_name, "--quota", "cpu=4", "--kubeconfig", str(_tenant_admin(make_user, None))]
    )
    assert code == 0, (output, error)
    assert output.count("applied ") == 5


def test_failed_update_puts_the_namespace_back(kube: Kube, tenant_name: str, make_user: Any) -> None:
    from lightkube.resources.core_v1 import Namespace, ResourceQuota

    create_tenant(kube, tenant_name, {"requests.cpu": "4"}, pod_security="privileged")
    user = _tenant_admin(make_user, "resourcequotas")
    code, _, error = run_cli(["tenant", "create", tenant_name, "--quota", "cpu=8", "--kubeconfig", str(user)])
    assert code == 5, error
    labels = kube.get(Namespace, tenant_name).metadata.labels
    assert labels["pod-security.kubernetes.io/enforce"] == "privileged"  # not left at the new `baseline`
    assert kube.get(ResourceQuota, "spark-quota", namespace=tenant_name).spec.hard == {"requests.cpu": "4"}


@pytest.mark.parametrize("name", ["kube-system", "kube-public", "kube-node-lease", "default"])
def test_reserved_namespaces_get_no_quota(kube: Kube, kubeconfig: Path, name: str) -> None:
    from lightkube.resources.core_v1 import ResourceQuota

    code, _, error = run_cli(["tenant", "create", name, "--quota", "cpu=1", "--kubeconfig", str(kubeconfig)])
    assert code == 2, error
    assert "spark-quota" not in [q.metadata.name for q in kube.list(ResourceQuota, namespace=name)]


def _as_service_account(kube: Kube, kubeconfig: Path, namespace: str, tmp_path: Path) -> Kube:
    config = yaml.safe_load(kubeconfig.read_text())
    for user in config["users"]:
        user["user"] = {"token": token_for(kube, "spark", namespace)}
    path = tmp_path / f"spark-{namespace}.kubeconfig"
    path.write_text(yaml.safe_dump(config))
    return Kube.connect(kubeconfig=path)


def _pod(name: str, *, privileged: bool) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "nodeSelector": {"type": "kwok"},
        "serviceAccountName": "spark",  # exists at once (the controller makes `default` a little later)
        "containers": [{"name": "c", "image": "spark:test"}],
    }
    if privileged:
        spec.update(hostPID=True, hostNetwork=True, volumes=[{"name": "root", "hostPath": {"path": "/"}}])
        spec["containers"][0].update(
            securityContext={"privileged": True, "capabilities": {"add": ["IPC_LOCK"]}},
            volumeMounts=[{"name": "root", "mountPath": "/host"}],
        )
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec}


def test_tenant_service_account_cannot_create_a_privileged_pod(
    kube: Kube, kubeconfig: Path, tenant_name: str, tmp_path: Path
) -> None:
    create_tenant(kube, tenant_name, {})
    driver = _as_service_account(kube, kubeconfig, tenant_name, tmp_path)
    with pytest.raises(KubeaccelError) as refused:
        driver.create(_pod("escape", privileged=True), namespace=tenant_name)
    assert "violates PodSecurity" in refused.value.message
    for field in ("hostPath", "hostPID", "hostNetwork", "privileged"):
        assert field in refused.value.message
    driver.create(_pod("ordinary", privileged=False), namespace=tenant_name)  # it may create pods at all

    # the documented way to allow VE pods (IPC_LOCK): a tenant at `privileged`
    code, output, error = run_cli(
        ["tenant", "create", tenant_name, "--pod-security", "privileged", "--kubeconfig", str(kubeconfig)]
    )
    assert code == 0, (output, error)
    driver.create(_pod("ve-workload", privileged=True), namespace=tenant_name)
