"""VE reset commands (issue 12 item 12): lenient output, no waiting on children, one clear line.

Matrix: a successful reset printing bytes that are not UTF-8; a failing one doing the same (the
error carries the replaced text); a reset that leaves a background child holding stdout returns
as soon as the command itself exits; a missing program and a timeout are KubeaccelErrors with a
hint; the plugin logs a failed reset as one line without a traceback.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from pathlib import Path

import grpc
import pytest
from fixtures.ve import FakeVETree

from kubeaccel.devices.backends import ve
from kubeaccel.devices.backends.simulated import Config, SimulatedBackend
from kubeaccel.devices.model import Device
from kubeaccel.errors import KubeaccelError


@pytest.fixture
def tree(tmp_path: Path) -> FakeVETree:
    t = FakeVETree(tmp_path)
    t.add(0, 0, numa=0)
    return t


def _backend(tree: FakeVETree, command: list[str], timeout: float = 5.0) -> ve.ResettableVEBackend:
    b = ve.create("nec.com/ve", ve.Config(resetCommand=command, resetTimeoutSeconds=timeout), root=tree.root)
    assert isinstance(b, ve.ResettableVEBackend)
    return b


def test_non_utf8_output_does_not_fail_a_reset(tree: FakeVETree) -> None:
    b = _backend(tree, ["sh", "-c", r"printf '\377\376 done\n'"])
    b.reset([b.scan()["veslot0"]])


def test_failed_reset_output_is_decoded_leniently(tree: FakeVETree) -> None:
    b = _backend(tree, ["sh", "-c", r"printf 'bad \377 card\n' >&2; exit 3"])
    with pytest.raises(KubeaccelError) as info:
        b.reset([b.scan()["veslot0"]])
    assert "exited with 3" in info.value.message and "bad \ufffd card" in info.value.message


def test_background_child_holding_stdout_does_not_delay_the_reset(tree: FakeVETree) -> None:
    b = _backend(tree, ["sh", "-c", "sleep 30 & echo restarted"], timeout=10)
    start = time.monotonic()
    b.reset([b.scan()["veslot0"]])
    assert time.monotonic() - start < 3.0


@pytest.mark.parametrize(
    ("command", "fragment"),
    [(["/nonexistent/reset"], "cannot run"), (["sleep", "5"], "did not finish within")],
)
def test_reset_mistakes_are_clear(tree: FakeVETree, command: list[str], fragment: str) -> None:
    b = _backend(tree, command, timeout=0.3)
    with pytest.raises(KubeaccelError) as info:
        b.reset([b.scan()["veslot0"]])
    assert fragment in info.value.message and info.value.hint


class _FailingReset(SimulatedBackend):
    def reset(self, devices: Sequence[Device]) -> None:
        raise KubeaccelError("resetting VE slot 0 failed: reset exited with 1: no card", hint="check it")


def test_failed_reset_is_one_log_line(caplog: pytest.LogCaptureFixture) -> None:
    from fixtures.plugin import short_socket_dir

    from kubeaccel.plugin._generated import api_pb2 as pb
    from kubeaccel.plugin._generated import api_pb2_grpc as pb_grpc
    from kubeaccel.plugin.kubelet import KubeletStandIn
    from kubeaccel.plugin.manager import Manager
    from kubeaccel.plugin.service import ResourcePlugin

    caplog.set_level(logging.INFO, logger="kubeaccel")

    async def main() -> None:
        socket_dir = short_socket_dir()
        manager = Manager(socket_dir)
        try:
            await manager.add(ResourcePlugin(_FailingReset("example.com/sim", Config(count=1))))
            async with KubeletStandIn(socket_dir) as kubelet:
                await manager.tick()
                _, request = await kubelet.next_registration(timeout=5)
                async with kubelet.plugin_channel(request.endpoint) as channel:
                    with pytest.raises(grpc.aio.AioRpcError) as info:
                        await pb_grpc.DevicePluginStub(channel).PreStartContainer(
                            pb.PreStartContainerRequest(devices_ids=["sim-0"]), timeout=5)
                    assert "no card" in (info.value.details() or "")
        finally:
            await manager.close()
            socket_dir.rmdir()

    asyncio.run(main())
    failed = [r for r in caplog.records if "no card" in r.getMessage()]
    assert len(failed) == 1 and failed[0].exc_info is None
