"""One resource's plugin: the live device snapshot, its watch thread, and the gRPC servicer.

A ``ResourcePlugin`` lives as long as its resource is configured; the gRPC server that exposes it
(``server.PluginServer``) is restarted whenever the kubelet restarts, and every new server
serves the same snapshot. Request handling is split into pure functions (``allocate_container``,
``preferred_container``) that the servicer wraps, so the rules are fuzzed without sockets.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import AsyncIterator, Sequence

import grpc

from kubeaccel.devices.model import Backend, Device, DeviceNode, Devices, Resettable, sort_key
from kubeaccel.devices.naming import devices_env_var
from kubeaccel.devices.policy import AllocationError, check_allocation, preferred_allocation
from kubeaccel.plugin._generated import api_pb2 as pb
from kubeaccel.plugin._generated import api_pb2_grpc as pb_grpc
from kubeaccel.plugin.metrics import Metrics

log = logging.getLogger(__name__)

# Backends without a change signal are rescanned this often; those with one wake the watch
# thread at once.
RESCAN_INTERVAL_S = 1.0


def device_message(device: Device) -> pb.Device:
    topology = None if device.numa_node is None else pb.TopologyInfo(nodes=[pb.NUMANode(ID=device.numa_node)])
    return pb.Device(ID=device.id, health=device.health.value, topology=topology)


def list_response(devices: Devices) -> pb.ListAndWatchResponse:
    return pb.ListAndWatchResponse(devices=[device_message(d) for d in devices.values()])


def _unique(items: Sequence[DeviceNode]) -> list[DeviceNode]:
    return list(dict.fromkeys(items))


def allocate_container(
    resource_name: str, backend: Backend, devices: Devices, ids: Sequence[str], *, cdi: bool
) -> pb.ContainerAllocateResponse:
    """The response for one container: validated IDs in sorted order, env, nodes, mounts, CDI.

    Depends only on its inputs, so the kubelet's re-call after a restart gets the same answer.
    """
    chosen = list(check_allocation(devices, ids).values())  # natural ID order
    indices = sorted(dict.fromkeys(d.index for d in chosen), key=sort_key)
    extra = backend.container_allocation(chosen)
    envs = {**extra.envs, devices_env_var(resource_name): ",".join(indices)}
    nodes = _unique([*(n for d in chosen for n in d.nodes), *extra.device_nodes])
    response = pb.ContainerAllocateResponse(
        envs=envs,
        devices=[pb.DeviceSpec(container_path=n.container_path, host_path=n.host_path, permissions=n.permissions)
                 for n in nodes],
        mounts=[pb.Mount(container_path=m.container_path, host_path=m.host_path, read_only=m.read_only)
                for m in dict.fromkeys(extra.mounts)],
        annotations=dict(extra.annotations),
    )
    if cdi:
        names = extra.cdi_devices or tuple(f"{resource_name}={i}" for i in indices)
        response.cdi_devices.extend(pb.CDIDevice(name=n) for n in names)
    return response


def preferred_container(devices: Devices, request: pb.ContainerPreferredAllocationRequest) -> list[str]:
    """The preferred IDs for one container request; ``AllocationError`` when it cannot be met."""
    available = list(request.available_deviceIDs)
    unknown = devices.unknown(available)
    if unknown:
        raise AllocationError(
            "cannot choose a preferred allocation: available ID(s) "
            + ", ".join(repr(i) for i in unknown)
            + " are not devices of this resource",
            hint="the kubelet and the plugin disagree about the device list; check ListAndWatch",
        )
    return preferred_allocation(devices.subset(available), list(request.must_include_deviceIDs),
                                request.allocation_size)


class ResourcePlugin(pb_grpc.DevicePluginServicer):
    """The DevicePlugin service for one resource, over a backend it owns."""

    def __init__(self, backend: Backend, *, cdi: bool = False, metrics: Metrics | None = None) -> None:
        self.backend = backend
        self.resource_name = backend.resource_name
        self.cdi = cdi
        self.metrics = metrics or Metrics()
        self.devices = backend.scan()
        self._changed = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.metrics.set_devices(self.resource_name, self.devices)
        # Labelled children looked up once: Allocate is on the pod start path.
        self._allocate_seconds = self.metrics.allocate_seconds.labels(self.resource_name)
        self._allocated = self.metrics.allocations.labels(self.resource_name, "ok")
        self._rejected = self.metrics.allocations.labels(self.resource_name, "error")

    @property
    def options(self) -> pb.DevicePluginOptions:
        return pb.DevicePluginOptions(
            pre_start_required=isinstance(self.backend, Resettable), get_preferred_allocation_available=True
        )

    # -- the snapshot ---------------------------------------------------------------------------

    def start_watching(self) -> None:
        """Start the thread that rescans on every backend change (call from the event loop)."""
        self._loop = asyncio.get_running_loop()
        self.metrics.set_devices(self.resource_name, self.devices)  # again: a reload forgot the old gauges
        self._thread = threading.Thread(target=self._watch, name=f"watch {self.resource_name}", daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        while not self._stop.is_set():
            try:
                self.backend.wait_for_change(RESCAN_INTERVAL_S)
                if self._stop.is_set():
                    return
                snapshot = self.backend.scan()
            except Exception:  # a flaky backend must not end the watch: log, back off, retry
                log.exception("%s: device scan failed", self.resource_name)
                self._stop.wait(RESCAN_INTERVAL_S)
                continue
            if snapshot != self.devices and self._loop is not None:
                try:
                    self._loop.call_soon_threadsafe(self.publish, snapshot)
                except RuntimeError:  # the loop closed under us: we are shutting down
                    return

    def publish(self, snapshot: Devices) -> None:
        """Make ``snapshot`` current and wake every ListAndWatch stream (event-loop thread only)."""
        if snapshot == self.devices:
            return
        self.devices = snapshot
        self.metrics.set_devices(self.resource_name, snapshot)
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()
        log.info("%s: %d devices, %d healthy", self.resource_name, len(snapshot), len(snapshot.healthy()))

    def close(self) -> None:
        self._stop.set()
        self.backend.close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        # Wake any stream still waiting so it can notice its server is gone.
        self._changed.set()

    # -- the DevicePlugin service --------------------------------------------------------------

    async def GetDevicePluginOptions(  # noqa: N802 - gRPC method names are fixed by the API
        self, request: pb.Empty, context: grpc.aio.ServicerContext[pb.Empty, pb.DevicePluginOptions]
    ) -> pb.DevicePluginOptions:
        return self.options

    async def ListAndWatch(  # noqa: N802
        self, request: pb.Empty, context: grpc.aio.ServicerContext[pb.Empty, pb.ListAndWatchResponse]
    ) -> AsyncIterator[pb.ListAndWatchResponse]:
        # Take the event before sending, so a change during the send is never missed; several
        # changes during one send collapse into one newer list.
        while not self._stop.is_set():
            changed = self._changed
            yield list_response(self.devices)
            await changed.wait()

    async def GetPreferredAllocation(  # noqa: N802
        self,
        request: pb.PreferredAllocationRequest,
        context: grpc.aio.ServicerContext[pb.PreferredAllocationRequest, pb.PreferredAllocationResponse],
    ) -> pb.PreferredAllocationResponse:
        response = pb.PreferredAllocationResponse()
        try:
            for container in request.container_requests:
                ids = preferred_container(self.devices, container)
                response.container_responses.add(deviceIDs=ids)
        except AllocationError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"{self.resource_name}: {exc}")
        return response

    async def Allocate(  # noqa: N802
        self, request: pb.AllocateRequest, context: grpc.aio.ServicerContext[pb.AllocateRequest, pb.AllocateResponse]
    ) -> pb.AllocateResponse:
        start = time.perf_counter()
        response = pb.AllocateResponse()
        try:
            for container in request.container_requests:
                response.container_responses.append(
                    allocate_container(
                        self.resource_name, self.backend, self.devices, list(container.devices_ids), cdi=self.cdi
                    )
                )
        except AllocationError as exc:
            self._rejected.inc()
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"{self.resource_name}: {exc}")
        finally:
            self._allocate_seconds.observe(time.perf_counter() - start)
        self._allocated.inc(len(request.container_requests))
        return response

    async def PreStartContainer(  # noqa: N802
        self,
        request: pb.PreStartContainerRequest,
        context: grpc.aio.ServicerContext[pb.PreStartContainerRequest, pb.PreStartContainerResponse],
    ) -> pb.PreStartContainerResponse:
        backend = self.backend
        if not isinstance(backend, Resettable):
            return pb.PreStartContainerResponse()
        ids = list(request.devices_ids)
        unknown = self.devices.unknown(ids)
        if unknown or not ids:
            what = ", ".join(repr(i) for i in unknown) if unknown else "no device IDs"
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"{self.resource_name}: cannot reset {what}")
        try:
            await asyncio.to_thread(backend.reset, list(self.devices.subset(ids).values()))
        except Exception as exc:
            log.exception("%s: reset failed", self.resource_name)
            await context.abort(grpc.StatusCode.INTERNAL, f"{self.resource_name}: device reset failed: {exc}")
        return pb.PreStartContainerResponse()
