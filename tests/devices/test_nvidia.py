"""The NVIDIA backend.

This machine has no GPU and no NVIDIA driver, so:
* the missing-driver path runs against the real ``pynvml`` (``nvmlInit`` really fails here);
* everything else runs the real backend and the real ``Nvml`` adapter over ``FakeNvmlLibrary``,
  an in-test stand-in for the ``pynvml`` module with pynvml's call shapes: the same function
  names and arguments, the real ctypes structs for handles, PCI info and event data, and the
  real ``pynvml.NVMLError`` exceptions. The lead runs the real thing where a GPU is lent.
"""

from __future__ import annotations

import ctypes
import queue
import threading
import time
from pathlib import Path

import pynvml
import pytest
from pydantic import ValidationError

from kubeaccel.devices.backends import nvidia
from kubeaccel.devices.backends._nvml import Nvml, sysfs_bus_id
from kubeaccel.devices.model import DeviceNode, Health
from kubeaccel.errors import UnavailableError


class FakeNvmlLibrary:
    """Stand-in for the ``pynvml`` module (no GPU here); see the module docstring."""

    NVMLError = pynvml.NVMLError

    def __init__(self, gpus: list[tuple[str, int, str]], *, events_supported: bool = True) -> None:
        self._structs = [pynvml.struct_c_nvmlDevice_t() for _ in gpus]
        self.handles = [pynvml.c_nvmlDevice_t(s) for s in self._structs]
        self.gpus = gpus  # (uuid, minor, NVML bus id)
        self.events: queue.Queue[pynvml.c_nvmlEventData_t] = queue.Queue()
        self.events_supported = events_supported
        self.registered: list[tuple[int, int]] = []
        self.lost: set[str] = set()
        self.shutdowns = 0

    def _check(self, handle: object) -> int:
        address = ctypes.cast(handle, ctypes.c_void_p).value
        for i, h in enumerate(self.handles):
            if ctypes.cast(h, ctypes.c_void_p).value == address:
                if self.gpus[i][0] in self.lost:
                    raise pynvml.NVMLError(pynvml.NVML_ERROR_GPU_IS_LOST)
                return i
        raise pynvml.NVMLError(pynvml.NVML_ERROR_INVALID_ARGUMENT)

    def nvmlInit(self) -> None:
        pass

    def nvmlShutdown(self) -> None:
        self.shutdowns += 1

    def nvmlDeviceGetCount(self) -> int:
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> object:
        return self.handles[index]

    def nvmlDeviceGetHandleByUUID(self, uuid: str) -> object:
        for i, gpu in enumerate(self.gpus):
            if gpu[0] == uuid and uuid not in self.lost:
                return self.handles[i]
        raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_FOUND)

    def nvmlDeviceGetUUID(self, handle: object) -> str:
        return self.gpus[self._check(handle)][0]

    def nvmlDeviceGetMinorNumber(self, handle: object) -> int:
        return self.gpus[self._check(handle)][1]

    def nvmlDeviceGetPciInfo(self, handle: object) -> pynvml.nvmlPciInfo_t:
        return pynvml.nvmlPciInfo_t(busId=self.gpus[self._check(handle)][2].encode())

    def nvmlDeviceGetName(self, handle: object) -> str:
        self._check(handle)
        return "NVIDIA H100 80GB HBM3"

    def nvmlEventSetCreate(self) -> object:
        return pynvml.c_nvmlEventSet_t()

    def nvmlDeviceGetSupportedEventTypes(self, handle: object) -> int:
        self._check(handle)
        if not self.events_supported:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)
        return pynvml.nvmlEventTypeXidCriticalError | pynvml.nvmlEventTypeDoubleBitEccError | pynvml.nvmlEventTypePState

    def nvmlDeviceRegisterEvents(self, handle: object, event_types: int, event_set: object) -> None:
        self.registered.append((self._check(handle), event_types))

    def nvmlEventSetWait(self, event_set: object, timeout_ms: int) -> pynvml.c_nvmlEventData_t:
        try:
            return self.events.get(timeout=timeout_ms / 1000)
        except queue.Empty:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_TIMEOUT) from None

    def nvmlEventSetFree(self, event_set: object) -> None:
        pass

    # Test controls -----------------------------------------------------------------------------
    def emit(self, gpu: int | None, event_type: int, xid: int = 0) -> None:
        device = self.handles[gpu] if gpu is not None else pynvml.c_nvmlDevice_t()
        self.events.put(pynvml.c_nvmlEventData_t(device=device, eventType=event_type, eventData=xid))


