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
