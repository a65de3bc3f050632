"""The few API calls ``up`` and ``status`` make: readiness, simulated nodes, and what must exist before pods run.

They go through the one door to the Kubernetes API (``kubeaccel.kube.client.Kube``), so failures arrive
as kubeaccel's typed API errors; ``/readyz`` is a plain HTTPS probe that needs no client at all.
"""

from __future__ import annotations

import contextlib
import http.client
import ssl
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lightkube.resources.coordination_v1 import Lease
from lightkube.resources.core_v1 import Node, ServiceAccount

from kubeaccel.cluster.layout import Layout
from kubeaccel.errors import AlreadyExistsError, KubeaccelError, UnavailableError
from kubeaccel.kube.client import Kube


def ssl_context(layout: Layout) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(layout.cert("ca")))
    context.load_cert_chain(str(layout.cert("admin")), str(layout.key("admin")))
    return context


def readyz(layout: Layout, port: int, context: ssl.SSLContext | None = None) -> bool:
    """True once the API server reports every readiness check passed."""
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=context or ssl_context(layout), timeout=2)
    try:
        conn.request("GET", "/readyz")
        return conn.getresponse().status == 200
    except (OSError, http.client.HTTPException):
        return False
    finally:
        conn.close()


def client(kubeconfig: Path) -> Kube:
    # the door's default timeouts (10 s) suit a loopback API server.
    return Kube.connect(kubeconfig=kubeconfig)


def ensure_nodes(api: Kube, manifests: list[dict[str, Any]]) -> None:
    for manifest in manifests:
        with contextlib.suppress(AlreadyExistsError):
            api.create(manifest)


def delete_node(api: Kube, name: str) -> None:
    api.delete(Node, name, missing_ok=True)


def node_ready(node: Node) -> bool:
    conditions = node.status.conditions if node.status and node.status.conditions else []
    return any(c.type == "Ready" and c.status == "True" for c in conditions)


def wait_until(
    what: str, check: Callable[[], bool], timeout: float, alive: Callable[[], None], interval: float = 0.1
) -> None:
    """Poll ``check`` until true; ``alive`` raises if a process it needs has died (fail fast, not at timeout)."""
    deadline = time.monotonic() + timeout
    while True:
        alive()
        try:
            if check():
                return
        except (KubeaccelError, OSError, http.client.HTTPException):
            pass  # not there yet (NotFound) or not answering yet (Unavailable): ask again
        if time.monotonic() > deadline:
            raise UnavailableError(
                f"timed out after {timeout:.0f} s waiting for {what}",
                hint="look at the logs in the state dir (logs/*.log); a slow or overloaded machine may need a retry",
            )
        time.sleep(interval)


def cluster_usable(api: Kube, nodes: list[str]) -> Callable[[], bool]:
    """Pods can be created (default ServiceAccount), scheduled (scheduler leader) and run (nodes Ready)."""

    def check() -> bool:
        api.get(ServiceAccount, "default", namespace="default")
        api.get(Lease, "kube-scheduler", namespace="kube-system")
        api.get(Lease, "kube-controller-manager", namespace="kube-system")
        return all(node_ready(api.get(Node, name)) for name in nodes)

    return check


def node_summary(api: Kube) -> list[tuple[str, bool, dict[str, str]]]:
    result = []
    for node in api.list(Node):
        name = node.metadata.name if node.metadata and node.metadata.name else "?"
        allocatable = dict(node.status.allocatable or {}) if node.status else {}
        result.append((name, node_ready(node), {k: str(v) for k, v in allocatable.items()}))
    return sorted(result)
