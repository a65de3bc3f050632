"""Prometheus metrics of the device-plugin daemon, in a registry of its own.

A registry per daemon (not the process-global one) so tests and benchmarks can run several
daemons in one process and scrape each separately.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Mapping
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from kubeaccel.devices.model import Devices, Health

# Allocate is expected to take well under a millisecond; the buckets resolve that range.
ALLOCATE_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 1.0)


class Metrics:
    def __init__(self) -> None:
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
        self._http: tuple[WSGIServer, threading.Thread] | None = None

    def set_devices(self, resource: str, devices: Devices) -> None:
        counts: Mapping[Health, int] = {h: sum(1 for d in devices.values() if d.health is h) for h in Health}
        for health, n in counts.items():
            self.devices.labels(resource, health.value).set(n)

    def forget(self, resource: str) -> None:
        """Drop a resource's device gauges (it left the config)."""
        for health in Health:
            with contextlib.suppress(KeyError):
                self.devices.remove(resource, health.value)

    def serve(self, port: int, addr: str = "0.0.0.0") -> int:
        """Serve /metrics over HTTP; returns the bound port (useful with port 0)."""
        server, thread = start_http_server(port, addr=addr, registry=self.registry)
        self._http = (server, thread)
        return int(server.server_port)

    def close(self) -> None:
        if self._http is not None:
            server, thread = self._http
            server.shutdown()
            server.server_close()
            thread.join(timeout=5)
            self._http = None
