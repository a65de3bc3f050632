"""The NVIDIA backend's DRA facts (attributes, capacity) and MIG (issue 19, items 3 and 4).

No GPU here: the real backend and the real ``Nvml`` adapter run over ``FactsNvml``, which extends
``test_nvidia.FakeNvmlLibrary`` (pynvml's call shapes, real ctypes structs, real ``NVMLError``) with
the calls these read: brand, architecture, compute capability, memory, driver version, MIG mode and
MIG devices (real ``c_nvmlDeviceAttributes`` and ``c_nvmlMemory_t`` structs, MIG device handles as
real ``c_nvmlDevice_t``, real NVML error codes). Every nvml* call is counted, so a test can show
that a scan makes none. Sysfs trees are real files and symlinks in temp dirs.

Matrix: every fact published with its DRA type; facts read once (no NVML or sysfs call per scan);
facts a driver cannot tell left out; MIG off (or unsupported) x each strategy = whole GPUs;
single (devices, nodes, attributes, health per GPU/compute instance, recovery) and what it refuses; mixed, one entry per
resource; missing capability minors; a bad ``migStrategy``; NVIDIA's profile names.
"""

from __future__ import annotations

import ctypes
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

import pynvml
import pytest
from devices.test_nvidia import GPUS, UUID0, UUID1, FakeNvmlLibrary

from kubeaccel.devices.backends import _mig, nvidia
from kubeaccel.devices.backends._nvml import MigDevice, Nvml
from kubeaccel.devices.config import parse_config
from kubeaccel.devices.model import Devices, Health
from kubeaccel.dra.model import Pool, resource_slice
from kubeaccel.errors import ConfigError, UnavailableError

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

    def emit_at(self, gpu: int, *, gi: int, ci: int, xid: int) -> None:
        """An XID event on GPU ``gpu`` naming a GPU instance and compute instance, as NVML reports MIG errors."""
        self.events.put(pynvml.c_nvmlEventData_t(
            device=self.handles[gpu], eventType=pynvml.nvmlEventTypeXidCriticalError, eventData=xid,
            gpuInstanceId=gi, computeInstanceId=ci))

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
        # An XID that names a GPU and compute instance takes down that MIG device only ...
        lib.emit_at(0, gi=8, ci=0, xid=79)
        assert b.wait_for_change(5.0)
        by_index = {d.index: d.health for d in b.scan().values()}
        assert by_index == {"0:0": Health.HEALTHY, "0:1": Health.UNHEALTHY}
        # ... one about the whole GPU (instance IDs 0xFFFFFFFF) takes down all its MIG devices.
        lib.emit_at(0, gi=0xFFFFFFFF, ci=0xFFFFFFFF, xid=79)
        assert b.wait_for_change(5.0)
        assert [d.health for d in b.scan().values()] == [Health.UNHEALTHY, Health.UNHEALTHY]
    finally:
        b.close()


def test_a_failed_mig_device_recovers_when_its_gpu_answers(tmp_path: Path) -> None:
    tree = pci_tree(tmp_path)
    mig_minors(tree, MINORS)
    lib = FactsNvml(GPUS[:1], memory=H100_MEMORY, mig={0: [Mig(0, 7, 0, 1, 1, 9856), Mig(1, 8, 0, 1, 1, 9856)]})
    b = make_facts(tree, lib, migStrategy="single", recoverAfterSeconds=0.2)
    try:
        lib.emit_at(0, gi=7, ci=0, xid=79)
        assert b.wait_for_change(5.0)
        assert [d.healthy for d in b.scan().values()] == [False, True]
        assert b.wait_for_change(5.0)  # the re-probe (of GPU 0) after the quiet period
        assert all(d.healthy for d in b.scan().values())
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
