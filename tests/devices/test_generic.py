"""The generic backend on a real temp-dir /dev tree: globs, IDs, indices, health, change, sharing."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from pydantic import ValidationError

from kubeaccel.devices.backends import generic
from kubeaccel.devices.model import DeviceNode, Health
from kubeaccel.devices.sharing import SharedBackend


def make_dev(root: Path, *names: str) -> None:
    for name in names:
        path = root / "dev" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()


def backend(root: Path, **keys: object) -> generic.GenericBackend:
    keys.setdefault("pollIntervalSeconds", 0.01)
    created = generic.create("example.com/serial", generic.Config.model_validate(keys), root=root)
    assert isinstance(created, generic.GenericBackend)
    return created


def test_scan_matches_every_glob_in_natural_order(tmp_path: Path) -> None:
    make_dev(tmp_path, "ttyUSB10", "ttyUSB2", "ttyUSB0", "ttyS0", "bus/usb/001/004")
    b = backend(tmp_path, paths=["/dev/ttyUSB*", "/dev/bus/usb/*/*"])
    devices = b.scan()
    assert list(devices) == ["bus_usb_001_004", "ttyUSB0", "ttyUSB2", "ttyUSB10"]
    usb10 = devices["ttyUSB10"]
    assert usb10.health is Health.HEALTHY
    assert usb10.nodes == (DeviceNode(str(tmp_path / "dev/ttyUSB10"), "/dev/ttyUSB10", "rw"),)
    assert b.container_allocation([usb10]).device_nodes == usb10.nodes


def test_index_is_the_trailing_number_when_unique(tmp_path: Path) -> None:
    make_dev(tmp_path, "ttyUSB0", "ttyUSB3", "ttyUSB12")
    devices = backend(tmp_path, paths=["/dev/ttyUSB*"]).scan()
    assert [d.index for d in devices.values()] == ["0", "3", "12"]


def test_index_falls_back_to_position_when_numbers_collide(tmp_path: Path) -> None:
    make_dev(tmp_path, "ttyUSB0", "ttyACM0", "ttyACM1")
    devices = backend(tmp_path, paths=["/dev/ttyUSB*", "/dev/ttyACM*"]).scan()
    assert {d.id: d.index for d in devices.values()} == {"ttyACM0": "0", "ttyACM1": "1", "ttyUSB0": "2"}


def test_unplugged_node_turns_unhealthy_and_recovers(tmp_path: Path) -> None:
    make_dev(tmp_path, "ttyUSB0", "ttyUSB1")
    b = backend(tmp_path, paths=["/dev/ttyUSB*"])
    assert b.scan()["ttyUSB1"].healthy
    (tmp_path / "dev/ttyUSB1").unlink()
    assert b.wait_for_change(5.0)
    assert b.scan()["ttyUSB1"].health is Health.UNHEALTHY
    make_dev(tmp_path, "ttyUSB1")
    assert b.wait_for_change(5.0)
    assert b.scan()["ttyUSB1"].healthy


def test_dangling_symlink_is_unhealthy(tmp_path: Path) -> None:
    make_dev(tmp_path, "ttyUSB0")
    link = tmp_path / "dev/serial/by-id/usb-FTDI-if00"
    link.parent.mkdir(parents=True)
    link.symlink_to("../../ttyUSB0")
    b = backend(tmp_path, paths=["/dev/serial/by-id/*"])
    assert b.scan()["serial_by-id_usb-FTDI-if00"].healthy
    (tmp_path / "dev/ttyUSB0").unlink()
    assert b.scan()["serial_by-id_usb-FTDI-if00"].health is Health.UNHEALTHY


def test_new_node_is_a_change(tmp_path: Path) -> None:
    make_dev(tmp_path, "ttyUSB0")
    b = backend(tmp_path, paths=["/dev/ttyUSB*"])
    b.scan()
    assert not b.wait_for_change(0.05)
    threading.Timer(0.05, make_dev, (tmp_path, "ttyUSB1")).start()
    start = time.monotonic()
    assert b.wait_for_change(5.0)
    assert time.monotonic() - start < 1.0
    assert list(b.scan()) == ["ttyUSB0", "ttyUSB1"]


def test_close_ends_a_wait_at_once(tmp_path: Path) -> None:
    b = backend(tmp_path, paths=["/dev/ttyUSB*"])
    threading.Timer(0.05, b.close).start()
    start = time.monotonic()
    assert not b.wait_for_change(10.0)
    assert time.monotonic() - start < 2.0


def test_no_match_is_an_empty_list_not_an_error(tmp_path: Path) -> None:
    assert len(backend(tmp_path, paths=["/dev/nothing*"]).scan()) == 0


def test_share_count_advertises_replicas(tmp_path: Path) -> None:
    make_dev(tmp_path, "ttyUSB0", "ttyUSB1")
    config = generic.Config.model_validate({"paths": ["/dev/ttyUSB*"], "shareCount": 3})
    shared = generic.create("example.com/serial", config, root=tmp_path)
    assert isinstance(shared, SharedBackend)
    devices = shared.scan()
    assert list(devices) == [f"ttyUSB{d}::{n}" for d in (0, 1) for n in range(3)]
    alloc = shared.container_allocation([devices["ttyUSB0::0"], devices["ttyUSB0::2"]])
    assert [n.container_path for n in alloc.device_nodes] == ["/dev/ttyUSB0"]


@pytest.mark.parametrize(
    ("keys", "fragment"),
    [
        ({"paths": ["dev/ttyUSB*"]}, "not an absolute path"),
        ({"paths": []}, "paths"),
        ({"paths": ["/dev/x"], "shareCount": 0}, "shareCount"),
        ({"paths": ["/dev/x"], "permissions": "rx"}, "permissions"),
        ({"paths": ["/dev/x"], "permissions": "rr"}, "permissions"),
        ({"paths": ["/dev/x"], "replicas": 2}, "replicas"),
        ({"paths": ["/dev/x"], "typo": 1}, "typo"),
    ],
)
def test_bad_config_names_the_key(keys: dict[str, object], fragment: str) -> None:
    with pytest.raises(ValidationError) as err:
        generic.Config.model_validate(keys)
    assert fragment in str(err.value)


def test_config_accepts_snake_case_names_too() -> None:
    assert generic.Config(paths=["/dev/x"], share_count=2).share_count == 2


def test_nodes_mapping_to_one_id_keep_the_first(tmp_path: Path) -> None:
    make_dev(tmp_path, "a/b", "a_b")
    devices = backend(tmp_path, paths=["/dev/a/*", "/dev/a_*"]).scan()
    assert list(devices) == ["a_b"]
    assert devices["a_b"].nodes[0].container_path == "/dev/a/b"