GPUS = [
    ("GPU-aaaaaaaa-0000-0000-0000-000000000000", 0, "00000000:3B:00.0"),
    ("GPU-bbbbbbbb-0000-0000-0000-000000000001", 1, "00000000:86:00.0"),
]
UUID0, UUID1 = GPUS[0][0], GPUS[1][0]


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    dev = tmp_path / "dev"
    dev.mkdir()
    for name in ("nvidia0", "nvidia1", "nvidiactl", "nvidia-uvm"):
        (dev / name).touch()
    for bus, numa in (("0000:3b:00.0", "0"), ("0000:86:00.0", "1")):
        (tmp_path / "sys/bus/pci/devices" / bus).mkdir(parents=True)
        (tmp_path / "sys/bus/pci/devices" / bus / "numa_node").write_text(f"{numa}\n")
    return tmp_path


def make(tree: Path, lib: FakeNvmlLibrary, **keys: object) -> nvidia.NvidiaBackend:
    b = nvidia.create("nvidia.com/gpu", nvidia.Config.model_validate(keys), root=tree, nvml=Nvml(lib))
    assert isinstance(b, nvidia.NvidiaBackend)
    return b


def test_missing_driver_is_a_clear_unavailable_error() -> None:
    # Real pynvml, real failure: this machine has no libnvidia-ml.so.1.
    with pytest.raises(UnavailableError) as err:
        nvidia.create("nvidia.com/gpu", nvidia.Config())
    assert "NVIDIA driver / NVML not found" in err.value.message
    assert err.value.hint and "libnvidia-ml.so.1" in err.value.hint


def test_scan_lists_gpus_by_uuid_with_index_numa_and_node(tree: Path) -> None:
    lib = FakeNvmlLibrary(GPUS)
    b = make(tree, lib)
    try:
        devices = b.scan()
        assert list(devices) == sorted([UUID0, UUID1])
        gpu1 = devices[UUID1]
        assert (gpu1.index, gpu1.numa_node, gpu1.health) == ("1", 1, Health.HEALTHY)
        assert gpu1.nodes == (DeviceNode(str(tree / "dev/nvidia1"), "/dev/nvidia1"),)
        assert dict(gpu1.attributes)["pci"] == "0000:86:00.0"
        # Only the event types the device supports, and only health ones (no PState).
        assert lib.registered == [(0, 0xA), (1, 0xA)]
    finally:
        b.close()
    assert lib.shutdowns == 1


def test_container_allocation_env_nodes_and_cdi(tree: Path) -> None:
    b = make(tree, FakeNvmlLibrary(GPUS))
    try:
        d = b.scan()
        alloc = b.container_allocation([d[UUID1], d[UUID0]])
        assert alloc.envs == {"NVIDIA_VISIBLE_DEVICES": "0,1"}
        assert alloc.cdi_devices == ("nvidia.com/gpu=0", "nvidia.com/gpu=1")
        # Control nodes only where they exist: this tree has nvidiactl and nvidia-uvm.
        assert [n.container_path for n in alloc.device_nodes] == [
            "/dev/nvidia0",
            "/dev/nvidia1",
            "/dev/nvidiactl",
            "/dev/nvidia-uvm",
        ]
    finally:
        b.close()


