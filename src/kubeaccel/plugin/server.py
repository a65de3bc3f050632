"""The gRPC edge: serve one ``ResourcePlugin`` on a unix socket and register it with the kubelet.

Order matters and follows the kubelet's contract: the server is listening *before* ``Register``
is sent, because the kubelet dials the endpoint as soon as it accepts the registration.
"""

from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path

import grpc

from kubeaccel.errors import UnavailableError
from kubeaccel.plugin._generated import api_pb2 as pb
from kubeaccel.plugin._generated import api_pb2_grpc as pb_grpc
from kubeaccel.plugin.service import ResourcePlugin

API_VERSION = "v1beta1"
KUBELET_SOCKET = "kubelet.sock"
DEFAULT_SOCKET_DIR = Path("/var/lib/kubelet/device-plugins")
REGISTER_TIMEOUT_S = 5.0


def socket_name(resource_name: str) -> str:
    """``nec.com/ve`` -> ``kubeaccel-nec.com_ve.sock``: one socket per resource, stable across restarts."""
    return "kubeaccel-" + re.sub(r"[^A-Za-z0-9._-]", "_", resource_name) + ".sock"


class PluginServer:
    """One gRPC server for one resource, on ``socket_dir/socket_name(resource)``.

    Started and stopped once; a kubelet restart gets a fresh ``PluginServer`` for the same plugin.
    """

    def __init__(self, plugin: ResourcePlugin, socket_dir: Path) -> None:
        self.plugin = plugin
        self.socket_path = socket_dir / socket_name(plugin.resource_name)
        self._server: grpc.aio.Server | None = None
        self._identity: tuple[int, int] | None = None

    async def start(self) -> None:
        # A socket left by an earlier run would make bind fail; it is ours by name, so remove it.
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()
        server = grpc.aio.server()
        pb_grpc.add_DevicePluginServicer_to_server(self.plugin, server)
        server.add_insecure_port(f"unix://{self.socket_path}")
        await server.start()
        self._server = server
        self._identity = file_identity(self.socket_path)

    def socket_intact(self) -> bool:
        """False once our socket file was deleted or replaced (the kubelet's restart does that)."""
        return self._identity is not None and file_identity(self.socket_path) == self._identity

    async def stop(self, grace: float | None = None) -> None:
        if self._server is not None:
            await self._server.stop(grace)
            self._server = None
        # Remove the socket only if it is still ours: after a kubelet restart the path may
        # already belong to a new server.
        if self._identity is not None and file_identity(self.socket_path) == self._identity:
            with contextlib.suppress(FileNotFoundError):
                self.socket_path.unlink()
        self._identity = None


def file_identity(path: Path) -> tuple[int, int] | None:
    """Which file is at ``path``: a freed inode number may be reused at once, the ctime is not."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_ino, st.st_ctime_ns)


async def register(
    kubelet_socket: Path, endpoint: str, resource_name: str, options: pb.DevicePluginOptions,
    *, timeout: float = REGISTER_TIMEOUT_S,
) -> None:
    """Send ``Register`` to the kubelet; ``UnavailableError`` when it is absent or refuses."""
    request = pb.RegisterRequest(version=API_VERSION, endpoint=endpoint, resource_name=resource_name, options=options)
    try:
        async with grpc.aio.insecure_channel(f"unix://{kubelet_socket}") as channel:
            await pb_grpc.RegistrationStub(channel).Register(request, timeout=timeout, wait_for_ready=False)
    except grpc.aio.AioRpcError as exc:
        raise UnavailableError(
            f"cannot register {resource_name} with the kubelet at {kubelet_socket}: "
            f"{exc.code().name}: {exc.details()}",
            hint="is the kubelet running with the device-plugin directory at this path?",
        ) from None
