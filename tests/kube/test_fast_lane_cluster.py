"""The door's fast lane against the real apiserver: it answers what lightkube answers, fails as lightkube
fails (a 403 is still told apart by who refused), and `status`/`list` never load lightkube at all."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from kubeaccel import errors
from kubeaccel.kube.client import Kube, load_config
from kubeaccel.kube.rest import NAMESPACES, PODS

pytestmark = pytest.mark.cluster


def _driver(name: str, app: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"spark-role": "driver", "spark-app-selector": app}},
        "spec": {"containers": [{"name": "c", "image": "busybox:fake"}]},
    }


def _names(items: list[dict[str, Any]]) -> list[str]:
    return sorted(item["metadata"]["name"] for item in items)


def test_both_lanes_list_and_delete_alike(kube: Kube, kubeconfig: Path, spark_namespace: str) -> None:
    fast = Kube.connect(kubeconfig=kubeconfig)
    slow = Kube(load_config(kubeconfig=kubeconfig))
    assert fast._fast is not None and slow._fast is None
    tag = uuid.uuid4().hex[:6]
    for index in range(3):
        kube.create(_driver(f"d{index}-{tag}", f"app-{tag}"), namespace=spark_namespace)
    selectors: list[dict[str, Any]] = [
        {"labels": {"spark-app-selector": f"app-{tag}"}},
        {"labels": {"spark-role": "driver"}, "fields": {"metadata.name": f"d1-{tag}"}},
    ]
    for selector in selectors:
        a = fast.list_raw(PODS, spark_namespace, **selector)
        b = slow.list_raw(PODS, spark_namespace, **selector)
        assert _names(a) == _names(b) != []
        assert [x["metadata"]["labels"] for x in a] == [x["metadata"]["labels"] for x in b]
    assert spark_namespace in _names(fast.list_raw(NAMESPACES))
    assert {p["metadata"]["namespace"] for p in fast.list_raw(PODS, "*", labels={"spark-app-selector": f"app-{tag}"})} \
        == {spark_namespace}

    fast.delete(PODS, f"d0-{tag}", spark_namespace, grace_period=0)
    for lane in (fast, slow):
        with pytest.raises(errors.ApiNotFoundError) as missing:
            lane.delete(PODS, f"d0-{tag}", spark_namespace)
        assert missing.value.exit_code == 3
        lane.delete(PODS, f"d0-{tag}", spark_namespace, missing_ok=True)
        with pytest.raises(errors.InvalidError):  # the API's own validation of a selector
            lane.list_raw(PODS, spark_namespace, labels={"bad key!": "x"})


def test_a_refusal_on_the_fast_lane_is_still_told_apart(
    make_user: Callable[[dict[str | None, list[Any]]], Path], spark_namespace: str
) -> None:
    # may read namespaces only: listing pods is refused by RBAC, which only the slow lane can ask about
    reader = Kube.connect(kubeconfig=make_user({None: [{"apiGroups": [""], "resources": ["namespaces"],
                                                        "verbs": ["list"]}]}))
    assert reader._fast is not None
    assert spark_namespace in _names(reader.list_raw(NAMESPACES))
    with pytest.raises(errors.ForbiddenError) as refused:
        reader.list_raw(PODS, spark_namespace)
    assert refused.value.exit_code == 5 and "RBAC" in (refused.value.hint or "")
    with pytest.raises(errors.ForbiddenError):
        reader.delete(PODS, "anything", spark_namespace)


def test_a_token_file_is_read_and_sent(
    make_user: Callable[[dict[str | None, list[Any]]], Path], spark_namespace: str, tmp_path: Path
) -> None:
    config = yaml.safe_load(make_user({spark_namespace: [{"apiGroups": [""], "resources": ["pods"],
                                                          "verbs": ["list"]}]}).read_text())
    for user in config["users"]:
        (tmp_path / "token").write_text(user["user"].pop("token"))
        user["user"]["tokenFile"] = "token"
    (tmp_path / "by-file").write_text(yaml.safe_dump(config))
    lane = Kube.connect(kubeconfig=tmp_path / "by-file")
    assert lane._fast is not None
    lane.list_raw(PODS, spark_namespace)  # allowed: a 401 or 403 would raise
    with pytest.raises(errors.ForbiddenError):
        lane.list_raw(PODS, "default")  # the token's identity, not an admin's


def test_http_on_the_https_port_is_unreachable_on_the_fast_lane(kubeconfig: Path, kube: Kube) -> None:
    plain = Kube.connect(kubeconfig=kubeconfig, server=kube.server.replace("https://", "http://"))
    assert plain._fast is not None
    with pytest.raises(errors.UnavailableError) as unreachable:
        plain.list_raw(PODS, "default")
    assert unreachable.value.exit_code == 4


def test_submit_status_and_list_do_not_load_lightkube(kubeconfig: Path, kube: Kube, spark_namespace: str) -> None:
    kube.create(_driver("lean-driver", "app-lean"), namespace=spark_namespace)
    submit = ["spark", "submit", "--master", f"k8s://{kube.server}", "--kubeconfig", str(kubeconfig),
              "--conf", f"spark.kubernetes.namespace={spark_namespace}",
              "--conf", "spark.kubernetes.container.image=img", "local:///opt/app.py"]
    probe = (
        "import sys, json\n"
        "from kubeaccel.cli import main\n"
        f"for argv in ({submit!r}, ['spark', 'status', sys.argv[1], '-o', 'json', '--kubeconfig', sys.argv[2]],\n"
        "             ['spark', 'list', '-o', 'json', '--kubeconfig', sys.argv[2]]):\n"
        "    try:\n"
        "        main(argv)\n"
        "    except SystemExit as exc:\n"
        "        assert not exc.code, exc.code\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('lightkube', 'httpx2', 'httpcore2', 'h2'))\n"
        "print(json.dumps(heavy))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe, f"{spark_namespace}:lean-driver", str(kubeconfig)],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert f"{spark_namespace}:lean-driver" in done.stdout
    assert json.loads(lines[-1]) == []


def test_submit_into_a_quota_namespace_does_not_load_lightkube(kubeconfig: Path, kube: Kube) -> None:
    """The quota pre-flight's lock (a Lease: get, create, compare-and-swap replace) and its reading of the
    admitted apps' confs (a ConfigMap get) ride the fast lane too: a tenant's submit stays light."""
    from kubeaccel.kube.tenancy import create_tenant
    from kubeaccel.spark.reservation import LEASE_NAME

    tenant = f"quota-{uuid.uuid4().hex[:6]}"
    create_tenant(kube, tenant, {"requests.cpu": "16", "requests.memory": "64Gi", "pods": "20"})
    try:
        kube.apply(
            {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "default", "namespace": tenant}},
            namespace=tenant,
        )
        submit = ["spark", "submit", "--master", f"k8s://{kube.server}", "--kubeconfig", str(kubeconfig),
                  "--conf", f"spark.kubernetes.namespace={tenant}", "--conf", "spark.executor.instances=2",
                  "--conf", "spark.kubernetes.container.image=img", "local:///opt/app.py"]
        probe = (
            "import sys, json\n"
            "from kubeaccel.cli import main\n"
            "for _ in range(2):  # the second pre-flight reads the first app's conf ConfigMap\n"
            "    try:\n"
            f"        main({submit!r})\n"
            "    except SystemExit as exc:\n"
            "        assert not exc.code, exc.code\n"
            "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('lightkube', 'httpx2', 'httpcore2', 'h2'))\n"
            "print(json.dumps(heavy))\n"
        )
        done = subprocess.run(
            [sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=False
        )
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout.strip().splitlines()[-1]) == []
        from kubeaccel.kube.rest import LEASES

        lease = kube.get_raw(LEASES, LEASE_NAME, tenant)
        assert not lease["spec"].get("holderIdentity")  # released by both submits
        assert lease["spec"]["leaseTransitions"] >= 1
        drivers = kube.list_raw(PODS, tenant, labels={"spark-role": "driver"})
        assert len(drivers) == 2
    finally:
        kube.delete(NAMESPACES, tenant, missing_ok=True)


def test_both_lanes_create_alike(kube: Kube, kubeconfig: Path, spark_namespace: str) -> None:
    fast = Kube.connect(kubeconfig=kubeconfig)
    slow = Kube(load_config(kubeconfig=kubeconfig))
    made = {}
    for lane_name, lane in (("fast", fast), ("slow", slow)):
        manifest = {"apiVersion": "v1", "kind": "ConfigMap",
                    "metadata": {"name": f"cm-{lane_name}", "labels": {"a": "b"}}, "data": {"k": "v"}}
        made[lane_name] = lane.create(manifest, namespace=spark_namespace)
        with pytest.raises(errors.AlreadyExistsError) as clash:
            lane.create(manifest, namespace=spark_namespace)
        assert clash.value.exit_code == 2
    for created in made.values():
        assert created["data"] == {"k": "v"} and created["metadata"]["labels"] == {"a": "b"}
        assert created["metadata"]["namespace"] == spark_namespace and created["metadata"]["uid"]
        assert {m["manager"] for m in created["metadata"]["managedFields"]} == {"kubeaccel"}
    with pytest.raises(errors.InvalidError):  # the API's own validation, on the fast lane
        fast.create({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "Not_A_Name"}},
                    namespace=spark_namespace)


def test_a_bare_master_without_any_kubeconfig_is_a_clear_error(kube: Kube, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"} | {"HOME": str(tmp_path)}
    argv = [sys.executable, "-m", "kubeaccel.cli", "spark", "submit", "--master", f"k8s://{kube.server}",
            "--conf", "spark.kubernetes.container.image=img", "local:///opt/app.py"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, env=env, check=False)
    # anonymous, with the system's CAs: the local cluster's own CA is not among them
    assert done.returncode == 4, done.stderr
    assert "Traceback" not in done.stderr and "certificate verify failed" in done.stderr
