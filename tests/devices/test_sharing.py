"""Replica sharing over real backends (generic on a temp /dev tree; the simulated one with NUMA)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kubeaccel.devices.backends import generic, simulated
from kubeaccel.devices.model import Resettable
from kubeaccel.devices.sharing import SharedBackend, device_id_of, device_ids_of, replica_id
from kubeaccel.errors import ConfigError


def sim(count: int, numa: int = 2) -> simulated.SimulatedBackend:
    return simulated.create("example.com/sim", simulated.Config(count=count, numaNodes=numa))


def test_replicas_copy_health_numa_and_index() -> None:
    inner = sim(4)
    shared = SharedBackend(inner, 3)
    devices = shared.scan()
    assert len(devices) == 12
    for real in inner.scan().values():
        for n in range(3):
            replica = devices[f"{real.id}::{n}"]
            assert (replica.index, replica.numa_node, replica.health) == (real.index, real.numa_node, real.health)
    assert shared.resource_name == "example.com/sim"


def test_allocation_maps_replicas_to_distinct_real_devices(tmp_path: Path) -> None:
    for name in ("ttyUSB0", "ttyUSB1"):
        (tmp_path / "dev").mkdir(exist_ok=True)
        (tmp_path / "dev" / name).touch()
    inner = generic.GenericBackend("example.com/serial", generic.Config(paths=["/dev/ttyUSB*"]), root=tmp_path)
    shared = SharedBackend(inner, 2)
    d = shared.scan()
    alloc = shared.container_allocation([d["ttyUSB1::1"], d["ttyUSB0::0"], d["ttyUSB1::0"]])
    assert [n.container_path for n in alloc.device_nodes] == ["/dev/ttyUSB0", "/dev/ttyUSB1"]


def test_unhealthy_device_makes_every_replica_unhealthy(tmp_path: Path) -> None:
    (tmp_path / "dev").mkdir()
    (tmp_path / "dev/ttyUSB0").touch()
    inner = generic.GenericBackend(
        "example.com/serial", generic.Config(paths=["/dev/ttyUSB*"], pollIntervalSeconds=0.01), root=tmp_path
    )
    shared = SharedBackend(inner, 2)
    assert all(dev.healthy for dev in shared.scan().values())
    (tmp_path / "dev/ttyUSB0").unlink()
    assert shared.wait_for_change(5.0)
    assert not any(dev.healthy for dev in shared.scan().values())
    shared.close()
    assert not shared.wait_for_change(5.0)  # closed: returns at once


def test_resettable_only_when_the_inner_backend_is() -> None:
    assert not isinstance(SharedBackend(sim(1), 2), Resettable)


# Reset through sharing (each real device once) is tested with the VE backend's reset command
# in test_ve.py::test_reset_through_sharing_resets_each_ve_once.


@pytest.mark.parametrize("bad", [0, -1, True, 2.5, "2"])
def test_bad_replica_count_is_a_config_error(bad: object) -> None:
    with pytest.raises(ConfigError, match="replicas"):
        SharedBackend(sim(1), bad)  # type: ignore[arg-type]


@given(st.from_regex(r"[a-z][a-z0-9:_-]{0,12}", fullmatch=True), st.integers(0, 10_000))
def test_replica_id_round_trips(device_id: str, n: int) -> None:
    assert device_id_of(replica_id(device_id, n)) == device_id


def test_device_ids_of_dedupes_in_natural_order() -> None:
    assert device_ids_of(["ve10::0", "ve2::1", "ve2::0", "plain"]) == ["plain", "ve2", "ve10"]
    assert device_id_of("ve0::x") == "ve0::x"
    assert device_id_of("::3") == "::3"
