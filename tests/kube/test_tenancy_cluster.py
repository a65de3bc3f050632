"""Tenancy and the error translation against the real apiserver.

Matrix: `tenant create` applies Namespace/ServiceAccount/Role/RoleBinding/ResourceQuota and is
idempotent; `tenant show` prints usage against quota; RBAC-forbidden calls say which verb on which
resource; an unreachable server and an unknown context are clear errors with exit codes.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from fixtures.spark import run_cli

from kubeaccel.cli import cli
from kubeaccel.errors import KubeaccelError, UnavailableError
from kubeaccel.kube.client import Kube

pytestmark = pytest.mark.cluster


@pytest.fixture
def tenant_name(kube: Kube) -> Iterator[str]:
    from lightkube.resources.core_v1 import Namespace

    name = f"tenant-{uuid.uuid4().hex[:8]}"
    yield name
    kube.delete(Namespace, name, missing_ok=True)


def test_tenant_create_is_idempotent_and_show_reports_quota(kube: Kube, kubeconfig: Path, tenant_name: str) -> None:
    from lightkube.resources.core_v1 import ResourceQuota, ServiceAccount
    from lightkube.resources.rbac_authorization_v1 import Role, RoleBinding

    runner = CliRunner()
    args = [
        "tenant",
        "create",
        tenant_name,
        "--quota",
        "cpu=16,memory=64Gi,nec.com/ve=8",
        "--kubeconfig",
        str(kubeconfig),
    ]
    first = runner.invoke(cli, args)
    assert first.exit_code == 0, first.output
    second = runner.invoke(cli, args)
    assert second.exit_code == 0, second.output
    assert first.output == second.output
    quota = kube.get(ResourceQuota, "spark-quota", namespace=tenant_name)
    assert quota.spec.hard == {"requests.cpu": "16", "requests.memory": "64Gi", "requests.nec.com/ve": "8"}
    assert kube.get(ServiceAccount, "spark", namespace=tenant_name)
    role = kube.get(Role, "spark", namespace=tenant_name)
    assert "pods" in role.rules[0].resources
    binding = kube.get(RoleBinding, "spark", namespace=tenant_name)
    assert binding.subjects[0].name == "spark"

    shown = runner.invoke(cli, ["tenant", "show", tenant_name, "--kubeconfig", str(kubeconfig), "-o", "json"])
    assert shown.exit_code == 0, shown.output
    rows = {row["resource"]: row for row in json.loads(shown.output)}
    assert rows["requests.nec.com/ve"]["hard"] == "8"
    assert rows["requests.memory"]["hard"] == "64Gi"
    table = runner.invoke(cli, ["tenant", "show", tenant_name, "--kubeconfig", str(kubeconfig)])
    assert "requests.nec.com/ve" in table.output
    assert "64Gi" in table.output

    # an app in the tenant (driver: 1 cpu, 1433Mi) shows up in the usage the quota admission records
    kube.apply(
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "default", "namespace": tenant_name}},
        namespace=tenant_name,
    )
    submitted = runner.invoke(
        cli,
        [
            "spark",
            "submit",
            "--kubeconfig",
            str(kubeconfig),
            "--master",
            f"k8s://{kube.server}",
            "--conf",
            f"spark.kubernetes.namespace={tenant_name}",
            "--conf",
            "spark.kubernetes.container.image=img",
            "--conf",
            "spark.kubernetes.authenticate.driver.serviceAccountName=spark",
            "--conf",
            "spark.executor.instances=1",
            "local:///opt/app.py",
        ],
    )
    assert submitted.exit_code == 0, submitted.output
    shown = runner.invoke(cli, ["tenant", "show", tenant_name, "--kubeconfig", str(kubeconfig), "-o", "json"])
    rows = {row["resource"]: row for row in json.loads(shown.output)}
    assert rows["requests.cpu"]["used"] == "1"
    assert rows["requests.memory"]["used"] == "1433Mi"  # 1g heap + max(0.4 x 1g, 384Mi): a Python app


def test_tenant_show_unknown_namespace(kubeconfig: Path) -> None:
    code, _, error = run_cli(["tenant", "show", "no-such-tenant-x", "--kubeconfig", str(kubeconfig)])
    assert code == 3
    assert "not found" in str(error)


def restricted_kubeconfig(kube: Kube, kubeconfig: Path, namespace: str, tmp_path: Path) -> Path:
    """A kubeconfig for a ServiceAccount that has no RBAC permissions at all (a real bearer token)."""
    from lightkube.models.authentication_v1 import TokenRequestSpec
    from lightkube.models.meta_v1 import ObjectMeta
    from lightkube.resources.core_v1 import ServiceAccount

    kube.apply(
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "nobody", "namespace": namespace}},
        namespace=namespace,
    )
    request = ServiceAccount.Token(
        metadata=ObjectMeta(name="nobody", namespace=namespace),
        spec=TokenRequestSpec(audiences=[], expirationSeconds=3600),
    )
    token = kube.client.create(request, "nobody", namespace=namespace).status.token
    config = yaml.safe_load(kubeconfig.read_text())
    for user in config["users"]:
        user["user"] = {"token": token}
    path = tmp_path / "nobody.kubeconfig"
    path.write_text(yaml.safe_dump(config))
    return path


def test_forbidden_says_which_verb_on_which_resource(
    kube: Kube, kubeconfig: Path, tenant_name: str, tmp_path: Path
) -> None:
    from kubeaccel.kube.tenancy import create_tenant

    create_tenant(kube, tenant_name, {})
    nobody = restricted_kubeconfig(kube, kubeconfig, tenant_name, tmp_path)
    code, _, error = run_cli(["spark", "list", "-n", tenant_name, "--kubeconfig", str(nobody)])
    assert code == 5
    assert isinstance(error, KubeaccelError)
    assert f"cannot list pods in namespace {tenant_name!r}" in error.message
    assert "RBAC" in (error.hint or "")

    submit_args = [
        "spark",
        "submit",
        "--kubeconfig",
        str(nobody),
        "--master",
        f"k8s://{kube.server}",
        "--conf",
        f"spark.kubernetes.namespace={tenant_name}",
        "--conf",
        "spark.kubernetes.container.image=i",
        "local:///opt/app.py",
    ]
    code, _, error = run_cli(submit_args)
    assert code == 5
    assert isinstance(error, KubeaccelError)
    assert f"cannot list resourcequotas in namespace {tenant_name!r}" in error.message
    assert "--no-preflight" in (error.hint or "")
    code, _, error = run_cli([*submit_args[:-1], "--no-preflight", submit_args[-1]])
    assert code == 5
    assert isinstance(error, KubeaccelError)
    assert "cannot create pod" in error.message and tenant_name in error.message


def test_unreachable_server(tmp_path: Path, kubeconfig: Path) -> None:
    config = yaml.safe_load(kubeconfig.read_text())
    for cluster in config["clusters"]:
        cluster["cluster"]["server"] = "https://127.0.0.1:1"
    path = tmp_path / "dead.kubeconfig"
    path.write_text(yaml.safe_dump(config))
    code, _, error = run_cli(["spark", "status", "ns:app-driver", "--kubeconfig", str(path)])
    assert code == 4
    assert isinstance(error, UnavailableError)
    assert "https://127.0.0.1:1" in error.message


def test_unknown_context(kubeconfig: Path) -> None:
    code, _, error = run_cli(["tenant", "show", "x", "--kubeconfig", str(kubeconfig), "--context", "nope"])
    assert code == 3
    assert isinstance(error, KubeaccelError)
    assert "known contexts" in (error.hint or "")
