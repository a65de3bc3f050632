"""Helpers for the DRA driver's tests: the real daemon in-process on temp kubelet directories.

``dra_node`` runs ``DraDaemon`` (real gRPC servers on unix sockets, real CDI files, a real
checkpoint) for a simulated ``example.com/sim`` (4 devices, 2 NUMA nodes, a state file, device
nodes). Without ``publish`` no API server is needed: claims are read from ``claims``, a dict the
test fills with ResourceClaim JSON as the API server would return it (the cluster tests use the
real API server instead).
"""

from __future__ import annotations

import json
import os
import tempfile
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import yaml

from kubeaccel.cluster.images import BUSYBOX_IMAGE
from kubeaccel.devices.config import load_config
from kubeaccel.dra._generated import dra_v1_pb2, dra_v1_pb2_grpc
from kubeaccel.dra._generated import pluginregistration_pb2 as reg_pb
from kubeaccel.dra._generated import pluginregistration_pb2_grpc as reg_grpc
from kubeaccel.dra.daemon import BackgroundDraDaemon, DraDaemon, KubeAccess, Options
from kubeaccel.dra.model import pool_name
from kubeaccel.errors import NotFoundError, UnavailableError

SIM = "example.com/sim"
DRIVER = "dra.kubeaccel.io"
NODE = "node-a"
POOL = pool_name(NODE, SIM)


class DictAccess(KubeAccess):
    """Claims from a dict (namespace, name) -> JSON; ``down`` makes every read fail like a dead API server."""

    def __init__(self, claims: dict[tuple[str, str], Any]) -> None:
        super().__init__()
        self.claims = claims
        self.down = False
        self.reads = 0

    async def read_claim(self, namespace: str, name: str) -> Mapping[str, Any]:
        self.reads += 1
        if self.down:
            raise UnavailableError("cannot reach the Kubernetes API server https://127.0.0.1:1: refused")
        try:
            return self.claims[(namespace, name)]  # type: ignore[no-any-return]
        except KeyError:
            raise NotFoundError(f"resourceclaim {name} not found") from None


def claim_json(name: str, devices: list[str], *, uid: str | None = None, namespace: str = "ns",
               driver: str = DRIVER, pool: str = POOL, request: str = "req") -> dict[str, Any]:
    return {
        "apiVersion": "resource.k8s.io/v1", "kind": "ResourceClaim",
        "metadata": {"name": name, "namespace": namespace, "uid": uid or str(uuid.uuid4())},
        "spec": {"devices": {"requests": [{"name": request, "exactly": {"deviceClassName": "sim.example.com"}}]}},
        "status": {"allocation": {"devices": {"results": [
            {"request": request, "driver": driver, "pool": pool, "device": d} for d in devices]}}},
    }


@dataclass
class DraNode:
    base: Path
    options: Options
    config_path: Path
    state_file: Path
    access: Any
    runner: BackgroundDraDaemon | None = None
    channels: list[grpc.Channel] = field(default_factory=list)

    @property
    def daemon(self) -> DraDaemon:
        assert self.runner is not None
        return self.runner.daemon

    def start(self) -> DraNode:
        daemon = DraDaemon(lambda: load_config(self.config_path), self.options, access=self.access)
        self.runner = BackgroundDraDaemon(daemon).start()
        return self

    def stop(self) -> None:
        for channel in self.channels:
            channel.close()
        self.channels.clear()
        if self.runner is not None:
            self.runner.stop()
            self.runner = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def channel(self, path: Path) -> grpc.Channel:
        channel = grpc.insecure_channel(f"unix://{path}")
        self.channels.append(channel)
        return channel

    def dra(self) -> dra_v1_pb2_grpc.DRAPluginStub:
        return dra_v1_pb2_grpc.DRAPluginStub(self.channel(self.options.endpoint))

    def registration(self) -> reg_grpc.RegistrationStub:
        return reg_grpc.RegistrationStub(self.channel(self.options.registration_socket))

    def add_claim(self, claim: dict[str, Any]) -> dra_v1_pb2.Claim:
        meta = claim["metadata"]
        self.access.claims[(meta["namespace"], meta["name"])] = claim
        return dra_v1_pb2.Claim(namespace=meta["namespace"], name=meta["name"], uid=meta["uid"])

    def prepare(self, *claims: dra_v1_pb2.Claim) -> dra_v1_pb2.NodePrepareResourcesResponse:
        return self.dra().NodePrepareResources(dra_v1_pb2.NodePrepareResourcesRequest(claims=claims), timeout=10)

    def unprepare(self, *claims: dra_v1_pb2.Claim) -> dra_v1_pb2.NodeUnprepareResourcesResponse:
        return self.dra().NodeUnprepareResources(dra_v1_pb2.NodeUnprepareResourcesRequest(claims=claims), timeout=10)

    def set_states(self, states: dict[str, str]) -> None:
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(states))
        os.replace(tmp, self.state_file)

    def info(self) -> reg_pb.PluginInfo:
        return self.registration().GetInfo(reg_pb.InfoRequest(), timeout=10)


def make_node(*, publish: bool = False, count: int = 4, access: KubeAccess | None = None,
              cdi_dir: Path | None = None, node: str = NODE, **options: Any) -> DraNode:
    base = Path(tempfile.mkdtemp(prefix="kdra-"))  # short: unix socket paths are limited to 107 bytes
    for sub in ("registry", "plugins", "state", "cdi", "dev"):
        (base / sub).mkdir()
    state_file = base / "state.json"
    config_path = base / "config.yaml"
    config_path.write_text(yaml.safe_dump({"resources": [{
        "name": SIM, "backend": "simulated", "count": count, "numaNodes": 2,
        "stateFile": str(state_file), "deviceDir": str(base / "dev")}]}))
    opts = Options(node=node, driver=DRIVER, registry_dir=base / "registry", plugins_dir=base / "plugins",
                   state_dir=base / "state", cdi_dir=cdi_dir or base / "cdi", publish=publish, **options)
    return DraNode(base, opts, config_path, state_file, access or DictAccess({}))


# Pods with a claim on a given node (the real-node tests).


def _claim_pod_manifest(name: str, node: str, template: str, command: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
        "spec": {
            "restartPolicy": "Never", "terminationGracePeriodSeconds": 1,
            "nodeSelector": {"kubernetes.io/hostname": node},
            "resourceClaims": [{"name": "dev", "resourceClaimTemplateName": template}],
            "containers": [{"name": "main", "image": BUSYBOX_IMAGE, "imagePullPolicy": "Never",
                            "command": ["sh", "-c", command], "resources": {"claims": [{"name": "dev"}]}}],
        },
    }


def claim_pod(cluster: Any, ns: str, node: str, name: str, command: str, count: int = 2) -> None:
    template = {"apiVersion": "resource.k8s.io/v1", "kind": "ResourceClaimTemplate",
                "metadata": {"name": f"{name}-t"},
                "spec": {"spec": {"devices": {"requests": [{"name": "sim", "exactly": {
                    "deviceClassName": "sim.example.com", "count": count}}]}}}}
    cluster.apply(yaml.safe_dump(template), namespace=ns)
    cluster.apply(json.dumps(_claim_pod_manifest(name, node, f"{name}-t", command)), namespace=ns)


def pod_phase(cluster: Any, ns: str, name: str) -> str:
    return cluster.kubectl("get", "pod", name, "-n", ns, "-o", "jsonpath={.status.phase}", check=False).stdout