def test_visible_devices_by_uuid(tree: Path) -> None:
    b = make(tree, FakeNvmlLibrary(GPUS), visibleDevices="uuid")
    try:
        alloc = b.container_allocation([b.scan()[UUID1]])
        assert alloc.envs == {"NVIDIA_VISIBLE_DEVICES": UUID1}
        assert alloc.cdi_devices == (f"nvidia.com/gpu={UUID1}",)
    finally:
        b.close()


def test_missing_numa_attribute_is_none(tree: Path) -> None:
    (tree / "sys/bus/pci/devices/0000:86:00.0/numa_node").write_text("-1\n")
    (tree / "sys/bus/pci/devices/0000:3b:00.0/numa_node").unlink()
    b = make(tree, FakeNvmlLibrary(GPUS))
    try:
        assert [d.numa_node for d in b.scan().values()] == [None, None]
    finally:
        b.close()


def test_critical_xid_marks_the_gpu_unhealthy_and_it_recovers(tree: Path) -> None:
    lib = FakeNvmlLibrary(GPUS)
    b = make(tree, lib, recoverAfterSeconds=0.3)
    try:
        assert not b.wait_for_change(0.05)
        lib.emit(1, pynvml.nvmlEventTypeXidCriticalError, xid=79)  # fell off the bus
        assert b.wait_for_change(5.0)
        assert b.scan()[UUID1].health is Health.UNHEALTHY
        assert b.scan()[UUID0].healthy
        start = time.monotonic()
        assert b.wait_for_change(5.0)  # the re-probe after the quiet period
        assert time.monotonic() - start >= 0.15
        assert b.scan()[UUID1].healthy
    finally:
        b.close()


def test_a_gpu_that_does_not_answer_stays_unhealthy(tree: Path) -> None:
    lib = FakeNvmlLibrary(GPUS)
    b = make(tree, lib, recoverAfterSeconds=0.1)
    try:
        lib.lost.add(UUID0)
        lib.emit(0, pynvml.nvmlEventTypeDoubleBitEccError)
        assert b.wait_for_change(5.0)
        assert not b.wait_for_change(0.5)  # probes fail: no change
        assert b.scan()[UUID0].health is Health.UNHEALTHY
        lib.lost.clear()
        assert b.wait_for_change(5.0)
        assert b.scan()[UUID0].healthy
    finally:
        b.close()


@pytest.mark.parametrize("xid", nvidia.APPLICATION_XIDS)
def test_application_xids_and_single_bit_ecc_are_ignored(tree: Path, xid: int) -> None:
    lib = FakeNvmlLibrary(GPUS)
    b = make(tree, lib)
    try:
        lib.emit(0, pynvml.nvmlEventTypeXidCriticalError, xid=xid)
        lib.emit(0, pynvml.nvmlEventTypeSingleBitEccError)
        assert not b.wait_for_change(0.5)
        assert b.scan()[UUID0].healthy
    finally:
        b.close()


def test_unattributed_event_marks_every_gpu_unhealthy(tree: Path) -> None:
    lib = FakeNvmlLibrary(GPUS)
    b = make(tree, lib, recoverAfterSeconds=None)
    try:
        lib.emit(None, pynvml.nvmlEventTypeXidCriticalError, xid=48)
        assert b.wait_for_change(5.0)
        assert [d.health for d in b.scan().values()] == [Health.UNHEALTHY, Health.UNHEALTHY]
        assert not b.wait_for_change(0.5)  # recovery disabled
    finally:
        b.close()


def test_gpus_without_event_support_stay_healthy(tree: Path) -> None:
    lib = FakeNvmlLibrary(GPUS, events_supported=False)
    b = make(tree, lib)
    try:
        assert b.silent == [UUID0, UUID1]
        assert all(d.healthy for d in b.scan().values())
    finally:
        b.close()


