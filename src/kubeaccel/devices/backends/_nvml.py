"""A small typed adapter over NVML (``pynvml`` from ``nvidia-ml-py``).

The backend talks to ``Nvml`` only, never to ``pynvml`` directly, so (1) NVML's loosely typed,
exception-driven API is turned into a few typed calls in one place, and (2) the backend logic can
be exercised with any object that has pynvml's call shapes (the tests use one, since CI has no
GPU). ``pynvml`` is imported only when ``Nvml.load()`` runs: a node without NVIDIA GPUs never
imports it.
"""

from __future__ import annotations

import contextlib
import ctypes
from dataclasses import dataclass
from typing import Any

from kubeaccel.errors import UnavailableError

# Facts from NVML's nvml.h (values are part of the ABI, so they are stable).
EVENT_SINGLE_BIT_ECC = 0x1
EVENT_DOUBLE_BIT_ECC = 0x2
EVENT_XID_CRITICAL = 0x8
HEALTH_EVENTS = EVENT_XID_CRITICAL | EVENT_DOUBLE_BIT_ECC | EVENT_SINGLE_BIT_ECC
ERROR_NOT_SUPPORTED = 3
ERROR_NOT_FOUND = 6
ERROR_DRIVER_NOT_LOADED = 9
ERROR_TIMEOUT = 10
ERROR_LIBRARY_NOT_FOUND = 12
ERROR_FUNCTION_NOT_FOUND = 13

_INSTALL_HINT = (
    "install the NVIDIA driver on the node (it provides libnvidia-ml.so.1) and give the plugin's "
    "container access to it (the NVIDIA container toolkit, or a hostPath mount of the driver "
    "libraries); on a node without NVIDIA GPUs, remove the nvidia resource from the plugin config"
)


# nvml.h nvmlDeviceArchitecture_t and nvmlBrandType_t, spelled as NVIDIA's DRA driver publishes them
# (go-nvlib's GetArchitectureAsString / GetBrandAsString).
ARCHITECTURES = {
    2: "Kepler", 3: "Maxwell", 4: "Pascal", 5: "Volta", 6: "Turing", 7: "Ampere", 8: "Ada Lovelace",
    9: "Hopper", 10: "Blackwell", 13: "Rubin", 0xFFFFFFFF: "Unknown",
}
BRANDS = {
    0: "Unknown", 1: "Quadro", 2: "Tesla", 3: "NVS", 4: "Grid", 5: "GeForce", 6: "Titan", 7: "NvidiaVApps",
    8: "NvidiaVPC", 9: "NvidiaVCS", 10: "NvidiaVWS", 11: "NvidiaCloudGaming", 12: "QuadroRTX", 13: "NvidiaRTX",
    14: "Nvidia", 15: "GeForceRTX", 16: "TitanRTX",
}
MIG_ENABLED = 1  # NVML_DEVICE_MIG_ENABLE
_ALL_INSTANCES = 0xFFFFFFFF  # an event's GPU / compute instance ID when it concerns the whole GPU


@dataclass(frozen=True)
class MigDevice:
    """One MIG device (a compute instance inside a GPU instance) of a MIG-enabled GPU."""

    index: int  # NVML's MIG device index under its GPU
    uuid: str  # MIG-…
    gpu_instance: int  # GI ID: /proc/driver/nvidia-caps/mig-minors "gpu<minor>/gi<GI>/access"
    compute_instance: int  # CI ID: "gpu<minor>/gi<GI>/ci<CI>/access"
    gpu_slices: int  # nvmlDeviceAttributes_t.gpuInstanceSliceCount
    compute_slices: int  # computeInstanceSliceCount
    memory_bytes: int  # memorySizeMB, in bytes
    multiprocessors: int


@dataclass(frozen=True)
class Gpu:
    """What the backend needs to know about one GPU, read once at start.

    The descriptive fields (``brand`` … ``memory_bytes``) are empty or 0 where the driver cannot
    tell (an old driver, a call not supported on this GPU): they are facts for selectors, and a GPU
    that cannot report one is still served.
    """

    index: int
    uuid: str
    minor: int
    pci_bus_id: str  # sysfs form: 0000:3b:00.0
    name: str
    brand: str = ""
    architecture: str = ""
    cuda_compute_capability: str = ""  # "9.0"
    memory_bytes: int = 0
    mig_enabled: bool = False
    migs: tuple[MigDevice, ...] = ()


