"""Prometheus metrics of the DRA daemon, in a registry of its own (several daemons per test process)."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Mapping
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from kubeaccel.dra.model import Pool

# A first prepare reads the claim from the API server and fsyncs two files: milliseconds, not microseconds.
CALL_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.devices = Gauge("kubeaccel_dra_devices", "Devices published, by resource and health.",
                             ["resource", "health"], registry=self.registry)
        self.claims = Counter("kubeaccel_dra_claims", "Claims answered, by call (prepare, unprepare) and result.",
                              ["call", "result"], registry=self.registry)
        self.call_seconds = Histogram("kubeaccel_dra_call_duration_seconds", "Time to answer a kubelet call.",
                                      ["call"], buckets=CALL_BUCKETS, registry=self.registry)
        self.prepared = Gauge("kubeaccel_dra_prepared_claims", "Claims prepared on this node (checkpointed).",
                              registry=self.registry)
        self.publishes = Counter("kubeaccel_dra_slice_publishes", "ResourceSlice publish passes, by result.",
                                 ["result"], registry=self.registry)
        self.cdi_errors = Counter("kubeaccel_dra_cdi_spec_errors",
                                  "CDI spec files the driver could not list, remove or write at start, by operation.",
                                  ["op"], registry=self.registry)
        self.publish_skipped = Counter("kubeaccel_dra_slice_changes_coalesced",
                                       "Inventory changes folded into a later ResourceSlice write (the floor).",
                                       registry=self.registry)
        self.device_health = Gauge(
            "kubeaccel_device_health",
            "1 for each published device, labelled with its index, NUMA node (empty: none) and health: the "
            "same family as the device plugin's, so one dashboard and one alert cover both.",
            ["resource", "device", "index", "numa", "health"], registry=self.registry)
        self._health_series: list[tuple[str, ...]] = []
        self._http: tuple[WSGIServer, threading.Thread] | None = None

    def set_pools(self, pools: Mapping[str, Pool]) -> None:
        for pool in pools.values():
            healthy = sum(1 for d in pool.devices.values() if d.healthy)
            self.devices.labels(pool.resource_name, "Healthy").set(healthy)
            self.devices.labels(pool.resource_name, "Unhealthy").set(len(pool.devices) - healthy)
        series: list[tuple[str, ...]] = [
            (pool.resource_name, name, d.index, "" if d.numa_node is None else str(d.numa_node), d.health.value)
            for pool in pools.values() for name, d in pool.devices.items()
        ]
        for labels in set(self._health_series) - set(series):
            with contextlib.suppress(KeyError):
                self.device_health.remove(*labels)
        for labels in series:
            self.device_health.labels(*labels).set(1)
        self._health_series = series

    def serve(self, port: int, addr: str = "0.0.0.0") -> int:
        """Serve /metrics over HTTP; returns the bound port (useful with port 0)."""
        server, thread = start_http_server(port, addr=addr, registry=self.registry)
        self._http = (server, thread)
        return int(server.server_port)

    def close(self) -> None:
        """Stop serving at once: ``shutdown`` alone waits for the server loop's 0.5 s poll, so a throwaway
        connection wakes the loop to see the request (a stop must take well under a second)."""
        if self._http is not None:
            server, thread = self._http
            stopper = threading.Thread(target=server.shutdown, name="metrics shutdown", daemon=True)
            stopper.start()
            host, port = server.server_address[:2]
            host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(str(host), str(host))
            with contextlib.suppress(OSError):
                socket.create_connection((host, int(port)), timeout=0.2).close()
            stopper.join(timeout=5)
            server.server_close()
            thread.join(timeout=5)
            self._http = None
