"""The DRA checker's state across steps, and what every step shares: the connections it holds as the
kubelet would (one per registration socket and DRA endpoint, dropped together on a kubelet
restart), the negotiated services, the claim it allocated, the CDI IDs that were in the CDI
directory before it prepared, and how a transport error becomes a step's verdict."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import yaml

from kubeaccel.conformance import StepSkippedError
from kubeaccel.dra._generated import dra_v1_pb2, dra_v1_pb2_grpc, dra_v1beta1_pb2, dra_v1beta1_pb2_grpc
from kubeaccel.dra._generated import pluginregistration_pb2 as reg_pb
from kubeaccel.dra._generated import pluginregistration_pb2_grpc as reg_grpc
from kubeaccel.dra.registration import DRA_V1_SERVICE
from kubeaccel.errors import KubeaccelError

# Each channel its own connections, as each grpc-go ClientConn of the kubelet has: the shared
# subchannel pool would carry an earlier channel's backoff to the same socket over a restart.
CHANNEL_OPTIONS = [("grpc.use_local_subchannel_pool", 1)]


def describe(exc: grpc.aio.AioRpcError) -> str:
    return f"{exc.code().name}: {exc.details()}"


def failure(exc: Exception) -> str:
    """Every error fails the step: a driver's garbage (or a dead API server) must not crash the checker."""
    if isinstance(exc, grpc.aio.AioRpcError):
        return describe(exc)
    if isinstance(exc, KubeaccelError):
        return exc.message
    return f"unexpected: {exc!r}"


def cdi_ids_in_dir(directory: Path) -> set[str]:
    """Every fully qualified CDI device name declared by a spec in ``directory`` (JSON is YAML too)."""
    ids: set[str] = set()
    for path in [*directory.glob("*.json"), *directory.glob("*.yaml")]:
        try:
            doc = yaml.safe_load(path.read_text())
            ids |= {f"{doc['kind']}={d['name']}" for d in doc.get("devices") or []}
        except (OSError, yaml.YAMLError, KeyError, TypeError, AttributeError):
            continue
    return ids


class Session:
    def __init__(  # noqa: PLR0917
        self, registry_dir: Path, driver: str | None, node: str, namespace: str,
        kube_factory: Callable[[], Any], cdi_dir: Path | None, timeout: float) -> None:
        self.registry_dir = registry_dir
        self.want_driver = driver
        self.node = node
        self.namespace = namespace
        self._kube_factory = kube_factory
        self._kube: Any = None
        self.cdi_dir = cdi_dir
        self.timeout = timeout
        self.socket: Path | None = None
        self.info = reg_pb.PluginInfo()
        self.service = ""
        self.health_service = ""
        self.channels: list[grpc.aio.Channel] = []
        self.dra: Any = None
        self.pool = ""
        self.device = ""
        self.claim: dict[str, Any] | None = None
        self.first: Any = None
        self.cdi_before: set[str] = set()  # CDI IDs in --cdi-dir before our prepare (driver-wide specs)

    def kube(self) -> Any:
        if self._kube is None:
            self._kube = self._kube_factory()
        return self._kube

    def channel(self, path: str | Path) -> grpc.aio.Channel:
        channel = grpc.aio.insecure_channel(f"unix://{path}", options=CHANNEL_OPTIONS)
        self.channels.append(channel)
        return channel

    async def drop_connections(self) -> None:
        for channel in self.channels:
            await channel.close(None)
        self.channels.clear()
        self.dra = None

    def connect(self) -> None:
        module = dra_v1_pb2_grpc if self.service == DRA_V1_SERVICE else dra_v1beta1_pb2_grpc
        self.dra = module.DRAPluginStub(self.channel(self.info.endpoint))

    @property
    def pb(self) -> Any:
        return dra_v1_pb2 if self.service == DRA_V1_SERVICE else dra_v1beta1_pb2

    def claim_ref(self) -> Any:
        if self.claim is None:
            raise StepSkippedError("no claim was allocated")
        meta = self.claim["metadata"]
        return self.pb.Claim(namespace=meta["namespace"], name=meta["name"], uid=meta["uid"])

    def stub(self) -> Any:
        if self.dra is None:
            raise StepSkippedError("no DRA endpoint")
        return self.dra

    async def prepare(self, *claims: Any) -> Any:
        request = self.pb.NodePrepareResourcesRequest(claims=claims)
        return await self.stub().NodePrepareResources(request, timeout=self.timeout)

    async def unprepare(self, *claims: Any) -> Any:
        request = self.pb.NodeUnprepareResourcesRequest(claims=claims)
        return await self.stub().NodeUnprepareResources(request, timeout=self.timeout)

    async def get_info(self) -> reg_pb.PluginInfo:
        assert self.socket is not None
        stub = reg_grpc.RegistrationStub(self.channel(self.socket))
        info: reg_pb.PluginInfo = await stub.GetInfo(reg_pb.InfoRequest(), timeout=self.timeout)
        return info

    async def notify(self) -> None:
        assert self.socket is not None
        stub = reg_grpc.RegistrationStub(self.channel(self.socket))
        await stub.NotifyRegistrationStatus(reg_pb.RegistrationStatus(plugin_registered=True), timeout=self.timeout)

    async def close(self) -> None:
        await self.drop_connections()
        if self.claim is not None and self._kube is not None:
            from kubeaccel.kube.dra import delete_claim

            meta = self.claim["metadata"]
            with contextlib.suppress(KubeaccelError):
                await asyncio.to_thread(delete_claim, self._kube, meta["namespace"], meta["name"])
        if self._kube is not None:
            self._kube.close()
