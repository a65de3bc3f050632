"""NVIDIA GPUs (``nvidia.com/gpu``) through NVML.

Each full GPU is one device. Its ID (what the kubelet sees) is the GPU's UUID, which survives
reboots and re-enumeration; its index (``KUBEACCEL_DEVICES_*``) is NVML's GPU index. The GPUs
are enumerated once when the backend starts (GPUs are not hot-plugged; restart the plugin after
changing them), and everything but health is read then: a scan makes no NVML or sysfs call.

* DRA facts (NVIDIA's DRA driver's names and types): ``productName``, ``brand``,
  ``architecture`` (strings), ``cudaComputeCapability`` and ``driverVersion`` (versions,
  ``9.0.0``, ``580.159.4``), ``uuid``, ``type`` (``gpu`` / ``mig``), the standard
  ``resource.kubernetes.io/pciBusID`` and ``pcieRoot``; capacity ``memory`` (bytes, from
  ``nvmlDeviceGetMemoryInfo``). What the driver cannot tell is left out.
* MIG (``migStrategy``, see ``_mig``): ``none`` serves whole GPUs; ``single`` serves MIG devices
  under this resource; ``mixed`` serves whole GPUs with MIG off, or, for an entry named
  ``<domain>/mig-<profile>``, the MIG devices of that profile. A MIG device's ID is its
  ``MIG-…`` UUID, its index ``<gpu>:<mig>``. An NVML event on its GPU makes it unhealthy unless
  the event names another GPU/compute instance; recovery re-probes its GPU.

* Device nodes: ``/dev/nvidia<minor>`` per GPU, plus the control nodes that exist on the node
  (``/dev/nvidiactl``, ``/dev/nvidia-uvm``, ``/dev/nvidia-uvm-tools``, ``/dev/nvidia-modeset``).
* NUMA: ``/sys/bus/pci/devices/<bus id>/numa_node`` (negative or missing = none).
* Env: ``NVIDIA_VISIBLE_DEVICES`` = comma list of UUIDs (``visibleDevices: uuid``, the default:
  a UUID survives re-enumeration), or of indices with ``visibleDevices: index``.
* CDI (``cdi: true``, see ``cdi_spec``): when NVIDIA's own spec (kind ``nvidia.com/gpu``) is in
  ``cdiSpecDirs``, Allocate names its entries and kubeaccel writes none; otherwise kubeaccel writes a
  complete spec of kind ``nvidia.kubeaccel.io/gpu`` from the files under ``driverRoot``
  (``kubeaccel.devices.nvcdi``), named by UUID (or index, as ``visibleDevices`` says).
* Health: a background thread waits on NVML events (XID critical errors and double-bit ECC
  errors). XIDs in ``ignoredXids`` (by default 13, 31, 43, 45, 68, 109: application errors that
  leave the GPU usable) and single-bit (corrected) ECC errors do not count. An event NVML cannot
  attribute to a GPU marks all GPUs unhealthy. A GPU whose driver cannot report events stays
  healthy.
* Recovery (the NVIDIA plugin never recovers a GPU): ``recoverAfterSeconds`` after the last
  critical event, the GPU is probed through NVML again and marked healthy when it answers; if it
  does not, it is probed again after another quiet period. ``recoverAfterSeconds: null`` keeps an
  unhealthy GPU unhealthy until the plugin restarts.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal, NamedTuple

from pydantic import BaseModel, ConfigDict, Field, StrictFloat, StrictInt, StrictStr, field_validator

from kubeaccel.devices import cdi, nvcdi
from kubeaccel.devices.backends._mig import (
    Selection,
    capability_nodes,
    profile_name,
    read_mig_minors,
    selection,
    unserved_profiles,
)
from kubeaccel.devices.backends._nvml import (
    EVENT_DOUBLE_BIT_ECC,
    EVENT_XID_CRITICAL,
    Gpu,
    HealthEvent,
    MigDevice,
    Nvml,
)
from kubeaccel.devices.backends._pci import pci_attributes
from kubeaccel.devices.backends._poll import read_int, under_root
from kubeaccel.devices.model import (
    AttributeValue,
    Backend,
    ContainerAllocation,
    Device,
    DeviceNode,
    Devices,
    Health,
    semver,
    sort_key,
)

log = logging.getLogger(__name__)

CONTROL_NODES = ("/dev/nvidiactl", "/dev/nvidia-uvm", "/dev/nvidia-uvm-tools", "/dev/nvidia-modeset")
APPLICATION_XIDS = (13, 31, 43, 45, 68, 109)
# kubeaccel's own spec; NVIDIA's (nvidia-ctk) is nvidia.com/gpu, so the two never name the same device.
CDI_KIND = nvcdi.KIND
NVIDIA_CDI_KIND = nvcdi.NVIDIA_KIND
# How long one nvmlEventSetWait blocks: bounds how late close() and recovery probes happen.
_EVENT_WAIT_MS = 200


class Config(BaseModel):
    """The nvidia backend's own keys."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)

    visible_devices: Literal["index", "uuid"] = Field(
        default="uuid",
        alias="visibleDevices",
        description="What NVIDIA_VISIBLE_DEVICES and kubeaccel's CDI names list: GPU UUIDs or indices.",
    )
    driver_root: StrictStr = Field(
        default="/",
        alias="driverRoot",
        description="Where this process sees the driver install (libraries, binaries, firmware) for the CDI spec.",
    )
    host_driver_root: StrictStr | None = Field(
        default=None,
        alias="hostDriverRoot",
        description="Where the container runtime sees that install; the spec's host paths start here "
        "(default: driverRoot).",
    )
    cdi_spec_dirs: list[StrictStr] = Field(
        default=[str(d) for d in cdi.RUNTIME_SPEC_DIRS],
        alias="cdiSpecDirs",
        description="Where to look for NVIDIA's own CDI spec (nvidia.com/gpu), as the runtime reads them.",
    )
    nvidia_cdi_hook_path: StrictStr | None = Field(
        default=nvcdi.DEFAULT_HOOK_PATH,
        alias="nvidiaCdiHookPath",
        description="nvidia-cdi-hook (or nvidia-ctk) on the host, under the driver root; its hooks are added "
        "when it exists there. null: never (links become bind mounts).",
    )

    @field_validator("driver_root", "host_driver_root", "nvidia_cdi_hook_path")
    @classmethod
    def _absolute(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith("/"):
            raise ValueError(f"{value[:64]!r} is not an absolute path")
        return value

    @field_validator("cdi_spec_dirs")
    @classmethod
    def _absolute_dirs(cls, value: list[str]) -> list[str]:
        for item in value:
            if not item.startswith("/"):
                raise ValueError(f"{item[:64]!r} is not an absolute path")
        return value
    ignored_xids: list[StrictInt] = Field(
        default=list(APPLICATION_XIDS),
        alias="ignoredXids",
        description="XID errors that do not make a GPU unhealthy (application errors).",
    )
    recover_after_seconds: StrictFloat | None = Field(
        default=60.0,
        gt=0,
        alias="recoverAfterSeconds",
        description="Quiet time after the last critical event before an unhealthy GPU is probed again.",
    )
    mig_strategy: Literal["none", "single", "mixed"] = Field(
        default="none",
        alias="migStrategy",
        description="MIG devices as NVIDIA's plugin serves them: none (whole GPUs), single (MIG devices as this "
        "resource), mixed (an entry named <domain>/mig-<profile> serves that profile, others whole GPUs).",
    )


class NvidiaBackend:
    """``Backend`` over the node's GPUs; NVML is reached through the ``Nvml`` adapter only."""

    # None until the plugin asks for a CDI spec (``cdi: true``); then Allocate names CDI devices.
    _cdi_plan: nvcdi.Plan | None = None

    def __init__(self, resource_name: str, config: Config, nvml: Nvml, *, root: Path = Path("/")) -> None:
        self._resource_name = resource_name
        self._config = config
        self._nvml = nvml
        self._root = root
        self._gpus = sorted(nvml.gpus(mig=config.mig_strategy != "none"), key=lambda g: g.index)
        self._by_uuid = {g.uuid: g for g in self._gpus}
        # Everything but health is read once, here: a scan only applies health (no NVML call, no sysfs).
        self._static = self._devices(selection(config.mig_strategy, resource_name, self._gpus), nvml.driver_version())
        self._parent = {d.id: p.parent for d, p in self._static}
        self._lock = threading.Lock()
        # served device ID -> monotonic time of its last critical event; absent = healthy.
        self._failed_at: dict[str, float] = {}
        self._changed = threading.Event()
        self._closed = threading.Event()
        # Which control nodes exist is looked up once per scan, not on every Allocate (pod start path).
        self._control_nodes = self._find_control_nodes()
        self.silent = nvml.watch([g.uuid for g in self._gpus]) if self._gpus else []
        self._thread = threading.Thread(target=self._watch, name=f"nvml-health {resource_name}", daemon=True)
        self._thread.start()

    @property
    def resource_name(self) -> str:
        return self._resource_name

    def scan(self) -> Devices:
        with self._lock:
            failed = set(self._failed_at)
        self._control_nodes = self._find_control_nodes()  # nvidia-uvm appears when its module loads
        if not failed:
            return self._all_healthy
        return Devices.ordered({
            d.id: replace(d, health=Health.UNHEALTHY) if d.id in failed else d for d, _ in self._static
        })

    @functools.cached_property
    def _all_healthy(self) -> Devices:
        return Devices(d for d, _ in self._static)

    def _devices(self, chosen: Selection, driver_version: str) -> list[tuple[Device, _Placement]]:
        """Each served device with where NVML events about it come from, in natural ID order."""
        shared = _driver_attributes(driver_version)
        numa = {g.uuid: self._numa(g) for g in self._gpus}
        out = [(self._device(g, numa[g.uuid], shared), _Placement(g.uuid)) for g in chosen.gpus]
        minors = read_mig_minors(self._root) if chosen.migs else {}
        for g, m in chosen.migs:
            where = _Placement(g.uuid, m.gpu_instance, m.compute_instance)
            out.append((self._mig_device(g, m, numa[g.uuid], shared, minors), where))
        if self._config.mig_strategy == "mixed":
            extra = unserved_profiles(self._resource_name, self._gpus)
            if extra:
                log.warning(
                    "%s (migStrategy: mixed) serves whole GPUs only; MIG devices here not served by this entry: %s; "
                    "add an entry named <domain>/mig-<profile> for each to serve them",
                    self._resource_name, ", ".join(f"{p} x{n}" for p, n in extra.items()),
                )
        return sorted(out, key=lambda pair: sort_key(pair[0].id))

    def _numa(self, gpu: Gpu) -> int | None:
        raw = read_int(under_root(self._root, f"/sys/bus/pci/devices/{gpu.pci_bus_id}/numa_node"))
        return raw if raw is not None and raw >= 0 else None

    def _facts(self, gpu: Gpu) -> list[tuple[str, AttributeValue]]:
        """What selectors see of a GPU (a MIG device's are its parent's), NVIDIA's DRA driver's names."""
        facts: list[tuple[str, AttributeValue]] = [("productName", gpu.name[:64])]
        if gpu.brand:
            facts.append(("brand", gpu.brand))
        if gpu.architecture:
            facts.append(("architecture", gpu.architecture))
        version = semver(gpu.cuda_compute_capability)
        if version is not None:
            facts.append(("cudaComputeCapability", version))
        return facts

    def _device(self, gpu: Gpu, numa: int | None, shared: list[tuple[str, AttributeValue]]) -> Device:
        node = f"/dev/nvidia{gpu.minor}"
        return Device(
            id=gpu.uuid,
            index=str(gpu.index),
            numa_node=numa,
            nodes=(DeviceNode(str(under_root(self._root, node)), node),),
            attributes=(
                ("uuid", gpu.uuid), ("name", gpu.name), ("pci", gpu.pci_bus_id), ("type", "gpu"),
                *self._facts(gpu), *shared,
                *pci_attributes(self._root, f"/sys/bus/pci/devices/{gpu.pci_bus_id}", gpu.pci_bus_id),
            ),
            capacity=(("memory", gpu.memory_bytes),) if gpu.memory_bytes else (),
        )

    def _mig_device(
        self, gpu: Gpu, mig: MigDevice, numa: int | None, shared: list[tuple[str, AttributeValue]],
        minors: dict[tuple[int, int, int | None], int],
    ) -> Device:
        parent = f"/dev/nvidia{gpu.minor}"
        paths = (parent, *capability_nodes(gpu, mig, minors))
        return Device(
            id=mig.uuid,
            index=f"{gpu.index}:{mig.index}",  # NVIDIA's MIG index form, as NVIDIA_VISIBLE_DEVICES takes it
            numa_node=numa,
            nodes=tuple(DeviceNode(str(under_root(self._root, p)), p) for p in paths),
            attributes=(
                ("uuid", mig.uuid), ("parentUUID", gpu.uuid), ("type", "mig"),
                ("profile", profile_name(mig, gpu.memory_bytes)),
                ("gpuInstance", mig.gpu_instance), ("computeInstance", mig.compute_instance),
                *self._facts(gpu), *shared,
                *pci_attributes(self._root, f"/sys/bus/pci/devices/{gpu.pci_bus_id}", gpu.pci_bus_id),
            ),
            capacity=(("memory", mig.memory_bytes), ("multiprocessors", mig.multiprocessors)),
        )

    def _find_control_nodes(self) -> tuple[DeviceNode, ...]:
        found = []
        for control in CONTROL_NODES:
            host = under_root(self._root, control)
            if os.path.exists(host):
                found.append(DeviceNode(str(host), control))
        return tuple(found)

    def container_allocation(self, devices: Sequence[Device]) -> ContainerAllocation:
        ordered = sorted(devices, key=lambda d: sort_key(d.index)) if len(devices) > 1 else devices
        nodes = [*(n for d in ordered for n in d.nodes), *self._control_nodes]
        names = [d.id if self._config.visible_devices == "uuid" else d.index for d in ordered]
        return ContainerAllocation(
            envs={"NVIDIA_VISIBLE_DEVICES": ",".join(names)} if names else {},
            device_nodes=tuple(nodes),
            cdi_devices=self._cdi_names(ordered),
        )

    def _cdi_names(self, devices: Sequence[Device]) -> tuple[str, ...]:
        plan = self._cdi_plan
        return () if plan is None else plan.names_for(devices)

    def cdi_spec(self, devices: Devices) -> dict[str, Any] | None:
        """``cdi.SpecSource``: kubeaccel's spec for ``devices``, or None where NVIDIA's names them
        (``nvcdi.decide``); from now on Allocate names what was decided here."""
        config = self._config
        controls = list(self._find_control_nodes())
        document, self._cdi_plan = nvcdi.decide(
            self._resource_name,
            devices,
            spec_dirs=[Path(d) for d in config.cdi_spec_dirs],
            driver_root=Path(config.driver_root),
            host_root=Path(config.host_driver_root or config.driver_root),
            hook_path=config.nvidia_cdi_hook_path,
            control_nodes=controls,
            by_uuid=config.visible_devices == "uuid",
            firmware_class_path=under_root(self._root, nvcdi.FIRMWARE_CLASS_PATH),
        )
        return document

    def wait_for_change(self, timeout: float) -> bool:
        if self._changed.wait(timeout) and not self._closed.is_set():
            self._changed.clear()
            return True
        return False

    def close(self) -> None:
        if self._closed.is_set():
            return  # idempotent: NVML is shut down once
        self._closed.set()
        self._changed.set()
        self._thread.join(timeout=5)
        self._nvml.shutdown()

    def is_critical(self, event: HealthEvent) -> bool:
        """Whether an event makes a GPU unhealthy (pure; the thread applies it)."""
        if event.event_type & EVENT_DOUBLE_BIT_ECC:
            return True
        if event.event_type & EVENT_XID_CRITICAL:
            return event.xid not in self._config.ignored_xids
        return False

    def _watch(self) -> None:
        while not self._closed.is_set():
            try:
                event = self._nvml.wait_event(_EVENT_WAIT_MS) if self._gpus else None
            except Exception as exc:
                if not self._nvml.is_error(exc):
                    raise
                # NVML itself failed (driver gone, GPU lost): every GPU is suspect.
                event = HealthEvent(uuid=None, event_type=EVENT_XID_CRITICAL, xid=-1)
                self._closed.wait(_EVENT_WAIT_MS / 1000)
            if not self._gpus:
                self._closed.wait(_EVENT_WAIT_MS / 1000)
            if event is not None and self.is_critical(event):
                self._mark_failed(event)
            self._recover()

    def _mark_failed(self, event: HealthEvent) -> None:
        now = time.monotonic()
        targets = [d.id for d, where in self._static if event.uuid not in self._by_uuid or where.hit_by(event)]
        with self._lock:
            newly_failed = any(t not in self._failed_at for t in targets)
            for target in targets:
                self._failed_at[target] = now
        if newly_failed:
            self._changed.set()

    def _recover(self) -> None:
        quiet = self._config.recover_after_seconds
        if quiet is None:
            return
        now = time.monotonic()
        with self._lock:
            due = [u for u, t in self._failed_at.items() if now - t >= quiet]
        for device_id in due:
            if self._nvml.probe(self._parent[device_id]):  # a MIG device's GPU answers for it
                with self._lock:
                    self._failed_at.pop(device_id, None)
                self._changed.set()
            else:
                with self._lock:
                    self._failed_at[device_id] = now


class _Placement(NamedTuple):
    """Where a served device sits: its GPU, and for a MIG device its GPU and compute instance."""

    parent: str
    gpu_instance: int | None = None
    compute_instance: int | None = None

    def hit_by(self, event: HealthEvent) -> bool:
        """An event on the GPU concerns a whole GPU always, and a MIG device unless it names another
        instance (NVIDIA's plugin attributes MIG events the same way)."""
        if event.uuid != self.parent:
            return False
        if self.gpu_instance is None or event.gpu_instance is None or event.compute_instance is None:
            return True
        return (event.gpu_instance, event.compute_instance) == (self.gpu_instance, self.compute_instance)


def _driver_attributes(driver_version: str) -> list[tuple[str, AttributeValue]]:
    version = semver(driver_version)
    return [("driverVersion", version)] if version is not None else []


def create(resource_name: str, config: Config, *, root: Path = Path("/"), nvml: Nvml | None = None) -> Backend:
    """The NVIDIA backend; ``UnavailableError`` (what to install) where NVML or the driver is missing."""
    lib = nvml if nvml is not None else Nvml.load()
    try:
        return NvidiaBackend(resource_name, config, lib, root=root)
    except BaseException:
        lib.shutdown()  # a failed start releases what it started
        raise
