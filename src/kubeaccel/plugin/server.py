"""The gRPC edge: serve one ``ResourcePlugin`` on a unix socket and register it with the kubelet.

Order matters and follows the kubelet's contract: the server is listening *before* ``Register``
is sent, because the kubelet dials the endpoint as soon as it accepts the registration.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import threading
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc

from kubeaccel import sockets
from kubeaccel.errors import ConfigError, UnavailableError
from kubeaccel.paths import file_identity
from kubeaccel.plugin._generated import api_pb2 as pb
from kubeaccel.plugin._generated import api_pb2_grpc as pb_grpc
from kubeaccel.plugin.paths import DEFAULT_SOCKET_DIR, KUBELET_SOCKET
from kubeaccel.plugin.service import ResourcePlugin

API_VERSION = "v1beta1"
__all__ = ["API_VERSION", "DEFAULT_SOCKET_DIR", "KUBELET_SOCKET", "PluginServer", "register", "socket_name"]
REGISTER_TIMEOUT_S = 5.0
# Only the kubelet (root) talks to our socket; set explicitly, whatever the umask.
SOCKET_MODE = 0o600
# Worker threads per resource server: the kubelet holds one ListAndWatch stream and makes one
# call at a time; the rest is headroom for `plugin check` and monitoring.
MAX_WORKERS = 8
STOP_WAIT_S = 0.5
# sockaddr_un.sun_path holds 108 bytes including the terminating NUL.
MAX_SOCKET_PATH = 107


def socket_name(resource_name: str) -> str:
    """``nec.com/ve`` -> ``kubeaccel-nec.com_ve.sock``: one socket per resource, stable across restarts."""
    return "kubeaccel-" + re.sub(r"[^A-Za-z0-9._-]", "_", resource_name) + ".sock"


def check_socket_path(socket_dir: Path, resource_name: str) -> Path:
    """Our socket path for a resource; ``ConfigError`` when it does not fit in a unix socket address."""
    path = socket_dir / socket_name(resource_name)
    size = len(os.fsencode(path))
    if size > MAX_SOCKET_PATH:
        raise ConfigError(
            f"socket path {str(path)[:200]} is {size} bytes, over the {MAX_SOCKET_PATH}-byte limit of unix sockets",
            hint=f"use a shorter --socket-dir or resource name (the name may take at most "
            f"{MAX_SOCKET_PATH - len(os.fsencode(socket_dir)) - len('/kubeaccel-.sock')} bytes here)",
        )
    return path


def claim_socket_path(path: Path) -> None:
    """Make ``path`` free for our server (``kubeaccel.sockets.claim``), or explain why it is not ours."""
    sockets.claim(
        path,
        busy_hint="is a second kubeaccel plugin running with the same config? stop it first "
        "(two daemons would take over each other's socket)",
        elsewhere_hint="use another --socket-dir",
    )


def _serialize(message: object) -> bytes:
    # ListAndWatch yields pre-serialized bytes (one encoding per snapshot, not per stream).
    return message if isinstance(message, bytes) else message.SerializeToString()  # type: ignore[attr-defined]


def _handlers(plugin: ResourcePlugin) -> grpc.GenericRpcHandler[Any, Any]:
    """The DevicePlugin service's method table: as generated, except the bytes-aware serializer."""
    unary, stream = grpc.unary_unary_rpc_method_handler, grpc.unary_stream_rpc_method_handler
    return grpc.method_handlers_generic_handler(
        "v1beta1.DevicePlugin",
        {
            "GetDevicePluginOptions": unary(plugin.GetDevicePluginOptions, pb.Empty.FromString, _serialize),
            "ListAndWatch": stream(plugin.ListAndWatch, pb.Empty.FromString, _serialize),
            "GetPreferredAllocation": unary(
                plugin.GetPreferredAllocation, pb.PreferredAllocationRequest.FromString, _serialize
            ),
            "Allocate": unary(plugin.Allocate, pb.AllocateRequest.FromString, _serialize),
            "PreStartContainer": unary(plugin.PreStartContainer, pb.PreStartContainerRequest.FromString, _serialize),
        },
    )