def test_no_gpus_is_an_empty_list(tree: Path) -> None:
    b = make(tree, FakeNvmlLibrary([]))
    try:
        assert len(b.scan()) == 0
        assert not b.wait_for_change(0.2)
    finally:
        b.close()


def test_close_wakes_a_waiter(tree: Path) -> None:
    b = make(tree, FakeNvmlLibrary(GPUS))
    threading.Timer(0.05, b.close).start()
    start = time.monotonic()
    assert not b.wait_for_change(10.0)
    assert time.monotonic() - start < 2.0


def test_failed_enumeration_is_unavailable_and_shuts_nvml_down(tree: Path) -> None:
    lib = FakeNvmlLibrary(GPUS)
    lib.lost.add(UUID1)
    with pytest.raises(UnavailableError, match="could not list the GPUs"):
        make(tree, lib)
    assert lib.shutdowns == 1


@pytest.mark.parametrize(("raw", "sysfs"), [("00000000:3B:00.0", "0000:3b:00.0"), (b"0000:AF:00.1", "0000:af:00.1")])
def test_bus_id_conversion(raw: str | bytes, sysfs: str) -> None:
    assert sysfs_bus_id(raw) == sysfs


@pytest.mark.parametrize(
    ("keys", "fragment"),
    [
        ({"visibleDevices": "name"}, "visibleDevices"),
        ({"recoverAfterSeconds": 0}, "recoverAfterSeconds"),
        ({"ignoredXids": ["x"]}, "ignoredXids"),
        ({"replicas": 2}, "replicas"),
    ],
)
def test_bad_config_names_the_key(keys: dict[str, object], fragment: str) -> None:
    with pytest.raises(ValidationError) as err:
        nvidia.Config.model_validate(keys)
    assert fragment in str(err.value)


# ------------------------------------------------------------------------------------------------
# DRA facts (attributes, capacity) and MIG (issue 19, items 3 and 4).
#
# ``FactsNvml`` extends the stand-in with the calls those read: brand, architecture, compute
# capability, memory, driver version, MIG mode and MIG devices (real ``c_nvmlDeviceAttributes`` and
# ``c_nvmlMemory_t`` structs, MIG device handles as real ``c_nvmlDevice_t``, real NVMLError codes).
# Every nvml* call is counted, so a test can show that a scan makes none.
# ------------------------------------------------------------------------------------------------

import logging  # noqa: E402
import shutil  # noqa: E402
from dataclasses import dataclass  # noqa: E402

from kubeaccel.devices.backends import _mig  # noqa: E402
from kubeaccel.devices.backends._nvml import MigDevice  # noqa: E402
from kubeaccel.devices.config import parse_config  # noqa: E402
from kubeaccel.devices.model import Devices  # noqa: E402
from kubeaccel.dra.model import Pool, resource_slice  # noqa: E402
from kubeaccel.errors import ConfigError  # noqa: E402

H100_MEMORY = 81559 * 2**20
H200_MEMORY = 143771 * 2**20


@dataclass
class Mig:
    """One MIG device in the fake: its slot, GI/CI IDs, slices and memory (MiB)."""

    slot: int
    gi: int
    ci: int
    g: int
    c: int
    mib: int
    uuid: str = ""
    handle: object = None  # set by FactsNvml


