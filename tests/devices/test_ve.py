"""The VE backend on a fake but real-file /dev + /sys tree in a temp dir.

Matrix: discovery (slot links relative/absolute, NUMA, attributes, real char device numbers),
health (os_state, ve_state, broken links, garbage), change detection (flip, recover, hot-add,
no busy wait), container allocation (nodes, links, VEOS mount, env vars), the reset hook (a
harmless shell command), and config errors.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from fixtures.ve import FakeVETree
from pydantic import ValidationError

from kubeaccel.devices.backends import ve
from kubeaccel.devices.model import DeviceNode, Health, Mount, Resettable
from kubeaccel.devices.sharing import SharedBackend
from kubeaccel.errors import KubeaccelError


@pytest.fixture
def tree(tmp_path: Path) -> FakeVETree:
    t = FakeVETree(tmp_path)
    t.add(1, 0, numa=0)
    t.add(0, 1, numa=1, absolute=True)
    t.add(2, 2, numa=-1, ve_state=None)
    return t


def backend(tree: FakeVETree, **keys: object) -> ve.VEBackend:
    keys.setdefault("pollIntervalSeconds", 0.01)
    created = ve.create("nec.com/ve", ve.Config.model_validate(keys), root=tree.root)
    assert isinstance(created, ve.VEBackend)
    return created


def test_scan_lists_slots_with_their_ve_nodes(tree: FakeVETree) -> None:
    devices = backend(tree).scan()
    assert list(devices) == ["veslot0", "veslot1", "veslot2"]
    slot0 = devices["veslot0"]
    assert slot0.index == "0"
    assert slot0.health is Health.HEALTHY
    assert slot0.numa_node == 0
    assert slot0.nodes == (
        DeviceNode(str(tree.root / "dev/ve1"), "/dev/ve1"),
        DeviceNode(str(tree.root / "dev/veslot0"), "/dev/veslot0"),
    )
    attrs = dict(slot0.attributes)
    assert attrs["device"] == "/dev/ve1"
    assert attrs["serial"] == "0123456789abcdef0123456789abcdef"
    assert devices["veslot1"].nodes[0].container_path == "/dev/ve0"  # absolute link target
    assert devices["veslot1"].numa_node == 1
    assert devices["veslot2"].numa_node is None  # negative numa_node = none


def test_device_number_is_read_from_the_node_not_assumed(tree: FakeVETree) -> None:
    # A real character device: the link target decides the major/minor, as with the dynamic VE major.
    (tree.root / "dev/ve7").symlink_to("/dev/null")
    (tree.root / "dev/veslot7").symlink_to("ve7")
    (tree.root / "sys/class/ve/ve7").mkdir(parents=True)
    tree.set(7, "os_state", 0)
    assert dict(backend(tree).scan()["veslot7"].attributes)["dev"] == "1:3"


@pytest.mark.parametrize(
    ("attr", "value"),
    [("os_state", 1), ("os_state", 2), ("os_state", 3), ("ve_state", 3), ("ve_state", 4), ("os_state", "x")],
)
def test_non_online_states_are_unhealthy(tree: FakeVETree, attr: str, value: int | str) -> None:
    tree.set(1, attr, value)
    devices = backend(tree).scan()
    assert devices["veslot0"].health is Health.UNHEALTHY
    assert devices["veslot1"].healthy


def test_missing_os_state_and_missing_node_are_unhealthy(tree: FakeVETree) -> None:
    (tree.root / "sys/class/ve/ve1/os_state").unlink()
    (tree.root / "dev/ve0").unlink()
    (tree.root / "dev/veslot9").symlink_to("not-a-ve")
    devices = backend(tree).scan()
    assert devices["veslot0"].health is Health.UNHEALTHY
    assert devices["veslot1"].health is Health.UNHEALTHY
    assert devices["veslot9"].health is Health.UNHEALTHY
    assert devices["veslot9"].nodes == (DeviceNode(str(tree.root / "dev/veslot9"), "/dev/veslot9"),)


def test_os_state_flip_wakes_the_waiter_and_recovers(tree: FakeVETree) -> None:
    b = backend(tree)
    assert b.scan()["veslot0"].healthy
    assert not b.wait_for_change(0.05)
    threading.Timer(0.05, tree.set, (1, "os_state", 1)).start()
    start = time.monotonic()
    assert b.wait_for_change(5.0)
    assert time.monotonic() - start < 1.0
    assert b.scan()["veslot0"].health is Health.UNHEALTHY
    tree.set(1, "os_state", 0)
    assert b.wait_for_change(5.0)
    assert b.scan()["veslot0"].healthy


def test_hot_added_slot_is_a_change(tree: FakeVETree) -> None:
    b = backend(tree)
    tree.add(3, 3)
    assert b.wait_for_change(5.0)
    assert "veslot3" in b.scan()


def test_wait_does_not_busy_spin(tree: FakeVETree) -> None:
    b = backend(tree, pollIntervalSeconds=0.05)
    cpu = time.process_time()
    assert not b.wait_for_change(0.5)
    assert time.process_time() - cpu < 0.2


def test_close_ends_a_wait(tree: FakeVETree) -> None:
    b = backend(tree)
    threading.Timer(0.05, b.close).start()
    start = time.monotonic()
    assert not b.wait_for_change(10.0)
    assert time.monotonic() - start < 2.0


def test_no_dev_dir_means_no_devices(tmp_path: Path) -> None:
    created = ve.create("nec.com/ve", ve.Config(), root=tmp_path / "absent")
    assert len(created.scan()) == 0


def test_container_allocation_exposes_nodes_links_veos_and_envs(tree: FakeVETree) -> None:
    b = backend(tree, veosSocketDir="/run/veos")
    d = b.scan()
    alloc = b.container_allocation([d["veslot2"], d["veslot0"]])
    assert alloc.envs == {"VE_NODE_NUMBER": "0", "_VENODELIST": "0 2"}
    assert [n.container_path for n in alloc.device_nodes] == ["/dev/ve1", "/dev/veslot0", "/dev/ve2", "/dev/veslot2"]
    assert alloc.mounts == (Mount("/run/veos", "/run/veos"),)


def test_default_veos_dir() -> None:
    assert ve.Config().veos_socket_dir == "/var/opt/nec/ve/veos"


def test_reset_runs_the_command_per_ve(tree: FakeVETree) -> None:
    log = tree.root / "reset.log"
    b = ve.create(
        "nec.com/ve",
        ve.Config(resetCommand=["sh", "-c", f"echo {{slot}} {{device}} >> {log}"]),
        root=tree.root,
    )
    assert isinstance(b, Resettable)
    d = b.scan()
    b.reset([d["veslot1"], d["veslot0"]])
    assert log.read_text().splitlines() == ["0 /dev/ve1", "1 /dev/ve0"]


def test_reset_through_sharing_resets_each_ve_once(tree: FakeVETree) -> None:
    log = tree.root / "reset.log"
    inner = ve.create("nec.com/ve", ve.Config(resetCommand=["sh", "-c", f"echo {{slot}} >> {log}"]), root=tree.root)
    shared = SharedBackend(inner, 3)
    assert isinstance(shared, Resettable)
    d = shared.scan()
    shared.reset([d["veslot0::2"], d["veslot0::0"], d["veslot2::1"]])
    assert log.read_text().splitlines() == ["0", "2"]
    assert shared.container_allocation([d["veslot0::2"], d["veslot0::1"]]).envs["_VENODELIST"] == "0"


def test_without_reset_command_the_backend_is_not_resettable(tree: FakeVETree) -> None:
    assert not isinstance(backend(tree), Resettable)


@pytest.mark.parametrize(
    ("command", "fragment"),
    [
        (["sh", "-c", "echo broken >&2; exit 3"], "exited with 3: broken"),
        (["/nonexistent/vecmd"], "No such file"),
        (["sleep", "5"], "did not finish within 0.2 s"),
    ],
)
def test_failed_reset_is_a_clear_error(tree: FakeVETree, command: list[str], fragment: str) -> None:
    b = ve.create("nec.com/ve", ve.Config(resetCommand=command, resetTimeoutSeconds=0.2), root=tree.root)
    assert isinstance(b, Resettable)
    with pytest.raises(KubeaccelError) as err:
        b.reset([b.scan()["veslot0"]])
    assert fragment in err.value.message
    assert "slot 0" in err.value.message
    assert err.value.hint


@pytest.mark.parametrize(
    ("keys", "fragment"),
    [
        ({"veosSocketDir": "var/opt"}, "not an absolute path"),
        ({"resetCommand": []}, "resetCommand"),
        ({"resetCommand": ["reset", "{card}"]}, "bad placeholder"),
        ({"pollIntervalSeconds": 0}, "pollIntervalSeconds"),
        ({"count": 2}, "count"),
        ({"name": "nec.com/ve"}, "name"),
    ],
)
def test_bad_config_names_the_key(keys: dict[str, object], fragment: str) -> None:
    with pytest.raises(ValidationError) as err:
        ve.Config.model_validate(keys)
    assert fragment in str(err.value)


# DRA facts (issue 19, item 3): capacity from sysfs, fwVersion, the standard PCI attributes.
def test_dra_capacity_and_attributes_from_sysfs(tree: FakeVETree) -> None:
    import shutil

    from kubeaccel.devices.model import Devices
    from kubeaccel.dra.model import Pool, resource_slice

    sysfs = tree.root / "sys/class/ve/ve1"
    for attr, value in (("num_of_core", "8"), ("memory_size", "48"), ("type", "20B"), ("fw_version", "5399")):
        (sysfs / attr).write_text(f"{value}\n")
    # On a host, device/ links to the PCI function under its root complex.
    real = tree.root / "sys/devices/pci0000:3a/0000:3a:00.0/0000:3b:00.0"
    real.mkdir(parents=True)
    (real / "numa_node").write_text("0\n")
    shutil.rmtree(sysfs / "device")
    (sysfs / "device").symlink_to(Path("../../../devices/pci0000:3a/0000:3a:00.0/0000:3b:00.0"))
    devices = backend(tree).scan()
    slot0 = devices["veslot0"]
    assert dict(slot0.capacity) == {"cores": 8, "memory": 48 * 10**9}
    doc = resource_slice("n", "dra.kubeaccel.io", Pool.of("n", "nec.com/ve", Devices([slot0])), 1)
    (entry,) = doc["spec"]["devices"]
    assert entry["capacity"] == {"cores": {"value": "8"}, "memory": {"value": "48G"}}
    attrs = entry["attributes"]
    assert attrs["model"] == {"int": 1} and attrs["type"] == {"string": "20B"}
    assert attrs["serial"] == {"string": "0123456789abcdef0123456789abcdef"}
    assert attrs["fwVersion"] == {"int": 5399}
    assert attrs["resource.kubernetes.io/numaNode"] == {"int": 0} and attrs["numaNode"] == {"int": 0}
    assert attrs["resource.kubernetes.io/pciBusID"] == {"string": "0000:3b:00.0"}
    assert attrs["resource.kubernetes.io/pcieRoot"] == {"string": "pci0000:3a"}
    # A VE whose sysfs lacks them (and has no NUMA node) publishes neither capacity nor the standard NUMA node.
    slot2 = devices["veslot2"]
    assert slot2.capacity == ()
    assert "resource.kubernetes.io/numaNode" not in [k for k, _ in slot2.attributes]
