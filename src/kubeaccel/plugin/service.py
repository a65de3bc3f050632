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
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import grpc

from kubeaccel.devices import cdi as cdi_spec
from kubeaccel.devices.model import Backend, Device, DeviceNode, Devices, Resettable, sort_key
from kubeaccel.devices.naming import devices_env_var
from kubeaccel.devices.policy import AllocationError, check_allocation, names, preferred_allocation
from kubeaccel.devices.sharing import SharedBackend
from kubeaccel.errors import KubeaccelError
from kubeaccel.plugin._generated import api_pb2 as pb
from kubeaccel.plugin._generated import api_pb2_grpc as pb_grpc
from kubeaccel.plugin.metrics import Metrics

log = logging.getLogger(__name__)

# Every backend wakes the watch thread on a change (inotify, NVML events, or its own cheap poll);
# this rescan is only a safety net, so an idle daemon does almost nothing.
RESCAN_INTERVAL_S = 30.0
# After a failed scan, try again this soon.
RETRY_INTERVAL_S = 1.0


def device_message(device: Device) -> pb.Device:
    topology = None if device.numa_node is None else pb.TopologyInfo(nodes=[pb.NUMANode(ID=device.numa_node)])
    return pb.Device(ID=device.id, health=device.health.value, topology=topology)


def list_response(devices: Devices) -> pb.ListAndWatchResponse:
    return pb.ListAndWatchResponse(devices=[device_message(d) for d in devices.values()])


def list_bytes(devices: Devices) -> bytes:
    """The serialized ListAndWatch message: built once per snapshot, sent to every stream as is."""
    return list_response(devices).SerializeToString()


# The kubelet's device-plugin client sets no receive limit, so grpc-go's default applies.
KUBELET_MAX_MESSAGE = 4 * 1024 * 1024


def oversize_problem(resource_name: str, size: int, count: int) -> str | None:
    """Why the kubelet would refuse a ListAndWatch message of ``size`` bytes, or None."""
    if size <= KUBELET_MAX_MESSAGE:
        return None
    return (
        f"{resource_name}: the device list ({count} devices, {size} bytes) exceeds the kubelet's "
        f"{KUBELET_MAX_MESSAGE} byte message limit; the kubelet will not receive it. Advertise fewer "
        "devices (lower replicas or count, shorter IDs) or split them over several resources"
    )


def _unique(items: Sequence[DeviceNode]) -> list[DeviceNode]:
    return list(dict.fromkeys(items))


def cdi_env_var(resource_name: str) -> str:
    """Set by our CDI spec (not by Allocate), so a container shows that the runtime applied it."""
    return devices_env_var(resource_name).replace("KUBEACCEL_DEVICES_", "KUBEACCEL_CDI_", 1)


def cdi_document(resource_name: str, backend: Backend, devices: Devices) -> dict[str, Any]:
    """The CDI spec of one resource: an entry per real device (replicas share one), named by index.

    Each entry carries what a container needs for that device alone: its nodes and the backend's
    extra nodes and mounts. What depends on the whole allocation (``KUBEACCEL_DEVICES_*``,
    ``VE_NODE_NUMBER``) stays in Allocate's envs.
    """
    entries: dict[str, cdi_spec.ContainerEdits] = {}
    for dev in devices.values():
        name = cdi_spec.device_name(dev.index)
        if name in entries:
            continue
        extra = backend.container_allocation([dev])
        entries[name] = cdi_spec.ContainerEdits.of(
            device_nodes=_unique([*dev.nodes, *extra.device_nodes]), mounts=dict.fromkeys(extra.mounts)
        )
    kind = cdi_spec.kind_for(resource_name)
    return cdi_spec.spec(kind, entries, cdi_spec.ContainerEdits.of(env={cdi_env_var(resource_name): kind}))


