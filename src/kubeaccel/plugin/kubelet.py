"""A kubelet stand-in: the kubelet's side of the device-plugin protocol, for the checker and tests.

It serves ``Registration`` on ``<dir>/kubelet.sock`` exactly where the kubelet would, checks
each ``RegisterRequest`` the way the kubelet does (API version, resource name, endpoint inside
the directory, and an endpoint it can connect to), and hands accepted ones to whoever waits in
``next_registration``. It then talks
to a plugin as the kubelet's device manager does, over the plugin's own socket. ``restart``
behaves like a kubelet restart: every socket in the directory is deleted and ``kubelet.sock``
is served anew.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from pathlib import Path

import grpc

from kubeaccel.devices.naming import is_valid_resource_name
from kubeaccel.plugin._generated import api_pb2 as pb
from kubeaccel.plugin._generated import api_pb2_grpc as pb_grpc
from kubeaccel.plugin.server import API_VERSION, KUBELET_SOCKET


class _Registration(pb_grpc.RegistrationServicer):
    def __init__(self, stand_in: KubeletStandIn) -> None:
        self._stand_in = stand_in

    async def Register(  # noqa: N802 - fixed by the API
        self, request: pb.RegisterRequest, context: grpc.aio.ServicerContext[pb.RegisterRequest, pb.Empty]
    ) -> pb.Empty:
        problem = registration_problem(request)
        if problem:
            self._stand_in.rejected.append((request, problem))
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, problem)
        # The kubelet dials the plugin's endpoint before it answers Register and fails the call when it
        # cannot: a plugin that registers an endpoint it does not (or no longer) serve must try again.
        unreachable = await asyncio.to_thread(_dial_problem, self._stand_in.socket_dir / request.endpoint)
        if unreachable:
            self._stand_in.rejected.append((request, unreachable))
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, unreachable)
        self._stand_in.received.put_nowait((time.monotonic(), request))
        return pb.Empty()


def _dial_problem(endpoint: Path) -> str | None:
    """Why a connection to the plugin's socket fails, or None."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(2.0)
        try:
            probe.connect(str(endpoint))
        except OSError as exc:
            return f"cannot connect to the plugin at {endpoint.name}: {exc.strerror or exc}"
    return None


def registration_problem(request: pb.RegisterRequest) -> str | None:
    """Why the kubelet would refuse this registration, or None."""
    if request.version != API_VERSION:
        return f"unsupported API version {request.version!r}; the kubelet speaks {API_VERSION}"
    if not is_valid_resource_name(request.resource_name):
        return f"invalid resource name {request.resource_name!r}: expected domain/name"
    if not request.endpoint or "/" in request.endpoint or request.endpoint == KUBELET_SOCKET:
        return f"invalid endpoint {request.endpoint!r}: expected a socket file name in the device-plugin directory"
    return None


class KubeletStandIn:
    def __init__(self, socket_dir: Path) -> None:
        self.socket_dir = socket_dir
        self.socket_path = socket_dir / KUBELET_SOCKET
        self.received: asyncio.Queue[tuple[float, pb.RegisterRequest]] = asyncio.Queue()
        self.rejected: list[tuple[pb.RegisterRequest, str]] = []
        self._server: grpc.aio.Server | None = None

    async def start(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()
        server = grpc.aio.server()
        pb_grpc.add_RegistrationServicer_to_server(_Registration(self), server)
        server.add_insecure_port(f"unix://{self.socket_path}")
        await server.start()
        self._server = server

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.stop(0)
            self._server = None
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()

    async def restart(self) -> float:
        """Do what a restarting kubelet does; returns the monotonic time it served again."""
        await self.stop()
        for path in self.socket_dir.iterdir():
            if path.is_socket():
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
        self.received = asyncio.Queue()
        await self.start()
        return time.monotonic()

    async def next_registration(self, timeout: float) -> tuple[float, pb.RegisterRequest]:
        """The next accepted ``RegisterRequest`` and the monotonic time it arrived."""
        return await asyncio.wait_for(self.received.get(), timeout)

    def plugin_channel(self, endpoint: str) -> grpc.aio.Channel:
        return grpc.aio.insecure_channel(f"unix://{self.socket_dir / endpoint}")

    async def __aenter__(self) -> KubeletStandIn:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
