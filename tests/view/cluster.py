"""Helpers for the view's cluster tests: a plugin pod on a kwok node whose metrics the API server's pod
proxy really fetches (its podIP is set to this host's address, where a real daemon or an HTTP server
listens), and running ``kubeaccel`` in-process with its stdout."""

from __future__ import annotations

import contextlib
import io
import json
import subprocess
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from fixtures.cluster import LocalCluster, wait_for

from kubeaccel.cli import main


def host_ip() -> str:
    """This host's first global IPv4 address: the pod proxy refuses loopback and link-local targets."""
    out = subprocess.run(["ip", "-4", "-o", "addr", "show", "scope", "global"], capture_output=True, text=True,
                         check=True).stdout
    return out.split()[3].split("/")[0]


class MetricsServer:
    """A plain HTTP server on all addresses answering every GET with ``body`` (a plugin's /metrics)."""

    def __init__(self, body: bytes = b"") -> None:
        self.body = body
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(outer.body)))
                self.end_headers()
                with contextlib.suppress(OSError):
                    self.wfile.write(outer.body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("0.0.0.0", 0), Handler)
        self.port = int(self.server.server_address[1])
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def plugin_pod(cluster: LocalCluster, namespace: str, node: str, port: int, *, ip: str | None = None) -> str:
    """A pod labelled as the chart labels the plugin's, on ``node``, its ``metrics`` port ``port``, its IP
    this host's once kwok has made it Running (kwok sets a pod's status only while it has no IP)."""
    name = f"plugin-{uuid.uuid4().hex[:6]}"
    pod = {"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": name, "namespace": namespace,
                        "labels": {"app.kubernetes.io/component": "device-plugin"}},
           "spec": {"nodeName": node, "containers": [{"name": "device-plugin", "image": "kubeaccel/device-plugin",
                                                      "ports": [{"name": "metrics", "containerPort": port}]}]}}
    cluster.apply(json.dumps(pod))
    wait_for(f"pod {name} Running", lambda: cluster.kubectl("get", "pod", "-n", namespace, name, "-o",
                                                           "jsonpath={.status.phase}").stdout == "Running")
    address = ip or host_ip()
    cluster.kubectl("patch", "pod", "-n", namespace, name, "--subresource=status", "--type=merge", "-p",
                    json.dumps({"status": {"podIP": address, "podIPs": [{"ip": address}]}}))
    return name


def kubeaccel(*argv: str) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of ``kubeaccel ARGV`` run in this process."""
    out, err = io.StringIO(), io.StringIO()
    code = 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main(list(argv))
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
    return code, out.getvalue(), err.getvalue()


@contextlib.contextmanager
def serving(body: bytes) -> Iterator[MetricsServer]:
    server = MetricsServer(body)
    try:
        yield server
    finally:
        server.close()
