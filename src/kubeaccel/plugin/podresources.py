"""Which container holds which device: the kubelet's PodResources API, read for the metrics.

The kubelet serves ``v1.PodResourcesLister`` on ``/var/lib/kubelet/pod-resources/kubelet.sock``.
The API has no watch, so the list is read when it is needed, which is when Prometheus scrapes
``/metrics``: an idle daemon that nobody scrapes never calls it, and concurrent or rapid scrapes
share one ``List`` (at most one per ``MIN_INTERVAL_S``).

Everything the kubelet sends is bounded before it becomes a label: at most ``MAX_SERIES``
allocations (the rest counted, logged once), label values cut to ``MAX_LABEL_CHARS``, a response of
at most ``MAX_MESSAGE_BYTES``, ``LIST_TIMEOUT_S`` per call. A socket that does not exist (no
kubelet, or the API disabled) is silent; one that exists but does not answer is logged once,
until it answers again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from kubeaccel.plugin._generated import podresources_pb2 as pb
from kubeaccel.plugin._generated import podresources_pb2_grpc as pb_grpc
from kubeaccel.plugin.paths import DEFAULT_POD_RESOURCES_SOCKET

log = logging.getLogger(__name__)

LIST_TIMEOUT_S = 2.0
MIN_INTERVAL_S = 1.0
MAX_SERIES = 10_000
MAX_LABEL_CHARS = 256
MAX_MESSAGE_BYTES = 16 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Allocation:
    """One device of one of our resources, held by one container."""

    resource: str
    device: str
    namespace: str
    pod: str
    container: str


def _label(value: str) -> str:
    return value if len(value) <= MAX_LABEL_CHARS else value[:MAX_LABEL_CHARS]


def _all_allocations(response: pb.ListPodResourcesResponse, resources: Collection[str]) -> Iterator[Allocation]:
    for pod in response.pod_resources:
        for container in pod.containers:
            for devices in container.devices:
                if devices.resource_name not in resources:
                    continue
                for device in devices.device_ids:
                    yield Allocation(
                        _label(devices.resource_name), _label(device), _label(pod.namespace), _label(pod.name),
                        _label(container.name),
                    )


def allocations(
    response: pb.ListPodResourcesResponse, resources: Collection[str], limit: int = MAX_SERIES
) -> tuple[list[Allocation], int]:
    """The allocations of ``resources`` in ``response`` (at most ``limit``, distinct) and how many
    more there were."""
    found: dict[Allocation, None] = {}
    dropped = 0
    for allocation in _all_allocations(response, resources):
        if allocation in found:
            continue
        if len(found) < limit:
            found[allocation] = None
        else:
            dropped += 1
    return list(found), dropped


class PodResourcesReader:
    """Reads the kubelet's PodResources ``List`` over one unix socket (a channel kept while it works)."""

    def __init__(self, socket: Path = DEFAULT_POD_RESOURCES_SOCKET, *, timeout: float = LIST_TIMEOUT_S) -> None:
        self.socket = socket
        self.timeout = timeout
        self._channel: grpc.aio.Channel | None = None
        self._failing = False  # logged already; quiet until a call succeeds again

    async def list(self) -> pb.ListPodResourcesResponse | None:
        """The kubelet's answer, or None when the socket is absent or the call fails."""
        if not self.socket.exists():
            await self.close()
            return None
        if self._channel is None:
            self._channel = grpc.aio.insecure_channel(
                f"unix://{self.socket}", options=[("grpc.max_receive_message_length", MAX_MESSAGE_BYTES)]
            )
        try:
            response: pb.ListPodResourcesResponse = await pb_grpc.PodResourcesListerStub(self._channel).List(
                pb.ListPodResourcesRequest(), timeout=self.timeout
            )
        except grpc.aio.AioRpcError as exc:
            if not self._failing:
                log.warning(
                    "cannot read device allocations from the kubelet's PodResources API at %s: %s: %s "
                    "(kubeaccel_device_allocated stays empty until it answers)",
                    self.socket, exc.code().name, (exc.details() or "")[:300],
                )
                self._failing = True
            await self.close()  # a fresh channel next time: the kubelet may have restarted
            return None
        if self._failing:
            log.info("the kubelet's PodResources API at %s answers again", self.socket)
            self._failing = False
        return response

    async def close(self) -> None:
        if self._channel is not None:
            channel, self._channel = self._channel, None
            await channel.close(None)


class AllocationRefresher:
    """Keeps a gauge of (resource, device, namespace, pod, container) = 1 in step with the kubelet.

    ``refresh`` is called before each scrape; calls closer than ``MIN_INTERVAL_S`` apart, or while
    one is running, reuse the last answer.
    """

    def __init__(
        self, reader: PodResourcesReader, resources: Callable[[], Collection[str]], gauge: Any
    ) -> None:
        self.reader = reader
        self._resources = resources
        self._gauge = gauge
        self._last = float("-inf")
        self._lock = asyncio.Lock()
        self._truncated = False

    async def refresh(self) -> None:
        async with self._lock:
            if time.monotonic() - self._last < MIN_INTERVAL_S:
                return
            response = await self.reader.list()
            self._last = time.monotonic()
            found, dropped = ([], 0) if response is None else allocations(response, set(self._resources()))
            if dropped and not self._truncated:
                log.warning("kubeaccel_device_allocated: %d allocations beyond the first %d are left out",
                            dropped, MAX_SERIES)
            self._truncated = bool(dropped)
            gauge = self._gauge
            gauge.clear()
            for a in found:
                gauge.labels(a.resource, a.device, a.namespace, a.pod, a.container).set(1)

    async def close(self) -> None:
        await self.reader.close()
