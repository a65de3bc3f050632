"""Prometheus metrics of the device-plugin daemon, in a registry of its own, served on the event loop.

A registry per daemon (not the process-global one) so tests and benchmarks can run several
daemons in one process and scrape each separately.

The endpoint is an asyncio server on the daemon's own loop, not prometheus-client's threaded
HTTP server (a thread per connection, no timeouts): at most ``MAX_CONNECTIONS`` at once (more are
closed at once), a request must arrive within ``REQUEST_TIMEOUT_S`` and fit in ``MAX_REQUEST_BYTES``,
and the answer is prometheus-client's own exposition (``generate_latest``). It binds to loopback
unless told otherwise (the DaemonSet passes ``--metrics-addr 0.0.0.0`` for the pod IP).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
from collections.abc import Callable, Collection, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kubeaccel.devices.model import Devices, Health
from kubeaccel.errors import ConfigError

if TYPE_CHECKING:
    from kubeaccel.plugin.podresources import AllocationRefresher

MAX_CONNECTIONS = 16
REQUEST_TIMEOUT_S = 5.0
MAX_REQUEST_BYTES = 8192
DEFAULT_ADDR = "127.0.0.1"

# Allocate is expected to take well under a millisecond; the buckets resolve that range.
ALLOCATE_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 1.0)


class _Null:
    """Stands in for a metric family and its children when metrics are off: every call is a no-op."""

    def labels(self, *values: str) -> _Null:
        return self

    def inc(self, amount: float = 1) -> None:
        pass

    def observe(self, amount: float) -> None:
        pass

    def set(self, value: float) -> None:
        pass

    def remove(self, *values: str) -> None:
        pass


class Metrics:
    """The daemon's metrics. ``enabled=False`` (no ``--metrics-port``) keeps prometheus-client out of
    the process entirely (about 4 MiB and its ssl import) and makes every update a no-op."""

    devices: Any
    allocations: Any
    allocate_seconds: Any
    registrations: Any
    allocated: Any
    device_health: Any

    def __init__(self, *, enabled: bool = True) -> None:
        self.enabled = enabled
        self._http: asyncio.Server | None = None
        self._open = 0
        self._allocated: AllocationRefresher | None = None
        self._health_series: dict[str, list[tuple[str, ...]]] = {}
        if not enabled:
            self.devices = self.allocations = self.allocate_seconds = self.registrations = _Null()
            self.allocated = self.device_health = _Null()
            return
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        self.devices = Gauge(
            "kubeaccel_plugin_devices",
            "Devices advertised to the kubelet, by resource and health.",
            ["resource", "health"],
            registry=self.registry,
        )
        self.allocations = Counter(
            "kubeaccel_plugin_allocations",
            "Container allocations answered, by resource and result (ok or error).",
            ["resource", "result"],
            registry=self.registry,
        )
        self.allocate_seconds = Histogram(
            "kubeaccel_plugin_allocate_duration_seconds",
            "Time to answer an Allocate call.",
            ["resource"],
            buckets=ALLOCATE_BUCKETS,
            registry=self.registry,
        )
        self.registrations = Counter(
            "kubeaccel_plugin_registrations",
            "Register calls to the kubelet, by resource and result (ok or error).",
            ["resource", "result"],
            registry=self.registry,
        )
        self.allocated = Gauge(
            "kubeaccel_device_allocated",
            "1 for each device of our resources that a container holds, as the kubelet's PodResources "
            "API reports it (read at scrape time; empty when that API is not there).",
            ["resource", "device", "namespace", "pod", "container"],
            registry=self.registry,
        )

        self.device_health = Gauge(
            "kubeaccel_device_health",
            "1 for each advertised device, labelled with its index, NUMA node (empty: none) and health "
            "(Healthy or Unhealthy): what `kubeaccel devices` shows per device.",
            ["resource", "device", "index", "numa", "health"],
            registry=self.registry,
        )

    def watch_allocations(self, socket: Path, resources: Callable[[], Collection[str]]) -> None:
        """Fill ``kubeaccel_device_allocated`` from the PodResources API at ``socket`` on each scrape."""
        if not self.enabled:
            return
        from kubeaccel.plugin.podresources import AllocationRefresher, PodResourcesReader

        self._allocated = AllocationRefresher(PodResourcesReader(socket), resources, self.allocated)

    def set_devices(self, resource: str, devices: Devices) -> None:
        if not self.enabled:
            return
        counts: Mapping[Health, int] = {h: sum(1 for d in devices.values() if d.health is h) for h in Health}
        for health, n in counts.items():
            self.devices.labels(resource, health.value).set(n)
        self._forget_health(resource)
        series: list[tuple[str, ...]] = [
            (resource, d.id, d.index, "" if d.numa_node is None else str(d.numa_node), d.health.value)
            for d in devices.values()
        ]
        for labels in series:
            self.device_health.labels(*labels).set(1)
        self._health_series[resource] = series

    def _forget_health(self, resource: str) -> None:
        for labels in self._health_series.pop(resource, []):
            with contextlib.suppress(KeyError):
                self.device_health.remove(*labels)

    def forget(self, resource: str) -> None:
        """Drop a resource's device gauges (it left the config)."""
        self._forget_health(resource)
        for health in Health:
            with contextlib.suppress(KeyError):
                self.devices.remove(resource, health.value)

    async def serve(self, port: int, addr: str = DEFAULT_ADDR) -> int:
        """Serve /metrics over HTTP on the running loop; returns the bound port (useful with port 0)."""
        assert self.enabled, "serve() needs Metrics(enabled=True)"
        try:
            server = await asyncio.start_server(self._handle, addr, port, limit=MAX_REQUEST_BYTES, backlog=64)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise ConfigError(
                    f"metrics port {port} on {addr} is already in use",
                    hint="pick a free --metrics-port, or stop what listens there",
                ) from None
            raise ConfigError(
                f"cannot serve metrics on {addr[:100]}:{port}: {exc.strerror or exc}",
                hint="--metrics-addr takes a local IP address such as 127.0.0.1 or 0.0.0.0",
            ) from None
        self._http = server
        return int(server.sockets[0].getsockname()[1])

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._open >= MAX_CONNECTIONS:
            writer.close()
            return
        self._open += 1
        try:
            async with asyncio.timeout(REQUEST_TIMEOUT_S):
                head = await reader.readuntil(b"\r\n\r\n")
                method, _, rest = head.partition(b" ")
                path = rest.split(b" ", 1)[0].split(b"?", 1)[0]
                if method not in (b"GET", b"HEAD"):
                    status, body, ctype = b"405 Method Not Allowed", b"only GET\n", b"text/plain"
                elif path not in (b"/metrics", b"/"):
                    status, body, ctype = b"404 Not Found", b"try /metrics\n", b"text/plain"
                else:
                    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

                    if self._allocated is not None:
                        await self._allocated.refresh()
                    status, body, ctype = b"200 OK", generate_latest(self.registry), CONTENT_TYPE_LATEST.encode()
                writer.write(
                    b"HTTP/1.1 " + status + b"\r\nContent-Type: " + ctype
                    + b"\r\nContent-Length: " + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n"
                    + (b"" if method == b"HEAD" else body)
                )
                await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            pass
        finally:
            self._open -= 1
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), 1.0)

    async def close(self) -> None:
        if self._allocated is not None:
            await self._allocated.close()
        if self._http is not None:
            self._http.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._http.wait_closed(), 1.0)
            self._http = None