def allocate_container(
    resource_name: str,
    backend: Backend,
    devices: Devices,
    ids: Sequence[str],
    *,
    cdi: bool,
    cdi_names: frozenset[str] | None = None,
) -> pb.ContainerAllocateResponse:
    """The response for one container: validated IDs in sorted order, env, nodes, mounts, CDI.

    With ``cdi_names`` (the device names in the CDI spec this plugin wrote) the devices' nodes and
    mounts come from that spec and the response names its entries instead of listing DeviceSpecs.
    Depends only on its inputs, so the kubelet's re-call after a restart gets the same answer.
    """
    chosen = list(check_allocation(devices, ids).values())  # natural ID order
    indices = sorted(dict.fromkeys(d.index for d in chosen), key=sort_key)
    extra = backend.container_allocation(chosen)
    envs = {**extra.envs, devices_env_var(resource_name): ",".join(indices)}
    response = pb.ContainerAllocateResponse(envs=envs)
    if extra.annotations:
        response.annotations.update(extra.annotations)
    if cdi and cdi_names is not None and not extra.cdi_devices:
        kind = cdi_spec.kind_for(resource_name)
        wanted = [cdi_spec.device_name(i) for i in indices]
        missing = [n for n in wanted if n not in cdi_names]
        if missing:
            raise AllocationError(
                f"cannot allocate: no CDI spec entry for device(s) {names(missing)}",
                hint="the plugin could not write its CDI spec; see its log (--cdi-dir must be writable)",
            )
        response.cdi_devices.extend(pb.CDIDevice(name=cdi_spec.qualified(kind, n)) for n in wanted)
        return response
    if cdi and extra.cdi_devices:  # the backend's spec (nvidia: kubeaccel's or NVIDIA's) carries nodes and mounts
        response.cdi_devices.extend(pb.CDIDevice(name=n) for n in extra.cdi_devices)
        return response
    nodes = _unique([*(n for d in chosen for n in d.nodes), *extra.device_nodes])
    if nodes:
        response.devices.extend(
            pb.DeviceSpec(container_path=n.container_path, host_path=n.host_path, permissions=n.permissions)
            for n in nodes
        )
    if extra.mounts:
        response.mounts.extend(
            pb.Mount(container_path=m.container_path, host_path=m.host_path, read_only=m.read_only)
            for m in dict.fromkeys(extra.mounts)
        )
    if cdi:
        response.cdi_devices.extend(pb.CDIDevice(name=f"{resource_name}={i}") for i in indices)
    return response


def preferred_container(devices: Devices, request: pb.ContainerPreferredAllocationRequest) -> list[str]:
    """The preferred IDs for one container request; ``AllocationError`` when it cannot be met.

    The kubelet offers every free device (131,072 IDs on a big node, in no useful order). One set
    is built from the request and compared with the snapshot's cached ID set: two sets of about
    one size are walked slot by slot, in memory order, far faster than a lookup per ID in request
    order. The pool is the snapshot itself less the IDs not offered (usually few: the allocated
    ones), which the policy skips rather than copying the rest.
    """
    wanted = set(request.available_deviceIDs)
    every = devices.id_set()
    excluded = every - wanted  # one pass; with it, "every offered ID is ours" is a count
    if len(wanted) != len(every) - len(excluded):
        raise AllocationError(
            f"cannot choose a preferred allocation: available ID(s) {names(wanted - every)} are not devices "
            "of this resource",
            hint="the kubelet and the plugin disagree about the device list; check ListAndWatch",
        )
    return preferred_allocation(devices, list(request.must_include_deviceIDs), request.allocation_size, excluded)


