"""Prometheus metrics of the DRA daemon, in a registry of its own (several daemons per test process)."""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
from collections.abc import Iterable, Mapping
from typing import Any
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from kubeaccel.dra.checkpoint import PreparedClaim
from kubeaccel.dra.model import Pool

log = logging.getLogger(__name__)

# A first prepare reads the claim from the API server and fsyncs two files: milliseconds, not microseconds.
CALL_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0)

# ``kubeaccel_device_allocated`` is bounded as the device plugin's is: label values cut, series capped.
MAX_LABEL_CHARS = 253  # a Kubernetes name is at most 253 characters; more is not one
MAX_PODS_PER_CLAIM = 32  # a claim shared by more pods (status.reservedFor) lists the first 32
MAX_SERIES = 10_000
APP_LABEL = "spark-app-selector"

Series = tuple[str, str, str, str, str, str]  # resource, device, namespace, pod, container, app


def _label(value: str) -> str:
    return value if len(value) <= MAX_LABEL_CHARS else value[:MAX_LABEL_CHARS]


def holders(claim: Mapping[str, Any]) -> tuple[tuple[str, ...], str]:
    """The pods a claim is reserved for and its Spark app (its own ``spark-app-selector`` label), read from the
    ResourceClaim the driver fetched to prepare it: no other API call. Anything not of the expected shape is
    ignored; names are cut to 253 characters and at most ``MAX_PODS_PER_CLAIM`` pods are kept."""
    status = claim.get("status")
    reserved = status.get("reservedFor") if isinstance(status, Mapping) else None
    pods: list[str] = []
    for ref in reserved if isinstance(reserved, list) else []:
        if len(pods) >= MAX_PODS_PER_CLAIM:
            break
        if isinstance(ref, Mapping) and ref.get("resource") == "pods" and ref.get("apiGroup", "") in ("", None):
            name = ref.get("name")
            if isinstance(name, str) and name and _label(name) not in pods:
                pods.append(_label(name))
    meta = claim.get("metadata")
    labels = meta.get("labels") if isinstance(meta, Mapping) else None
    app = labels.get(APP_LABEL) if isinstance(labels, Mapping) else None
    return tuple(pods), _label(app) if isinstance(app, str) else ""


def allocated_series(claims: Iterable[PreparedClaim], resources: Mapping[str, str]) -> list[Series]:
    """One series per prepared device and holder pod (a claim reserved for no pod yet: one with ``pod`` empty);
    ``resources`` maps a pool to its resource (a pool no longer configured: the pool's name). At most
    ``MAX_SERIES``, in the order given."""
    out: list[Series] = []
    for claim in claims:
        for device in claim.devices:
            for pod in claim.pods or ("",):
                if len(out) >= MAX_SERIES:
                    return out
                out.append((_label(resources.get(device.pool, device.pool)), _label(device.device),
                            _label(claim.namespace), _label(pod), "", _label(claim.app)))
    return out


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
        self.allocated = Gauge(
            "kubeaccel_device_allocated",
            "1 for each device of a claim this driver prepared, per pod the claim is reserved for: the same "
            "family as the device plugin's (container is empty: a claim is the pod's; app is the claim's own "
            "spark-app-selector label, if any). From the checkpoint, so a restart keeps it.",
            ["resource", "device", "namespace", "pod", "container", "app"], registry=self.registry)
        self._health_series: list[tuple[str, ...]] = []
        self._allocated_series: set[Series] = set()
        self._truncated = False
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

    def set_allocated(self, claims: Iterable[PreparedClaim], resources: Mapping[str, str]) -> None:
        """Make ``kubeaccel_device_allocated`` the prepared claims' series: the stale ones removed, the new ones
        set (never cleared as a whole, so a scrape meanwhile sees no gap)."""
        claims = list(claims)
        series = allocated_series(claims, resources)
        total = sum(len(c.devices) * max(1, len(c.pods)) for c in claims)
        truncated = total > len(series)
        if truncated and not self._truncated:
            log.warning("kubeaccel_device_allocated: series beyond the first %d are left out", MAX_SERIES)
        self._truncated = truncated
        wanted = set(series)
        for labels in self._allocated_series - wanted:
            with contextlib.suppress(KeyError):
                self.allocated.remove(*labels)
        for labels in wanted - self._allocated_series:
            self.allocated.labels(*labels).set(1)
        self._allocated_series = wanted

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
