"""Tenant inputs are all validated before the first write (pure; hypothesis over the quota grammar).

Matrix: reserved namespaces refused, `default` only with force; duplicate quota keys (also `cpu` vs
`requests.cpu`) refused; negative amounts and invalid extended-resource names refused; Pod Security
labels for each level; the CLI refuses all of these with exit 2 before it connects (no kubeconfig needed).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from fixtures.spark import run_cli
from hypothesis import given
from hypothesis import strategies as st

from kubeaccel.errors import ConfigError
from kubeaccel.kube.tenancy import (
    POD_SECURITY_LEVELS,
    RESERVED_NAMESPACES,
    parse_quota,
    pod_security_labels,
    tenant_manifests,
    validate_quota,
)


@pytest.mark.parametrize("name", RESERVED_NAMESPACES)
def test_kubernetes_namespaces_are_refused_even_with_force(name: str) -> None:
    with pytest.raises(ConfigError, match="belongs to Kubernetes"):
        tenant_manifests(name, {}, force=True)


def test_default_only_with_force() -> None:
    with pytest.raises(ConfigError, match="--force"):
        tenant_manifests("default", {})
    assert tenant_manifests("default", {}, force=True)[0]["metadata"]["name"] == "default"


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("cpu=8,cpu=9", "given twice"),
        ("cpu=8,requests.cpu=9", "given twice"),
        ("nec.com/ve=1,requests.nec.com/ve=2", "given twice"),
        ("cpu=-1", "zero or more"),
        ("memory=-1Gi", "zero or more"),
        ("nec com/ve=1", "not a valid extended resource name"),
        ("Nec.com/ve=1", "not a valid extended resource name"),
        ("nec.com/=1", "not a valid extended resource name"),
        ("nec.com/ve=1.5x", "not a Kubernetes quantity"),
    ],
)
def test_bad_quota_refused(text: str, words: str) -> None:
    with pytest.raises(ConfigError, match=words):
        parse_quota(text)


@given(
    st.dictionaries(
        st.sampled_from(["cpu", "memory", "pods", "nec.com/ve", "nvidia.com/gpu", "limits.cpu"]),
        st.integers(min_value=0, max_value=10**6),
        min_size=1,
    )
)
def test_valid_quota_round_trips(quota: dict[str, int]) -> None:
    text = ",".join(f"{key}={value}" for key, value in quota.items())
    hard = parse_quota(text)
    assert len(hard) == len(quota)
    assert sorted(hard.values()) == sorted(str(v) for v in quota.values())
    assert validate_quota(hard) == hard  # already-normalised keys stay as they are


@given(st.sampled_from(["cpu", "nec.com/ve", "pods"]), st.integers(min_value=1, max_value=10**6))
def test_negative_amounts_never_pass(key: str, amount: int) -> None:
    with pytest.raises(ConfigError):
        parse_quota(f"{key}=-{amount}")


@pytest.mark.parametrize("level", POD_SECURITY_LEVELS)
def test_pod_security_labels(level: str) -> None:
    labels = tenant_manifests("team-a", {}, pod_security=level)[0]["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == level
    assert labels == {**labels, **pod_security_labels(level)}


def test_default_pod_security_is_baseline() -> None:
    labels = tenant_manifests("team-a", {})[0]["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "baseline"
    with pytest.raises(ConfigError, match="Pod Security level"):
        pod_security_labels("lax")


def test_role_lets_submitters_take_the_quota_lock() -> None:
    role = tenant_manifests("team-a", {})[2]
    assert {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["get", "create", "update"]} in (
        role["rules"]
    )


@pytest.mark.parametrize(
    "args",
    [
        ["kube-system", "--quota", "cpu=1"],
        ["default", "--quota", "cpu=1"],
        ["t", "--quota", "cpu=8,cpu=9"],
        ["t", "--quota", "cpu=-1"],
        ["t", "--quota", "bad name/x=1"],
    ],
)
def test_cli_refuses_before_connecting(args: list[str], tmp_path: Path) -> None:
    code, _, error = run_cli(["tenant", "create", *args, "--kubeconfig", str(tmp_path / "absent")])
    assert code == 2, error
    assert "hint" in str(error)
