"""Tier 2: a real kubelet with containerd, runc and a CNI bridge, joined to the local control plane."""

from __future__ import annotations

from collections.abc import Callable

from kubeaccel.cluster.layout import Layout
from kubeaccel.errors import KubeaccelError


def check_host() -> None:
    raise KubeaccelError("the real node (tier 2) is not available yet", hint="leave out --real-node")


def up(layout: Layout, server: str, progress: Callable[[str], None]) -> str:
    check_host()
    return ""


def down(layout: Layout) -> list[str]:
    return []