class ResourcePlugin(pb_grpc.DevicePluginServicer):
    """The DevicePlugin service for one resource, over a backend it owns.

    With ``cdi`` and a ``cdi_dir``, the plugin keeps ``<cdi_dir>/kubeaccel-<resource>.json`` in step
    with its device list (written before a new list is served, removed by ``close``).
    """

    def __init__(
        self,
        backend: Backend,
        *,
        cdi: bool = False,
        metrics: Metrics | None = None,
        cdi_dir: Path | None = None,
    ) -> None:
        self.backend = backend
        self.resource_name = backend.resource_name
        self.cdi = cdi
        self.cdi_dir = cdi_dir if cdi else None
        self.cdi_file = cdi_spec.spec_file_name(self.resource_name)
        self.cdi_names: frozenset[str] | None = None  # entries of the spec on disk
        self._cdi_written: dict[str, Any] | None = None
        self.metrics = metrics or Metrics(enabled=False)
        self.devices = backend.scan()
        self.devices.id_set()  # built now, not in the first GetPreferredAllocation
        self._list = list_bytes(self.devices)
        self._warn_oversize()
        self._sync_cdi(self.devices, initial=True)
        # Streams wait on this for a new snapshot (``_version`` counts them).
        self._cond = threading.Condition()
        self._version = 0
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

    def _warn_oversize(self) -> None:
        problem = oversize_problem(self.resource_name, len(self._list), len(self.devices))
        if problem is not None:
            log.error("%s", problem)

    # -- CDI ------------------------------------------------------------------------------------

    def _sync_cdi(self, devices: Devices, *, initial: bool = False) -> None:
        """Write the CDI spec for ``devices`` when it differs from the one on disk.

        At start a failure is the user's to fix (``CdiError`` propagates); later it is logged and
        the old spec stays, and Allocate refuses devices the spec on disk does not name.
        """
        if self.cdi_dir is None:
            return
        # Replicas (SharedBackend) share their device's entry: the inner backend decides on its own devices.
        source = self.backend.inner if isinstance(self.backend, SharedBackend) else self.backend
        if isinstance(source, cdi_spec.SpecSource):
            try:
                document = source.cdi_spec(devices if source is self.backend else source.scan())
            except KubeaccelError as exc:  # e.g. no driver under the NVIDIA driver root
                if initial:
                    raise
                log.error("%s: keeping the previous CDI spec: %s", self.resource_name, exc.message)
                return
            if document is None:  # the devices are named in a spec someone else keeps: ours must go
                self._remove_cdi()
                return
        else:
            document = cdi_document(self.resource_name, self.backend, devices)
        if document == self._cdi_written:
            return
        try:
            cdi_spec.write_spec(self.cdi_dir, self.cdi_file, document)
        except cdi_spec.CdiError as exc:
            if initial:
                raise
            log.error("%s: keeping the previous CDI spec: %s", self.resource_name, exc)
            return
        self._cdi_written = document
        self.cdi_names = frozenset(d["name"] for d in document["devices"])

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
                # A change or the safety-net timeout: either way, rescan (cheap next to a change).
                self.backend.wait_for_change(RESCAN_INTERVAL_S)
                if self._stop.is_set():
                    return
                snapshot = self.backend.scan()
            except Exception as exc:  # a flaky backend must not end the watch: log, back off, retry
                log.error("%s: device scan failed: %s", self.resource_name, str(exc)[:500])
                self._stop.wait(RETRY_INTERVAL_S)
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
        self._sync_cdi(snapshot)  # the spec names a device before the kubelet may allocate it
        encoded = list_bytes(snapshot)
        snapshot.id_set()
        with self._cond:
            self.devices = snapshot
            self._list = encoded
            self._version += 1
            self._cond.notify_all()
        self._warn_oversize()
        self.metrics.set_devices(self.resource_name, snapshot)
        log.info("%s: %d devices, %d healthy", self.resource_name, len(snapshot), len(snapshot.healthy()))

    def stop_watching(self) -> None:
        """End the watch thread: stop first, then close the backend to wake it.

        In that order: a closed backend's ``wait_for_change`` returns at once, and a watch thread
        not yet told to stop would rescan in a tight loop until it is.
        """
        self._stop.set()
        self.backend.close()

    def close(self, *, remove_cdi: bool = True) -> None:
        self.stop_watching()
        if self._thread is not None:
            self._thread.join(timeout=0.5)  # the backend's close wakes it; never hold up shutdown
        if remove_cdi:
            self._remove_cdi()
        self._wake_streams()  # any stream still waiting notices the end

    def _remove_cdi(self) -> None:
        if self.cdi_dir is not None and self._cdi_written is not None:
            try:
                cdi_spec.remove_spec(self.cdi_dir, self.cdi_file)
            except OSError as exc:
                log.warning("%s: cannot remove the CDI spec: %s", self.resource_name, exc)
            self._cdi_written = None
            self.cdi_names = None

    def _wake_streams(self) -> None:
        with self._cond:
            self._cond.notify_all()

    # -- the DevicePlugin service --------------------------------------------------------------
    #
    # Served by grpc's synchronous server (a thread pool; see server.py): per call it is about a
    # third faster than grpc.aio here, and Allocate is on every pod's start path. The handlers
    # only read the current snapshot (one reference, replaced whole) and the CDI names.

    def GetDevicePluginOptions(  # noqa: N802 - gRPC method names are fixed by the API
        self, request: pb.Empty, context: grpc.ServicerContext
    ) -> pb.DevicePluginOptions:
        return self.options

    def ListAndWatch(  # type: ignore[override]  # noqa: N802 - yields pre-serialized bytes (server._handlers)
        self, request: pb.Empty, context: grpc.ServicerContext
    ) -> Iterator[bytes]:
        # The full list at once, then again whenever the snapshot changes; several changes during
        # one send collapse into the newest list. The RPC's end (client gone, server stopped) and
        # close() wake the wait.
        context.add_callback(self._wake_streams)
        seen = -1
        while True:
            with self._cond:
                while self._version == seen and context.is_active() and not self._stop.is_set():
                    self._cond.wait()
                if not context.is_active() or self._stop.is_set():
                    return
                seen, data = self._version, self._list
            yield data

    def GetPreferredAllocation(  # noqa: N802
        self, request: pb.PreferredAllocationRequest, context: grpc.ServicerContext
    ) -> pb.PreferredAllocationResponse:
        response = pb.PreferredAllocationResponse()
        try:
            for container in request.container_requests:
                ids = preferred_container(self.devices, container)
                response.container_responses.add(deviceIDs=ids)
        except AllocationError as exc:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"{self.resource_name}: {exc}")
        return response

    def Allocate(  # noqa: N802
        self, request: pb.AllocateRequest, context: grpc.ServicerContext
    ) -> pb.AllocateResponse:
        start = time.perf_counter()
        response = pb.AllocateResponse()
        devices = self.devices
        try:
            for container in request.container_requests:
                response.container_responses.append(
                    allocate_container(
                        self.resource_name, self.backend, devices, container.devices_ids, cdi=self.cdi,
                        cdi_names=self.cdi_names,
                    )
                )
        except AllocationError as exc:
            self._rejected.inc()
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"{self.resource_name}: {exc}")
        finally:
            self._allocate_seconds.observe(time.perf_counter() - start)
        self._allocated.inc(len(request.container_requests))
        return response

    def PreStartContainer(  # noqa: N802
        self, request: pb.PreStartContainerRequest, context: grpc.ServicerContext
    ) -> pb.PreStartContainerResponse:
        backend = self.backend
        if not isinstance(backend, Resettable):
            return pb.PreStartContainerResponse()
        ids = list(request.devices_ids)
        devices = self.devices
        unknown = devices.unknown(ids)
        if unknown or not ids:
            what = names(unknown) if unknown else "no device IDs"
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"{self.resource_name}: cannot reset {what}")
        try:
            backend.reset(list(devices.subset(ids).values()))
        except KubeaccelError as exc:  # a failing resetCommand or a config mistake: one clear line
            log.error("%s: %s", self.resource_name, exc.message)
            context.abort(grpc.StatusCode.INTERNAL, f"{self.resource_name}: {exc.message[:1000]}")
        except Exception as exc:
            log.exception("%s: reset failed", self.resource_name)
            detail = str(exc)[:500]
            context.abort(grpc.StatusCode.INTERNAL, f"{self.resource_name}: device reset failed: {detail}")
        return pb.PreStartContainerResponse()