class PluginServer:
    """One gRPC server for one resource, on ``socket_dir/socket_name(resource)``.

    Started and stopped once; a kubelet restart gets a fresh ``PluginServer`` for the same plugin.
    """

    def __init__(self, plugin: ResourcePlugin, socket_dir: Path) -> None:
        self.plugin = plugin
        self.socket_path = socket_dir / socket_name(plugin.resource_name)
        self._server: grpc.Server | None = None
        self._identity: tuple[int, int] | None = None

    async def start(self) -> None:
        claim_socket_path(self.socket_path)
        # The synchronous server: faster per call than grpc.aio (see service.py). Every open
        # ListAndWatch holds a worker; threads are made only when needed.
        server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=MAX_WORKERS, thread_name_prefix=f"grpc {self.socket_path.name}")
        )
        server.add_generic_rpc_handlers((_handlers(self.plugin),))
        # The socket is created by bind (in add_insecure_port); a tight umask keeps it private from
        # the start, the chmod makes the mode explicit.
        old_umask = os.umask(0o177)
        try:
            if not server.add_insecure_port(f"unix://{self.socket_path}"):
                raise ConfigError(f"cannot listen on {self.socket_path}", hint="check the socket directory")
        except RuntimeError as exc:
            raise ConfigError(f"cannot listen on {self.socket_path}: {exc}", hint="check the socket directory") \
                from None
        finally:
            os.umask(old_umask)
        server.start()
        # Gone already (its directory removed under us): supervision notices and starts anew.
        with contextlib.suppress(FileNotFoundError):
            os.chmod(self.socket_path, SOCKET_MODE)
        self._server = server
        self._identity = file_identity(self.socket_path)

    def socket_intact(self) -> bool:
        """False once our socket file was deleted or replaced (the kubelet's restart does that)."""
        return self._identity is not None and file_identity(self.socket_path) == self._identity

    async def stop(self, grace: float | None = None) -> None:
        if self._server is not None:
            done = self._server.stop(grace)  # cancels every RPC; streams end through their callbacks
            self._server = None
            await asyncio.to_thread(done.wait, STOP_WAIT_S)
        # Remove the socket only if it is still ours: after a kubelet restart the path may
        # already belong to a new server.
        if self._identity is not None and file_identity(self.socket_path) == self._identity:
            with contextlib.suppress(FileNotFoundError):
                self.socket_path.unlink()
        self._identity = None


async def register(
    kubelet_socket: Path, endpoint: str, resource_name: str, options: pb.DevicePluginOptions,
    *, timeout: float = REGISTER_TIMEOUT_S,
) -> None:
    """Send ``Register`` to the kubelet; ``UnavailableError`` when it is absent or refuses.

    The call goes through grpc's synchronous client in a worker thread, not grpc.aio: once grpc.aio
    runs in a process, grpc polls for it beside the synchronous server, and on a 16-CPU GPU node
    that added about 0.05 ms to every Allocate of the synchronous server (bench/gpu.py's
    ``floor-aio-client``). The daemon's event loop waits on the thread.
    """
    request = pb.RegisterRequest(version=API_VERSION, endpoint=endpoint, resource_name=resource_name, options=options)
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()
    channel = grpc.insecure_channel(f"unix://{kubelet_socket}")

    def settle(error: BaseException | None) -> None:
        if done.done():
            return
        if error is None:
            done.set_result(None)
        else:
            done.set_exception(error)

    def call() -> None:
        error: BaseException | None = None
        try:
            pb_grpc.RegistrationStub(channel).Register(request, timeout=timeout, wait_for_ready=False)
        except grpc.RpcError as exc:
            code, details = exc.code(), exc.details()
            error = UnavailableError(
                f"cannot register {resource_name} with the kubelet at {kubelet_socket}: {code.name}: {details}",
                hint="is the kubelet running with the device-plugin directory at this path?",
            )
        except BaseException as exc:
            error = exc
        with contextlib.suppress(RuntimeError):  # the loop closed: nobody waits any more
            loop.call_soon_threadsafe(settle, error)

    # A daemon thread, not the loop's executor: a kubelet that never answers must not hold up the
    # process's exit (the executor's threads are joined at exit); closing the channel ends the call.
    threading.Thread(target=call, name=f"register {resource_name}", daemon=True).start()
    try:
        await done
    finally:
        channel.close()
