"""What a local cluster should look like: parsed and validated once, at the edge, then passed inward."""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator

from kubeaccel.devices.naming import is_valid_resource_name
from kubeaccel.errors import ConfigError

DEFAULT_NODE_RESOURCES: dict[str, str] = {"cpu": "32", "memory": "128Gi", "pods": "110"}

# Kubernetes quantities: a decimal number with an optional SI or binary suffix.
_QUANTITY_RE = re.compile(r"^[+]?([0-9]+(\.[0-9]*)?|\.[0-9]+)(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei|[eE][0-9]+)?$")
_NATIVE_RESOURCES = {"cpu", "memory", "pods", "ephemeral-storage"}
_NODE_NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


def default_state_dir() -> Path:
    return Path.home() / ".local" / "state" / "kubeaccel" / "cluster"


def parse_node_resource(text: str) -> tuple[str, str]:
    """``nec.com/ve=8`` -> ``("nec.com/ve", "8")``; native names (cpu, memory, pods) are allowed too."""
    name, sep, quantity = text.partition("=")
    name, quantity = name.strip(), quantity.strip()
    if not sep or not name or not quantity:
        raise ConfigError(
            f"node resource {text!r} is not NAME=QUANTITY",
            hint="write it like --node-resource nec.com/ve=8 or --node-resource memory=64Gi",
        )
    if name not in _NATIVE_RESOURCES and not is_valid_resource_name(name):
        raise ConfigError(
            f"{name!r} is not a valid extended resource name",
            hint="extended resources look like vendor.example.com/device (a DNS domain, '/', a name)",
        )
    if not _QUANTITY_RE.match(quantity):
        raise ConfigError(
            f"{quantity!r} (for {name}) is not a Kubernetes quantity",
            hint="use a number with an optional suffix, e.g. 8, 500m, 64Gi",
        )
    return name, quantity


def node_resources(items: list[str] | tuple[str, ...]) -> dict[str, str]:
    """The capacity of each simulated node: defaults for cpu/memory/pods, overridden and extended by ``items``."""
    resources = dict(DEFAULT_NODE_RESOURCES)
    for item in items:
        name, quantity = parse_node_resource(item)
        resources[name] = quantity
    return resources


class ClusterSpec(BaseModel):
    """A tier-1 cluster (control plane + kwok nodes), optionally with the real node (tier 2)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    state_dir: Path = Field(default_factory=default_state_dir)
    nodes: int = Field(default=1, ge=0, le=1000)
    node_resources: dict[str, str] = Field(default_factory=lambda: dict(DEFAULT_NODE_RESOURCES))
    node_prefix: str = "kwok-node"
    real_node: bool = False
    # Replace an existing cluster in state_dir (its etcd data is lost) instead of reusing or repairing it.
    fresh: bool = False
    # 0 = pick a free port
    apiserver_port: int = Field(default=0, ge=0, le=65535)
    etcd_port: int = Field(default=0, ge=0, le=65535)
    # Serve the core Workload API (feature gate GenericWorkload, runtime config scheduling.k8s.io/v1beta1):
    # on by default; off only for tests of what a gang does on a cluster without it.
    workload_api: bool = True

    @field_validator("node_prefix")
    @classmethod
    def _valid_prefix(cls, value: str) -> str:
        if not _NODE_NAME_RE.match(f"{value}-0"):
            raise ValueError("must be a lowercase DNS label (letters, digits, '-')")
        return value

    @field_validator("node_resources")
    @classmethod
    def _valid_resources(cls, value: dict[str, str]) -> dict[str, str]:
        for name, quantity in value.items():
            parse_node_resource(f"{name}={quantity}")
        return value

    def node_names(self) -> list[str]:
        return [f"{self.node_prefix}-{i}" for i in range(self.nodes)]
