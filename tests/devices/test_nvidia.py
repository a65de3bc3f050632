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
        assert alloc.envs == {"NVIDIA_VISIBLE_DEVICES": f"{UUID0},{UUID1}"}  # UUIDs by default: stable
        assert alloc.cdi_devices == ()  # no CDI names until the plugin asks for a spec (cdi: true)
        # Control nodes only where they exist: this tree has nvidiactl and nvidia-uvm.
        assert [n.container_path for n in alloc.device_nodes] == [
            "/dev/nvidia0",
            "/dev/nvidia1",
            "/dev/nvidiactl",
            "/dev/nvidia-uvm",
        ]
    finally:
        b.close()


def test_visible_devices_by_index(tree: Path) -> None:
    b = make(tree, FakeNvmlLibrary(GPUS), visibleDevices="index")
    try:
        alloc = b.container_allocation([b.scan()[UUID1]])
        assert alloc.envs == {"NVIDIA_VISIBLE_DEVICES": "1"}
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
        ({"driverRoot": "host"}, "driverRoot"),
        ({"hostDriverRoot": 1}, "hostDriverRoot"),
        ({"cdiSpecDirs": ["etc/cdi"]}, "cdiSpecDirs"),
        ({"nvidiaCdiHookPath": "nvidia-cdi-hook"}, "nvidiaCdiHookPath"),
    ],
)
def test_bad_config_names_the_key(keys: dict[str, object], fragment: str) -> None:
    with pytest.raises(ValidationError) as err:
        nvidia.Config.model_validate(keys)
    assert fragment in str(err.value)


# -- CDI (issue 19): kubeaccel's own complete spec, or NVIDIA's when it is on the node ----------------


def cdi_backend(tree: Path, **keys: object) -> nvidia.NvidiaBackend:
    from fixtures.nvdriver import make_driver_root

    make_driver_root(tree / "driver", nodes=False)
    (tree / "cdi").mkdir(exist_ok=True)
    return make(tree, FakeNvmlLibrary(GPUS), driverRoot=str(tree / "driver"), cdiSpecDirs=[str(tree / "cdi")], **keys)


def test_own_cdi_spec_names_gpus_by_uuid(tree: Path) -> None:
    b = cdi_backend(tree)
    try:
        devices = b.scan()
        doc = b.cdi_spec(devices)
        assert doc is not None and doc["kind"] == "nvidia.kubeaccel.io/gpu" == nvidia.CDI_KIND
        assert [d["name"] for d in doc["devices"]] == [UUID0, "0", UUID1, "1"]
        common = doc["containerEdits"]
        assert f"{tree}/driver/usr/lib/x86_64-linux-gnu/libcuda.so.580.159.04" in {
            m["hostPath"] for m in common["mounts"]}
        assert [n["path"] for n in common["deviceNodes"]] == ["/dev/nvidiactl", "/dev/nvidia-uvm"]
        assert {h["args"][1] for h in common["hooks"]} == {"create-symlinks", "enable-cuda-compat", "update-ldcache"}
        assert common["hooks"][0]["path"] == f"{tree}/driver/usr/bin/nvidia-cdi-hook"
        assert "KUBEACCEL_CDI_NVIDIA_COM_GPU=nvidia.kubeaccel.io/gpu" in common["env"]
        alloc = b.container_allocation([devices[UUID1]])
        assert alloc.cdi_devices == (f"nvidia.kubeaccel.io/gpu={UUID1}",)
    finally:
        b.close()


def test_own_cdi_spec_by_index_without_hooks_and_with_a_host_root(tree: Path) -> None:
    b = cdi_backend(tree, visibleDevices="index", nvidiaCdiHookPath=None, hostDriverRoot="/host")
    try:
        devices = b.scan()
        doc = b.cdi_spec(devices)
        assert doc is not None and "hooks" not in doc["containerEdits"]
        mounts = {m["containerPath"]: m["hostPath"] for m in doc["containerEdits"]["mounts"]}
        lib = "/usr/lib/x86_64-linux-gnu/libcuda.so.580.159.04"
        assert mounts[lib] == "/host" + lib  # the runtime's view of the install
        assert mounts["/usr/lib/x86_64-linux-gnu/libcuda.so.1"] == "/host" + lib  # the link, as a mount
        assert b.container_allocation([devices[UUID1]]).cdi_devices == ("nvidia.kubeaccel.io/gpu=1",)
    finally:
        b.close()


def test_nvidias_own_spec_is_used_by_uuid_else_index(tree: Path) -> None:
    import json

    b = cdi_backend(tree)
    (tree / "cdi/nvidia.json").write_text(json.dumps({
        "cdiVersion": "0.5.0", "kind": "nvidia.com/gpu",
        "devices": [{"name": "0"}, {"name": "1"}, {"name": UUID1}, {"name": "all"}]}))
    try:
        devices = b.scan()
        assert b.cdi_spec(devices) is None  # no spec of ours beside NVIDIA's
        alloc = b.container_allocation([devices[UUID0], devices[UUID1]])
        assert alloc.cdi_devices == ("nvidia.com/gpu=0", f"nvidia.com/gpu={UUID1}")
    finally:
        b.close()


def test_a_gpu_nvidias_spec_lacks_is_refused_by_name(tree: Path) -> None:
    from kubeaccel.devices.policy import AllocationError

    b = cdi_backend(tree)
    (tree / "cdi/nvidia.yaml").write_text("cdiVersion: 0.5.0\nkind: nvidia.com/gpu\ndevices:\n- name: '0'\n")
    try:
        devices = b.scan()
        assert b.cdi_spec(devices) is None
        assert b.container_allocation([devices[UUID0]]).cdi_devices == ("nvidia.com/gpu=0",)
        with pytest.raises(AllocationError, match=UUID1):
            b.container_allocation([devices[UUID1]])
    finally:
        b.close()


def test_an_unreadable_spec_refuses_ours_naming_the_file(tree: Path, caplog: pytest.LogCaptureFixture) -> None:
    from kubeaccel.devices.policy import AllocationError

    b = cdi_backend(tree)
    broken = tree / "cdi/nvidia.yaml"
    broken.write_text("kind: nvidia.com/gpu\ndevices: [\n")
    try:
        devices = b.scan()
        assert b.cdi_spec(devices) is None
        assert str(broken) in caplog.text
        with pytest.raises(AllocationError) as err:
            b.container_allocation([devices[UUID0]])
        assert str(broken) in err.value.message and "not valid YAML" in err.value.message
        assert err.value.hint and "nvidia-ctk cdi generate" in err.value.hint
        broken.unlink()  # fixed: our own spec again
        assert b.cdi_spec(devices) is not None
        assert b.container_allocation([devices[UUID0]]).cdi_devices == (f"nvidia.kubeaccel.io/gpu={UUID0}",)
    finally:
        b.close()


def test_a_driver_root_without_nvml_is_unavailable_naming_it(tree: Path) -> None:
    b = make(tree, FakeNvmlLibrary(GPUS), driverRoot=str(tree / "nowhere"), cdiSpecDirs=[str(tree / "cdi")])
    try:
        with pytest.raises(UnavailableError, match=str(tree / "nowhere")):
            b.cdi_spec(b.scan())
    finally:
        b.close()
