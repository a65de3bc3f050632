"""The simulated backend: devices, NUMA spread, state-file health/unplug, change signal, device nodes.

Matrix: no state file (all healthy, no change ever signalled); state file written in place and
replaced by rename (each change signalled within a few ms); Absent removes and replugs; a
malformed file keeps the last good state; deviceDir creates real files used as device nodes.
"""

from __future__ import annotations

import json
import os
import stat
import threading
import time
from pathlib import Path

import pytest

from kubeaccel.devices.backends.simulated import Config, create
from kubeaccel.devices.model import Health
from kubeaccel.errors import ConfigError


def _backend(tmp_path: Path, **keys: object):
    return create("example.com/sim", Config.model_validate(keys))


def test_devices_and_numa_blocks(tmp_path: Path) -> None:
    backend = _backend(tmp_path, count=4, numaNodes=2)
    devices = backend.scan()
    assert list(devices) == ["sim-0", "sim-1", "sim-2", "sim-3"]
    assert [d.index for d in devices.values()] == ["0", "1", "2", "3"]
    assert [d.numa_node for d in devices.values()] == [0, 0, 1, 1]
    assert all(d.health is Health.HEALTHY and d.nodes == () for d in devices.values())
    assert backend.container_allocation(list(devices.values())).envs == {}
    assert backend.resource_name == "example.com/sim"


def test_no_state_file_never_signals_change(tmp_path: Path) -> None:
    backend = _backend(tmp_path, count=2)
    start = time.monotonic()
    assert backend.wait_for_change(0.05) is False
    assert time.monotonic() - start >= 0.04


def _write(path: Path, states: dict[str, str]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(states))
    os.replace(tmp, path)


def test_state_file_health_absent_and_replug(tmp_path: Path) -> None:
    state = tmp_path / "state.json"
    backend = _backend(tmp_path, count=3, stateFile=str(state))
    assert len(backend.scan()) == 3
    _write(state, {"sim-1": "Unhealthy", "sim-2": "Absent"})
    assert backend.wait_for_change(1.0) is True
    devices = backend.scan()
    assert list(devices) == ["sim-0", "sim-1"]
    assert devices["sim-1"].health is Health.UNHEALTHY
    _write(state, {})
    assert backend.wait_for_change(1.0) is True
    assert backend.scan().healthy() == backend.scan() and len(backend.scan()) == 3
    state.unlink()
    assert backend.wait_for_change(1.0) is True
    assert len(backend.scan().healthy()) == 3


def test_change_is_signalled_within_a_few_ms(tmp_path: Path) -> None:
    state = tmp_path / "state.json"
    backend = _backend(tmp_path, count=2, stateFile=str(state))
    backend.scan()
    seen: list[float] = []

    def waiter() -> None:
        if backend.wait_for_change(2.0):
            seen.append(time.monotonic())

    thread = threading.Thread(target=waiter)
    thread.start()
    time.sleep(0.05)
    written = time.monotonic()
    state.write_text('{"sim-0": "Unhealthy"}')
    thread.join()
    assert seen and seen[0] - written < 0.05


def test_malformed_state_keeps_last_good(tmp_path: Path) -> None:
    state = tmp_path / "state.json"
    _write(state, {"sim-0": "Unhealthy"})
    backend = _backend(tmp_path, count=2, stateFile=str(state))
    assert backend.scan()["sim-0"].health is Health.UNHEALTHY
    state.write_text('{"sim-0": "Broken"}')
    assert backend.scan()["sim-0"].health is Health.UNHEALTHY
    assert backend.state_error is not None and "Broken" in backend.state_error
    state.write_text("[1, 2]")
    backend.scan()
    assert "JSON object" in (backend.state_error or "")
    _write(state, {})
    assert backend.scan()["sim-0"].health is Health.HEALTHY
    assert backend.state_error is None


def test_device_dir_creates_real_nodes(tmp_path: Path) -> None:
    backend = _backend(tmp_path, count=2, deviceDir=str(tmp_path / "dev"), idPrefix="acc")
    devices = backend.scan()
    assert list(devices) == ["acc-0", "acc-1"]
    node = devices["acc-1"].nodes[0]
    assert node.container_path == "/dev/acc-1"
    st = Path(node.host_path).lstat()
    if os.geteuid() == 0:
        # container runtimes accept only device nodes: a /dev/null twin
        assert stat.S_ISCHR(st.st_mode) and os.major(st.st_rdev) == 1 and os.minor(st.st_rdev) == 3
    else:
        assert stat.S_ISREG(st.st_mode)
    assert backend.container_allocation([devices["acc-1"]]).device_nodes == ()


def test_device_dir_replaces_a_plain_file_when_it_can(tmp_path: Path) -> None:
    (tmp_path / "dev").mkdir()
    (tmp_path / "dev" / "sim-0").write_text("")
    backend = _backend(tmp_path, count=1, deviceDir=str(tmp_path / "dev"))
    st = Path(backend.scan()["sim-0"].nodes[0].host_path).lstat()
    assert stat.S_ISCHR(st.st_mode) == (os.geteuid() == 0)


def test_close_wakes_waiter(tmp_path: Path) -> None:
    backend = _backend(tmp_path, count=1, stateFile=str(tmp_path / "s.json"))
    threading.Timer(0.05, backend.close).start()
    start = time.monotonic()
    assert backend.wait_for_change(5.0) is False
    assert time.monotonic() - start < 1.0


def test_unusable_device_dir_is_a_config_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(ConfigError, match="deviceDir") as info:
        _backend(tmp_path, count=1, deviceDir=str(blocker / "dev"))
    assert info.value.hint
