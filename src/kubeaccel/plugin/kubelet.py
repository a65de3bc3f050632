"""A kubelet stand-in: the kubelet's side of the device-plugin protocol, for the checker and tests.

It does what the device manager of kubelet v1.37.2 does (``pkg/kubelet/cm/devicemanager``; the
file and function are named where each behaviour comes from):

* ``Registration`` is served on ``kubelet.sock`` (``plugin/v1beta1/server.go``, ``Start``).
* ``Register`` (``server.go``, ``Register``) refuses an unsupported API version or a resource name
  that is not an extended resource name, then ``connectClient`` (``handler.go``) dials the endpoint,
  joined to the device-plugin directory, blocking for up to 10 s (``client.go``, ``dial``), and
  calls ``GetDevicePluginOptions`` (``manager.go``, ``PluginConnected``); any failure fails the
  ``Register`` call with a plain Go error, which the plugin sees as gRPC ``UNKNOWN``. Accepted
  registrations are handed to whoever waits in ``next_registration``; a later one for the same
  resource replaces the earlier one (``PluginConnected`` sets ``m.endpoints[resource]``).
* ``restart`` is a kubelet restart: the registration server stops (Go's listener removes
  ``kubelet.sock``), every socket in its directory is deleted (``manager.go``,
  ``CleanupPluginDirectory``: sockets only, directories and other files kept) and ``kubelet.sock``
  is served anew. A plugin must notice and register again: the kubelet never dials it on its own.

The plugin's endpoint is resolved in ``socket_dir``, the directory of ``kubelet.sock`` unless told
otherwise (a plugin whose own socket is fixed, such as NVIDIA's ``nvidia-gpu.sock`` in
``/var/lib/kubelet/device-plugins``, can be graded with ``kubelet.sock`` elsewhere).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
from pathlib import Path

import grpc

from kubeaccel.devices.naming import is_valid_resource_name
from kubeaccel.plugin._generated import api_pb2 as pb
from kubeaccel.plugin._generated import api_pb2_grpc as pb_grpc
from kubeaccel.plugin.server import API_VERSION, KUBELET_SOCKET

DIAL_TIMEOUT_S = 10.0  # client.go, dial: context.WithTimeout(ctx, 10*time.Second) with grpc.WithBlock()
_DIAL_RETRY_S = 0.05
# Each channel its own connections, as each grpc-go ClientConn of the kubelet has: grpc's shared
# subchannel pool would hand a new channel the backoff state (and stale "No such file") of an earlier
# channel to the same path, after a plugin restarted its server there.
CHANNEL_OPTIONS = [("grpc.use_local_subchannel_pool", 1)]


class _Registration(pb_grpc.RegistrationServicer):
    def __init__(self, stand_in: KubeletStandIn) -> None:
        self._stand_in = stand_in

    async def Register(  # noqa: N802 - fixed by the API
        self, request: pb.RegisterRequest, context: grpc.aio.ServicerContext[pb.RegisterRequest, pb.Empty]
    ) -> pb.Empty:
        stand_in = self._stand_in
        endpoint = stand_in.endpoint_path(request.endpoint)
        problem = registration_problem(request)
        if problem is None:
            problem = await _dial(endpoint, DIAL_TIMEOUT_S)
        if problem is None:
            try:
                async with grpc.aio.insecure_channel(f"unix://{endpoint}", options=CHANNEL_OPTIONS) as channel:
                    options = await pb_grpc.DevicePluginStub(channel).GetDevicePluginOptions(
                        pb.Empty(), timeout=DIAL_TIMEOUT_S, wait_for_ready=True)  # the blocking dial
            except grpc.aio.AioRpcError as exc:
                problem = f"failed to get device plugin options: {exc.code().name}: {exc.details()}"
            else:
                stand_in.options[request.endpoint] = options
        if problem is not None:
            stand_in.rejected.append((request, problem))
            await context.abort(grpc.StatusCode.UNKNOWN, problem)  # a plain Go error on the wire
        stand_in.received.put_nowait((time.monotonic(), request))
        return pb.Empty()


async def _dial(endpoint: Path, timeout: float) -> str | None:
    """None once the plugin's socket accepts a connection, else why it did not within ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        problem = await asyncio.to_thread(_connect_problem, endpoint)
        if problem is None or time.monotonic() >= deadline:
            return problem
        await asyncio.sleep(_DIAL_RETRY_S)


def _connect_problem(endpoint: Path) -> str | None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(2.0)
        try:
            probe.connect(str(endpoint))
        except OSError as exc:
            return f"cannot connect to the plugin at {endpoint}: {exc.strerror or exc}"
    return None


def registration_problem(request: pb.RegisterRequest) -> str | None:
    """Why the kubelet's ``Register`` refuses this request before dialling the plugin, or None."""
    if request.version != API_VERSION:
        return f"unsupported API version {request.version!r}; the kubelet speaks {API_VERSION}"
    if not is_valid_resource_name(request.resource_name):
        return f"invalid resource name {request.resource_name!r}: expected domain/name"
    return None


class KubeletStandIn:
    def __init__(self, socket_dir: Path, kubelet_socket: Path | None = None) -> None:
        self.socket_dir = socket_dir
        self.socket_path = kubelet_socket or socket_dir / KUBELET_SOCKET
        self.received: asyncio.Queue[tuple[float, pb.RegisterRequest]] = asyncio.Queue()
        self.rejected: list[tuple[pb.RegisterRequest, str]] = []
        self.options: dict[str, pb.DevicePluginOptions] = {}  # endpoint -> its GetDevicePluginOptions answer
        self._server: grpc.aio.Server | None = None

    def endpoint_path(self, endpoint: str) -> Path:
        """Go's ``filepath.Join(socketDir, endpoint)``: joined and cleaned, a leading slash kept inside."""
        return Path(os.path.normpath(f"{self.socket_dir}/{endpoint}"))

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
        for path in self.socket_path.parent.iterdir():
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
        return grpc.aio.insecure_channel(f"unix://{self.endpoint_path(endpoint)}", options=CHANNEL_OPTIONS)

    async def __aenter__(self) -> KubeletStandIn:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