class FactsNvml(FakeNvmlLibrary):
    """``FakeNvmlLibrary`` plus the fact and MIG calls (see the block comment above)."""

    def __init__(self, gpus: list[tuple[str, int, str]], *, memory: int = H200_MEMORY,
                 mig: dict[int, list[Mig]] | None = None, mig_supported: bool = True,
                 unsupported: frozenset[str] = frozenset()) -> None:
        super().__init__(gpus)
        self.memory = memory
        self.mig = mig or {}  # GPU position -> its MIG devices (present = MIG mode on)
        self.mig_supported = mig_supported
        self.unsupported = unsupported
        self.calls: list[str] = []
        self._mig_structs: list[object] = []
        self.mig_handles: dict[int, tuple[int, Mig]] = {}  # handle address -> (GPU position, MIG)
        for pos, migs in self.mig.items():
            for m in migs:
                struct = pynvml.struct_c_nvmlDevice_t()
                self._mig_structs.append(struct)
                handle = pynvml.c_nvmlDevice_t(struct)
                m.uuid = m.uuid or f"MIG-{pos}{m.slot}aaaaaa-0000-0000-0000-00000000000{m.slot}"
                self.mig_handles[ctypes.cast(handle, ctypes.c_void_p).value or 0] = (pos, m)
                m.handle = handle

    def __getattribute__(self, name: str) -> object:
        if name.startswith("nvml"):
            object.__getattribute__(self, "calls").append(name)
            if name in object.__getattribute__(self, "unsupported"):
                def refuse(*_args: object) -> object:
                    raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)
                return refuse
        return object.__getattribute__(self, name)

    def _mig(self, handle: object) -> Mig | None:
        found = self.mig_handles.get(ctypes.cast(handle, ctypes.c_void_p).value or 0)
        return found[1] if found else None

    def nvmlDeviceGetUUID(self, handle: object) -> str:
        mig = self._mig(handle)
        return mig.uuid if mig else super().nvmlDeviceGetUUID(handle)

    def nvmlDeviceGetBrand(self, handle: object) -> int:
        self._check(handle)
        return pynvml.NVML_BRAND_NVIDIA

    def nvmlDeviceGetArchitecture(self, handle: object) -> int:
        self._check(handle)
        return pynvml.NVML_DEVICE_ARCH_HOPPER

    def nvmlDeviceGetCudaComputeCapability(self, handle: object) -> tuple[int, int]:
        self._check(handle)
        return (9, 0)

    def nvmlDeviceGetMemoryInfo(self, handle: object) -> pynvml.c_nvmlMemory_t:
        self._check(handle)
        return pynvml.c_nvmlMemory_t(total=self.memory, free=self.memory, used=0)

    def nvmlSystemGetDriverVersion(self) -> str:
        return "580.159.04"

    def nvmlDeviceGetMigMode(self, handle: object) -> list[int]:
        pos = self._check(handle)
        if not self.mig_supported:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)
        on = pynvml.NVML_DEVICE_MIG_ENABLE if pos in self.mig else pynvml.NVML_DEVICE_MIG_DISABLE
        return [on, on]

    def nvmlDeviceGetMaxMigDeviceCount(self, handle: object) -> int:
        self._check(handle)
        return 7

    def nvmlDeviceGetMigDeviceHandleByIndex(self, handle: object, index: int) -> object:
        pos = self._check(handle)
        for m in self.mig.get(pos, []):
            if m.slot == index:
                return m.handle
        raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_FOUND)

    def _need_mig(self, handle: object) -> Mig:
        mig = self._mig(handle)
        if mig is None:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        return mig

    def nvmlDeviceGetGpuInstanceId(self, handle: object) -> int:
        return self._need_mig(handle).gi

    def nvmlDeviceGetComputeInstanceId(self, handle: object) -> int:
        return self._need_mig(handle).ci

    def nvmlDeviceGetAttributes(self, handle: object) -> pynvml.c_nvmlDeviceAttributes:
        m = self._need_mig(handle)
        return pynvml.c_nvmlDeviceAttributes(multiprocessorCount=16 * m.c, gpuInstanceSliceCount=m.g,
                                             computeInstanceSliceCount=m.c, memorySizeMB=m.mib)


