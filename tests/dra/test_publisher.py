"""The publisher's rules against an in-memory API (the cluster tests use the real one).

What a real 1.37 API server cannot show without restarting it with other gates: an API server that
drops device taints (``DRADeviceTaints`` off) gets unhealthy devices left out instead; and one that
fails at first gets the slices once it answers, with generations above what was there.
"""

from __future__ import annotations

import asyncio
import copy
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from dra.node import DRIVER, NODE, SIM

from kubeaccel.devices.backends.simulated import Config, create
from kubeaccel.dra.inventory import Inventory
from kubeaccel.dra.publisher import Publisher, SliceApi
from kubeaccel.errors import UnavailableError


class MemoryApi:
    def __init__(self, *, drop_taints: bool = False, failures: int = 0) -> None:
        self.slices: dict[str, dict[str, Any]] = {}
        self.drop_taints = drop_taints
        self.failures = failures
        self.applied = 0

    def _maybe_fail(self) -> None:
        if self.failures:
            self.failures -= 1
            raise UnavailableError("cannot reach the Kubernetes API server")

    def list(self) -> list[dict[str, Any]]:
        self._maybe_fail()
        return [copy.deepcopy(s) for s in self.slices.values()]

    def apply(self, manifest: Mapping[str, Any]) -> dict[str, Any]:
        self._maybe_fail()
        stored = copy.deepcopy(dict(manifest))
        if self.drop_taints:
            for device in stored["spec"]["devices"]:
                device.pop("taints", None)
        self.slices[stored["metadata"]["name"]] = stored
        self.applied += 1
        return copy.deepcopy(stored)

    def delete(self, name: str) -> None:
        self._maybe_fail()
        self.slices.pop(name, None)

    def slice_api(self) -> SliceApi:
        return SliceApi(self.list, self.apply, self.delete)


def _run(api: MemoryApi, tmp_path: Path, states: dict[str, str], check) -> None:
    state_file = tmp_path / "state.json"
    state_file.write_text(json.dumps(states))

    async def main() -> None:
        backend = create(SIM, Config(count=3, stateFile=state_file))
        inventory = Inventory(NODE, [backend])
        publisher = Publisher(DRIVER, inventory, api.slice_api())
        stop = asyncio.Event()
        task = asyncio.create_task(publisher.run(stop))
        for _ in range(200):
            await asyncio.sleep(0.02)
            if publisher.published.is_set():
                break
        stop.set()
        await task
        inventory.close()
        check(publisher)

    asyncio.run(main())


def test_dropped_taints_leave_unhealthy_devices_out(tmp_path: Path) -> None:
    api = MemoryApi(drop_taints=True)

    def check(publisher: Publisher) -> None:
        assert publisher.taints is False
        (stored,) = api.slices.values()
        assert [d["name"] for d in stored["spec"]["devices"]] == ["sim-0", "sim-2"]

    _run(api, tmp_path, {"sim-1": "Unhealthy"}, check)


def test_taints_kept_when_the_api_server_keeps_them(tmp_path: Path) -> None:
    api = MemoryApi()

    def check(publisher: Publisher) -> None:
        (stored,) = api.slices.values()
        assert [bool(d.get("taints")) for d in stored["spec"]["devices"]] == [False, True, False]

    _run(api, tmp_path, {"sim-1": "Unhealthy"}, check)


def test_an_api_server_that_fails_at_first_gets_the_slices_and_stale_ones_go(tmp_path: Path) -> None:
    api = MemoryApi(failures=3)
    api.slices["old"] = {"metadata": {"name": "old"}, "spec": {"pool": {"name": "x", "generation": 9}, "devices": []}}

    def check(publisher: Publisher) -> None:
        assert publisher.errors == 3
        (stored,) = api.slices.values()
        assert stored["metadata"]["name"] != "old"
        assert stored["spec"]["pool"]["generation"] == 10

    _run(api, tmp_path, {}, check)


class FailingApplies(MemoryApi):
    """Lists fine, then refuses the first ``apply_failures`` writes (an outage mid-pass)."""

    def __init__(self, apply_failures: int) -> None:
        super().__init__()
        self.apply_failures = apply_failures

    def apply(self, manifest: Mapping[str, Any]) -> dict[str, Any]:
        if self.apply_failures:
            self.apply_failures -= 1
            raise UnavailableError("cannot reach the Kubernetes API server")
        return super().apply(manifest)


def test_failed_writes_do_not_move_the_generation(tmp_path: Path) -> None:
    api = FailingApplies(apply_failures=4)
    api.slices["old"] = {"metadata": {"name": "old"}, "spec": {"pool": {"name": "x", "generation": 9}, "devices": []}}

    def check(publisher: Publisher) -> None:
        assert publisher.errors == 4
        (stored,) = api.slices.values()
        assert stored["spec"]["pool"]["generation"] == 10  # four failed passes, one written: 9 + 1
        assert publisher.generation == 10

    _run(api, tmp_path, {}, check)


def test_a_flapping_device_is_written_at_most_once_per_interval_and_ends_in_the_latest_state(tmp_path: Path) -> None:
    """A device flips every 10 ms for 1.2 s: the publisher writes at most one pass per ``min_interval_s``
    (however fast or slow this machine is: the bound is counted over the time the run really took),
    and the API server ends with the last state, whatever it was when the flapping stopped."""
    import threading
    import time

    api = MemoryApi()
    state_file = tmp_path / "state.json"
    state_file.write_text("{}")
    interval = 0.1

    def write(states: dict[str, str]) -> None:
        tmp = tmp_path / "state.tmp"
        tmp.write_text(json.dumps(states))
        tmp.replace(state_file)

    async def main() -> None:
        backend = create(SIM, Config(count=3, stateFile=state_file))
        inventory = Inventory(NODE, [backend])
        inventory.start()
        publisher = Publisher(DRIVER, inventory, api.slice_api())
        publisher.min_interval_s = interval
        stop = asyncio.Event()
        begin = time.monotonic()
        task = asyncio.create_task(publisher.run(stop))

        def flap() -> None:
            for i in range(120):
                write({"sim-1": "Unhealthy"} if i % 2 == 0 else {})
                time.sleep(0.01)
            write({"sim-2": "Unhealthy"})  # the last word

        flapper = threading.Thread(target=flap)
        flapper.start()
        while flapper.is_alive():
            await asyncio.sleep(0.02)
        flapper.join()
        for _ in range(500):  # until the last state is written
            stored = [bool(d.get("taints")) for s in api.slices.values() for d in s["spec"]["devices"]]
            if stored == [False, False, True] and publisher.published.is_set():
                break
            await asyncio.sleep(0.02)
        elapsed = time.monotonic() - begin
        stop.set()
        await task
        inventory.close()
        assert stored == [False, False, True]  # the latest state, not one from the middle of the flapping
        assert inventory.version > 20  # it did flap (the watch saw many of the 121 changes)
        assert api.applied <= elapsed / interval + 1, (api.applied, elapsed)
        assert api.applied == publisher.passes  # one pool: one write per pass
        (slice_,) = api.slices.values()
        assert slice_["spec"]["pool"]["generation"] == api.applied == publisher.generation

    asyncio.run(main())