@dataclass(frozen=True)
class HealthEvent:
    """One NVML event: ``uuid`` None means NVML could not say which GPU (treat as all)."""

    uuid: str | None
    event_type: int
    xid: int
    # The MIG placement NVML names (GPU instance, compute instance); None = the whole GPU.
    gpu_instance: int | None = None
    compute_instance: int | None = None


def sysfs_bus_id(nvml_bus_id: str | bytes) -> str:
    """NVML's ``00000000:3B:00.0`` -> sysfs's ``0000:3b:00.0``."""
    text = nvml_bus_id.decode() if isinstance(nvml_bus_id, bytes) else nvml_bus_id
    domain, _, rest = text.strip().partition(":")
    return f"{int(domain, 16):04x}:{rest.lower()}"


def _address(handle: Any) -> int | None:
    try:
        value = ctypes.cast(handle, ctypes.c_void_p).value
    except (TypeError, ctypes.ArgumentError):
        return None
    return int(value) if value else None


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


class Nvml:
    """Typed calls over a pynvml-shaped library object (the ``pynvml`` module in production)."""

    def __init__(self, lib: Any) -> None:
        self._lib = lib
        self._handles: dict[str, Any] = {}
        self._event_set: Any = None

    @classmethod
    def load(cls) -> Nvml:
        """``nvmlInit`` on the real library; ``UnavailableError`` saying what to install if it fails."""
        try:
            import pynvml
        except ImportError as exc:
            raise UnavailableError(
                "the nvidia backend needs the nvidia-ml-py package (import pynvml failed)",
                hint="pip install 'kubeaccel[nvidia]'",
            ) from exc
        nvml = cls(pynvml)
        nvml.init()
        return nvml

    def is_error(self, exc: BaseException, code: int | None = None) -> bool:
        if not isinstance(exc, self._lib.NVMLError):
            return False
        return code is None or getattr(exc, "value", None) == code

    def init(self) -> None:
        try:
            self._lib.nvmlInit()
        except self._lib.NVMLError as exc:
            message = f"NVIDIA driver / NVML not found: nvmlInit failed: {exc}"
            raise UnavailableError(message, hint=_INSTALL_HINT) from exc

    def shutdown(self) -> None:
        lib = self._lib
        # Errors here mean the driver is already gone: there is nothing left to release.
        if self._event_set is not None:
            with contextlib.suppress(lib.NVMLError):
                lib.nvmlEventSetFree(self._event_set)
            self._event_set = None
        with contextlib.suppress(lib.NVMLError):
            lib.nvmlShutdown()

    def gpus(self, *, mig: bool = False) -> list[Gpu]:
        """Every GPU with its facts; with ``mig``, also whether MIG mode is on and its MIG devices."""
        lib = self._lib
        try:
            count = lib.nvmlDeviceGetCount()
            found = []
            for index in range(count):
                handle = lib.nvmlDeviceGetHandleByIndex(index)
                uuid = _text(lib.nvmlDeviceGetUUID(handle))
                self._handles[uuid] = handle
                mig_enabled = mig and self._mig_enabled(handle)
                found.append(
                    Gpu(
                        index=index,
                        uuid=uuid,
                        minor=int(lib.nvmlDeviceGetMinorNumber(handle)),
                        pci_bus_id=sysfs_bus_id(lib.nvmlDeviceGetPciInfo(handle).busId),
                        name=_text(lib.nvmlDeviceGetName(handle)),
                        brand=BRANDS.get(self._optional("nvmlDeviceGetBrand", handle, -1), ""),
                        architecture=ARCHITECTURES.get(self._optional("nvmlDeviceGetArchitecture", handle, -1), ""),
                        cuda_compute_capability=self._compute_capability(handle),
                        memory_bytes=self._optional("nvmlDeviceGetMemoryInfo", handle, 0, field="total"),
                        mig_enabled=mig_enabled,
                        migs=self._migs(handle) if mig_enabled else (),
                    )
                )
        except lib.NVMLError as exc:
            raise UnavailableError(
                f"NVML could not list the GPUs: {exc}",
                hint="check the GPUs with nvidia-smi on the node; a GPU that fell off the bus needs a reset or reboot",
            ) from exc
        return found

    def driver_version(self) -> str:
        """The kernel driver's version as NVML reports it (``580.159.04``); empty where it cannot."""
        call = getattr(self._lib, "nvmlSystemGetDriverVersion", None)
        try:
            return _text(call()) if call is not None else ""
        except self._lib.NVMLError:
            return ""

    def _optional(self, name: str, handle: Any, default: int, *, field: str | None = None) -> int:
        """A descriptive integer fact; ``default`` where the driver (or an older nvidia-ml-py) lacks the call."""
        call = getattr(self._lib, name, None)
        if call is None:
            return default
        try:
            value = call(handle)
        except self._lib.NVMLError:
            return default
        return int(getattr(value, field) if field else value)

    def _compute_capability(self, handle: Any) -> str:
        call = getattr(self._lib, "nvmlDeviceGetCudaComputeCapability", None)
        try:
            major, minor = call(handle) if call is not None else (None, None)
        except self._lib.NVMLError:
            return ""
        return f"{int(major)}.{int(minor)}" if major is not None and minor is not None else ""

    def _mig_enabled(self, handle: Any) -> bool:
        try:
            current, _pending = self._lib.nvmlDeviceGetMigMode(handle)
        except self._lib.NVMLError as exc:
            if getattr(exc, "value", None) in (ERROR_NOT_SUPPORTED, ERROR_FUNCTION_NOT_FOUND):
                return False  # not a MIG-capable GPU (or a driver without MIG)
            raise
        return int(current) == MIG_ENABLED

    def _migs(self, handle: Any) -> tuple[MigDevice, ...]:
        """The MIG devices that exist on a MIG-enabled GPU (empty slots are skipped)."""
        lib = self._lib
        out = []
        for slot in range(int(lib.nvmlDeviceGetMaxMigDeviceCount(handle))):
            try:
                mig = lib.nvmlDeviceGetMigDeviceHandleByIndex(handle, slot)
            except lib.NVMLError as exc:
                if getattr(exc, "value", None) == ERROR_NOT_FOUND:
                    continue
                raise
            attrs = lib.nvmlDeviceGetAttributes(mig)
            out.append(
                MigDevice(
                    index=slot,
                    uuid=_text(lib.nvmlDeviceGetUUID(mig)),
                    gpu_instance=int(lib.nvmlDeviceGetGpuInstanceId(mig)),
                    compute_instance=int(lib.nvmlDeviceGetComputeInstanceId(mig)),
                    gpu_slices=int(attrs.gpuInstanceSliceCount),
                    compute_slices=int(attrs.computeInstanceSliceCount),
                    memory_bytes=int(attrs.memorySizeMB) * 2**20,
                    multiprocessors=int(attrs.multiprocessorCount),
                )
            )
        return tuple(out)

    def watch(self, uuids: list[str]) -> list[str]:
        """Register health events for these GPUs; returns those that cannot report events."""
        lib = self._lib
        if self._event_set is None:
            self._event_set = lib.nvmlEventSetCreate()
        silent = []
        for uuid in uuids:
            handle = self._handles[uuid]
            try:
                supported = int(lib.nvmlDeviceGetSupportedEventTypes(handle)) & HEALTH_EVENTS
                if not supported:
                    silent.append(uuid)
                    continue
                lib.nvmlDeviceRegisterEvents(handle, supported, self._event_set)
            except lib.NVMLError as exc:
                if getattr(exc, "value", None) != ERROR_NOT_SUPPORTED:
                    raise
                silent.append(uuid)
        return silent

    def wait_event(self, timeout_ms: int) -> HealthEvent | None:
        """The next health event, or None when ``timeout_ms`` passes quietly. Blocks: run it in a thread."""
        lib = self._lib
        try:
            data = lib.nvmlEventSetWait(self._event_set, timeout_ms)
        except lib.NVMLError as exc:
            if getattr(exc, "value", None) == ERROR_TIMEOUT:
                return None
            raise
        # ctypes pointers compare by identity, not address: match handles by the address they hold.
        address = _address(data.device)
        uuid = next((u for u, h in self._handles.items() if address is not None and _address(h) == address), None)
        gi, ci = (getattr(data, name, _ALL_INSTANCES) for name in ("gpuInstanceId", "computeInstanceId"))
        return HealthEvent(
            uuid=uuid, event_type=int(data.eventType), xid=int(data.eventData),
            gpu_instance=None if gi == _ALL_INSTANCES else int(gi),
            compute_instance=None if ci == _ALL_INSTANCES else int(ci),
        )

    def probe(self, uuid: str) -> bool:
        """True when the GPU answers NVML again (re-reads it by UUID): the recovery check."""
        lib = self._lib
        try:
            handle = lib.nvmlDeviceGetHandleByUUID(uuid)
            lib.nvmlDeviceGetMinorNumber(handle)
            lib.nvmlDeviceGetPciInfo(handle)
        except lib.NVMLError:
            return False
        return True