def pci_tree(tmp_path: Path, numa: dict[str, str] | None = None) -> Path:
    """/dev and a /sys where /sys/bus/pci/devices/<BDF> links into /sys/devices/pci0000:XX/… as on a host."""
    dev = tmp_path / "dev"
    dev.mkdir()
    for name in ("nvidia0", "nvidia1", "nvidiactl"):
        (dev / name).touch()
    numa = numa if numa is not None else {"0000:3b:00.0": "0", "0000:86:00.0": "1"}
    links = tmp_path / "sys/bus/pci/devices"
    links.mkdir(parents=True)
    for bdf, node in numa.items():
        root = f"pci0000:{bdf[5:7]}"
        real = tmp_path / "sys/devices" / root / f"0000:{bdf[5:7]}:01.0" / bdf
        real.mkdir(parents=True)
        (real / "numa_node").write_text(f"{node}\n")
        (links / bdf).symlink_to(Path("../../..") / "devices" / root / f"0000:{bdf[5:7]}:01.0" / bdf)
    return tmp_path


def mig_minors(tree: Path, lines: list[str]) -> None:
    path = tree / "proc/driver/nvidia-caps/mig-minors"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("config 1\nmonitor 2\n" + "".join(f"{line}\n" for line in lines))


def make_facts(tree: Path, lib: FakeNvmlLibrary, name: str = "nvidia.com/gpu", **keys: object) -> nvidia.NvidiaBackend:
    b = nvidia.create(name, nvidia.Config.model_validate(keys), root=tree, nvml=Nvml(lib))
    assert isinstance(b, nvidia.NvidiaBackend)
    return b


def slice_devices(resource: str, devices: Devices) -> dict[str, dict[str, object]]:
    doc = resource_slice("node-a", "dra.kubeaccel.io", Pool.of("node-a", resource, devices), 1)
    return {d["name"]: d for d in doc["spec"]["devices"]}


def test_dra_attributes_and_capacity_of_a_gpu(tmp_path: Path) -> None:
    tree = pci_tree(tmp_path)
    b = make_facts(tree, FactsNvml(GPUS))
    try:
        devices = b.scan()
    finally:
        b.close()
    entry = slice_devices("nvidia.com/gpu", devices)[UUID1.lower()]
    assert entry["attributes"] == {
        "architecture": {"string": "Hopper"},
        "brand": {"string": "Nvidia"},
        "cudaComputeCapability": {"version": "9.0.0"},
        "driverVersion": {"version": "580.159.4"},  # semver: no leading zeros
        "id": {"string": UUID1},
        "index": {"int": 1},
        "name": {"string": "NVIDIA H100 80GB HBM3"},
        "numaNode": {"int": 1},
        "pci": {"string": "0000:86:00.0"},
        "productName": {"string": "NVIDIA H100 80GB HBM3"},
        "resource": {"string": "nvidia.com/gpu"},
        "resource.kubernetes.io/numaNode": {"int": 1},
        "resource.kubernetes.io/pciBusID": {"string": "0000:86:00.0"},
        "resource.kubernetes.io/pcieRoot": {"string": "pci0000:86"},
        "type": {"string": "gpu"},
        "uuid": {"string": UUID1},
    }
    assert entry["capacity"] == {"memory": {"value": "143771Mi"}}


def test_facts_are_read_once_not_per_scan(tmp_path: Path) -> None:
    tree = pci_tree(tmp_path)
    lib = FactsNvml(GPUS)
    b = make_facts(tree, lib)
    try:
        first = b.scan()
        lib.calls.clear()
        shutil.rmtree(tree / "sys")  # nor is sysfs read again
        for _ in range(50):
            assert b.scan() == first
        assert not [c for c in lib.calls if c != "nvmlEventSetWait"]
        assert first[UUID0].numa_node == 0
    finally:
        b.close()


