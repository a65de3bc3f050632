"""status / list / kill over many apps report what succeeded and what failed (real apiserver, real RBAC).

Matrix: a user who may list pods everywhere but delete them in one namespace only: `kill` deletes what it
may, lists every app it could not kill with the reason, exits 7, JSON has both; a user who may not list
across namespaces: `status` searches the namespaces one by one and reports the unreadable ones; all
failing with one cause keeps that cause's exit code.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from fixtures.rbac import rule
from fixtures.spark import ON_KWOK, SPARK_USER, run_cli

from kubeaccel.kube.client import Kube
from kubeaccel.kube.tenancy import create_tenant
from kubeaccel.spark import manage
from kubeaccel.spark.conf import SubmitRequest
from kubeaccel.spark.ids import SubmissionId
from kubeaccel.spark.manage import PARTIAL_EXIT_CODE
from kubeaccel.spark.submit import submit

pytestmark = pytest.mark.cluster


@pytest.fixture
def two_namespaces(kube: Kube) -> Any:
    from lightkube.resources.core_v1 import Namespace

    names = [f"partial-{uuid.uuid4().hex[:6]}" for _ in range(2)]
    for name in names:
        create_tenant(kube, name, {})
        kube.apply(
            {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "default", "namespace": name}},
            namespace=name,
        )
    yield names
    for name in names:
        kube.delete(Namespace, name, missing_ok=True)


def _apps(kube: Kube, namespaces: list[str], prefix: str, monkeypatch: pytest.MonkeyPatch) -> list[SubmissionId]:
    monkeypatch.setenv("SPARK_USER", SPARK_USER)
    ids = []
    for namespace in namespaces:
        for n in range(2):
            request = SubmitRequest(
                "local:///opt/app.py",
                master=f"k8s://{kube.server}",
                name=f"{prefix}-{n}",
                conf={"spark.kubernetes.namespace": namespace, "spark.kubernetes.container.image": "i", **ON_KWOK},
            )
            ids.append(submit(request, kube=kube, check_quota=False))
    return ids


def test_partial_kill_lists_both_and_exits_7(
    kube: Kube, two_namespaces: list[str], make_user: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    allowed, refused = two_namespaces
    prefix = f"k{uuid.uuid4().hex[:6]}"
    ids = _apps(kube, two_namespaces, prefix, monkeypatch)
    user = make_user({None: [rule("pods", "list")], allowed: [rule("pods", "delete")]})
    base = ["--kubeconfig", str(user), "--grace-period", "0"]

    code, output, error = run_cli(["spark", "kill", f"*:{prefix}-*", "-o", "json", *base])
    assert code == PARTIAL_EXIT_CODE, (output, error)
    report, _ = json.JSONDecoder().raw_decode(output)  # stdout first, then the error lines
    assert sorted(report["killed"]) == sorted(str(i) for i in ids if i.namespace == allowed)
    assert sorted(f["id"] for f in report["failed"]) == sorted(str(i) for i in ids if i.namespace == refused)
    assert all(f["exit_code"] == 5 and "forbidden" in f["error"] for f in report["failed"])
    assert sorted(a.id for a in manage.list_apps(kube, namespace="*", name=f"{prefix}-*")) == sorted(
        str(i) for i in ids if i.namespace == refused
    )

    # table output: a line per app killed, an error line per app not killed, the same exit code
    code, output, _ = run_cli(["spark", "kill", f"*:{prefix}-*", *base])
    assert code == 5  # nothing left that may be killed: every failure is the same RBAC refusal
    for sid in (i for i in ids if i.namespace == refused):
        assert f"could not kill {sid}: forbidden" in output


def test_status_without_a_cluster_wide_list_reads_namespace_by_namespace(
    kube: Kube, two_namespaces: list[str], make_user: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    readable, hidden = two_namespaces
    prefix = f"s{uuid.uuid4().hex[:6]}"
    ids = _apps(kube, two_namespaces, prefix, monkeypatch)
    user = make_user({None: [rule("namespaces", "list")], readable: [rule("pods", "list")]})

    code, output, error = run_cli(["spark", "status", f"*:{prefix}-*", "-o", "json", "--kubeconfig", str(user)])
    assert code == PARTIAL_EXIT_CODE, (output, error)
    report, _ = json.JSONDecoder().raw_decode(output)  # stdout first, then the error lines
    assert sorted(a["id"] for a in report["apps"]) == sorted(str(i) for i in ids if i.namespace == readable)
    failed = {f["id"]: f for f in report["failed"]}
    assert f"{hidden}:{prefix}-*" in failed
    assert failed[f"{hidden}:{prefix}-*"]["exit_code"] == 5
    assert "kube-system" in {f.split(":")[0] for f in failed}

    # `list` reports the same way; the table says which namespaces could not be read
    code, output, error = run_cli(["spark", "list", "-n", "*", "--name", f"{prefix}-*", "--kubeconfig", str(user)])
    assert code == PARTIAL_EXIT_CODE, (output, error)
    assert f"could not read {hidden}:{prefix}-*" in output


def test_status_all_apps_readable_has_no_failures(
    kube: Kube, kubeconfig: Path, two_namespaces: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    prefix = f"a{uuid.uuid4().hex[:6]}"
    ids = _apps(kube, two_namespaces, prefix, monkeypatch)
    code, output, _ = run_cli(["spark", "status", f"*:{prefix}-*", "-o", "json", "--kubeconfig", str(kubeconfig)])
    assert code == 0
    report = json.loads(output)
    assert report["failed"] == []
    assert sorted(a["id"] for a in report["apps"]) == sorted(map(str, ids))
