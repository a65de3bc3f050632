"""Tenancy, pure part: quota parsing (extended resources as requests.<name>), manifests, shortfalls."""

from __future__ import annotations

from decimal import Decimal

import pytest

from kubeaccel.errors import ConfigError
from kubeaccel.kube.tenancy import parse_quota, shortfalls, tenant_manifests


def test_parse_quota_maps_names_to_quota_keys() -> None:
    assert parse_quota("cpu=16,memory=64Gi,nec.com/ve=8, pods=20") == {
        "requests.cpu": "16",
        "requests.memory": "64Gi",
        "requests.nec.com/ve": "8",
        "pods": "20",
    }
    assert parse_quota("limits.memory=1Ti,requests.nvidia.com/gpu=2") == {
        "limits.memory": "1Ti",
        "requests.nvidia.com/gpu": "2",
    }


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("cpu", "NAME=AMOUNT"),
        ("cpu=lots", "not a Kubernetes quantity"),
        ("limits.nec.com/ve=1", "limits quota"),
        ("bananas=3", "ResourceQuota can limit"),
        ("cpu=", "NAME=AMOUNT"),
    ],
)
def test_bad_quota(text: str, words: str) -> None:
    with pytest.raises(ConfigError, match=words):
        parse_quota(text)


def test_manifests() -> None:
    manifests = tenant_manifests("team-a", {"requests.nec.com/ve": "8"})
    kinds = [m["kind"] for m in manifests]
    assert kinds == ["Namespace", "ServiceAccount", "Role", "RoleBinding", "ResourceQuota"]
    role = manifests[2]
    assert role["rules"][0]["resources"] == ["pods", "services", "configmaps", "persistentvolumeclaims"]
    binding = manifests[3]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "spark", "namespace": "team-a"}]
    assert manifests[4]["spec"]["hard"] == {"requests.nec.com/ve": "8"}
    assert "ResourceQuota" not in [m["kind"] for m in tenant_manifests("team-b", {})]
    with pytest.raises(ConfigError, match="not a valid namespace"):
        tenant_manifests("Team_A", {})


def test_shortfalls() -> None:
    hard = {"requests.cpu": "16", "memory": "64Gi", "requests.nec.com/ve": "8", "pods": "100"}
    used = {"requests.cpu": "10", "memory": "8Gi", "requests.nec.com/ve": "4"}
    needed = {
        "requests.cpu": Decimal(7),
        "requests.memory": Decimal(56 * 2**30),
        "requests.nec.com/ve": Decimal(4),
        "pods": Decimal(4),
    }
    [short] = shortfalls("q", hard, used, needed)
    assert (short.resource, short.needed, short.remaining) == ("requests.cpu", 7, 6)
    assert "needs 7, quota q has 6 left of 16" in short.describe()
    assert shortfalls("q", hard, used, {**needed, "requests.cpu": Decimal(6)}) == []
    [ve] = shortfalls("q", hard, used, {"requests.nec.com/ve": Decimal(5)})
    assert ve.remaining == 4


def test_shortfalls_set_aside_what_admitted_apps_still_need() -> None:
    hard, used = {"requests.nec.com/ve": "8"}, {"requests.nec.com/ve": "2"}
    needed = {"requests.nec.com/ve": Decimal(2)}
    assert shortfalls("q", hard, used, needed, {"requests.nec.com/ve": Decimal(4)}) == []
    [short] = shortfalls("q", hard, used, needed, {"requests.nec.com/ve": Decimal(5)})
    assert short.describe() == (
        "requests.nec.com/ve: the app needs 2, quota q has 6 left of 8, of which 5 other apps' executors still need"
    )