def test_facts_a_driver_cannot_tell_are_left_out(tmp_path: Path) -> None:
    tree = pci_tree(tmp_path, numa={"0000:3b:00.0": "-1"})
    shutil.rmtree(tree / "sys/devices")  # dangling links: no pcieRoot
    unsupported = frozenset({"nvmlDeviceGetBrand", "nvmlDeviceGetArchitecture", "nvmlDeviceGetMemoryInfo",
                             "nvmlDeviceGetCudaComputeCapability", "nvmlSystemGetDriverVersion"})
    b = make_facts(tree, FactsNvml(GPUS[:1], unsupported=unsupported))
    try:
        entry = slice_devices("nvidia.com/gpu", b.scan())[UUID0.lower()]
    finally:
        b.close()
    assert set(entry["attributes"]) == {  # type: ignore[arg-type]
        "id", "index", "name", "pci", "productName", "resource", "type", "uuid", "resource.kubernetes.io/pciBusID"}
    assert "capacity" not in entry


@pytest.mark.parametrize("strategy", _mig.STRATEGIES)
@pytest.mark.parametrize("supported", [True, False])
def test_mig_off_changes_nothing(tmp_path: Path, strategy: str, supported: bool) -> None:
    # The lent H200: MIG mode off (or a GPU without MIG): every strategy serves the whole GPUs, no error.
    tree = pci_tree(tmp_path)
    b = make_facts(tree, FactsNvml(GPUS, mig_supported=supported), migStrategy=strategy)
    try:
        devices = b.scan()
    finally:
        b.close()
    assert list(devices) == [UUID0, UUID1]
    assert [d.index for d in devices.values()] == ["0", "1"]


H100_1G = [Mig(0, gi=7, ci=0, g=1, c=1, mib=9856), Mig(1, gi=8, ci=0, g=1, c=1, mib=9856)]
H100_3G = [Mig(2, gi=1, ci=0, g=3, c=3, mib=40192)]
MINORS = ["gpu0/gi7/access 66", "gpu0/gi7/ci0/access 67", "gpu0/gi8/access 75", "gpu0/gi8/ci0/access 76",
          "gpu1/gi1/access 12", "gpu1/gi1/ci0/access 13", "gpu0/gi1/access 12", "gpu0/gi1/ci0/access 13"]


def test_single_serves_mig_devices_under_the_resource(tmp_path: Path) -> None:
    tree = pci_tree(tmp_path)
    mig_minors(tree, MINORS)
    lib = FactsNvml(GPUS[:1], memory=H100_MEMORY, mig={0: [Mig(0, 7, 0, 1, 1, 9856), Mig(1, 8, 0, 1, 1, 9856)]})
    b = make_facts(tree, lib, migStrategy="single")
    try:
        devices = b.scan()
        assert [d.index for d in devices.values()] == ["0:0", "0:1"]
        first = next(iter(devices.values()))
        assert [n.container_path for n in first.nodes] == [
            "/dev/nvidia0", "/dev/nvidia-caps/nvidia-cap66", "/dev/nvidia-caps/nvidia-cap67"]
        entry = slice_devices("nvidia.com/gpu", devices)[first.id.lower()]
        attrs = entry["attributes"]
        assert attrs["profile"] == {"string": "1g.10gb"} and attrs["type"] == {"string": "mig"}  # type: ignore[index]
        assert attrs["parentUUID"] == {"string": UUID0}  # type: ignore[index]
        assert attrs["gpuInstance"] == {"int": 7} and attrs["computeInstance"] == {"int": 0}  # type: ignore[index]
        assert entry["capacity"] == {"memory": {"value": "9856Mi"}, "multiprocessors": {"value": "16"}}
        # A MIG device's health is its GPU's: an XID on GPU 0 takes both down.
        lib.emit(0, pynvml.nvmlEventTypeXidCriticalError, xid=79)
        assert b.wait_for_change(5.0)
        assert [d.health for d in b.scan().values()] == [Health.UNHEALTHY, Health.UNHEALTHY]
    finally:
        b.close()


@pytest.mark.parametrize(
    ("mig", "fragment"),
    [
        ({0: [Mig(0, 7, 0, 1, 1, 9856)]}, "have MIG mode off while others have it on"),
        ({0: [Mig(0, 7, 0, 1, 1, 9856)], 1: [Mig(2, 1, 0, 3, 3, 40192)]}, "more than one MIG profile"),
        ({0: []}, "MIG mode on but no MIG devices"),
    ],
)
def test_single_refuses_a_node_it_cannot_serve(tmp_path: Path, mig: dict[int, list[Mig]], fragment: str) -> None:
    tree = pci_tree(tmp_path)
    mig_minors(tree, MINORS)
    lib = FactsNvml(GPUS, memory=H100_MEMORY, mig=mig)
    with pytest.raises(ConfigError, match=fragment) as err:
        make_facts(tree, lib, migStrategy="single")
    assert err.value.message.startswith("migStrategy: single") and err.value.hint
    assert lib.shutdowns == 1  # the failed start released NVML


def test_mixed_one_entry_per_resource(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    tree = pci_tree(tmp_path)
    mig_minors(tree, MINORS)
    layout = {0: [Mig(0, 7, 0, 1, 1, 9856), Mig(1, 8, 0, 1, 1, 9856), Mig(2, 1, 0, 3, 3, 40192)]}
    served: dict[str, list[str]] = {}
    for name in ("nvidia.com/gpu", "nvidia.com/mig-1g.10gb", "nvidia.com/mig-3g.40gb", "nvidia.com/mig-7g.80gb"):
        with caplog.at_level(logging.WARNING):
            b = make_facts(tree, FactsNvml(GPUS, memory=H100_MEMORY, mig=layout), name, migStrategy="mixed")
        try:
            served[name] = [d.index for d in b.scan().values()]
        finally:
            b.close()
    assert served == {"nvidia.com/gpu": ["1"], "nvidia.com/mig-1g.10gb": ["0:0", "0:1"],
                      "nvidia.com/mig-3g.40gb": ["0:2"], "nvidia.com/mig-7g.80gb": []}
    # The whole-GPU entry says which MIG profiles no entry of its own serves yet.
    assert "1g.10gb x2, 3g.40gb x1" in caplog.text


def test_mig_without_capability_minors_is_a_clear_error(tmp_path: Path) -> None:
    tree = pci_tree(tmp_path)
    lib = FactsNvml(GPUS[:1], memory=H100_MEMORY, mig={0: [Mig(0, 7, 0, 1, 1, 9856)]})
    with pytest.raises(UnavailableError, match="mig-minors lists no capability for gpu0/gi7/access") as err:
        make_facts(tree, lib, migStrategy="single")
    assert err.value.hint and "nvidia-caps" in err.value.hint


@pytest.mark.parametrize("bad", ["all", "None", "", 1, True])
def test_mig_strategy_outside_the_three_is_a_config_error_naming_the_key(bad: object) -> None:
    with pytest.raises(ConfigError, match=r"resources\[0\]\.migStrategy") as err:
        parse_config({"resources": [{"name": "nvidia.com/gpu", "backend": "nvidia", "migStrategy": bad}]})
    assert "none" in err.value.message and "mixed" in err.value.message


@pytest.mark.parametrize(
    ("gpu_mib", "g", "c", "mig_mib", "profile"),
    [
        (40536, 1, 1, 4864, "1g.5gb"), (40536, 2, 2, 9984, "2g.10gb"), (40536, 3, 3, 20096, "3g.20gb"),
        (40536, 7, 7, 40192, "7g.40gb"), (40536, 3, 1, 20096, "1c.3g.20gb"),
        (81559, 1, 1, 9856, "1g.10gb"), (81559, 7, 7, 80768, "7g.80gb"), (81559, 2, 2, 19968, "2g.20gb"),
    ],
)
def test_profile_names_as_nvidia_writes_them(gpu_mib: int, g: int, c: int, mig_mib: int, profile: str) -> None:
    mig = MigDevice(0, "MIG-x", 1, 0, gpu_slices=g, compute_slices=c, memory_bytes=mig_mib * 2**20, multiprocessors=1)
    assert _mig.profile_name(mig, gpu_mib * 2**20) == profile
