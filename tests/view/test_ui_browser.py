"""``kubeaccel ui`` in a real headless Chromium (Debian's), on the real local control plane.

The page reads what ``kubeaccel devices`` reads: plugin pods on kwok nodes whose metrics the API server's
pod proxy fetches from an HTTP server here (see view.cluster). Matrix: first render; a device turning
unhealthy changes its cell within 2 s; an app's executors appear as they start; server strings with
markup are shown as text, never run; the grid moves with the arrow keys and says each state in words.
Screenshots are kept under tmp/artefacts/view/. The server's guards (Host check, read-only, port in
use) are checked over plain HTTP.
"""

from __future__ import annotations

import http.client
import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fixtures.cluster import LocalCluster
from view.cdp import Browser
from view.cluster import MetricsServer, kubeaccel, plugin_pod

from kubeaccel.kube.client import Kube
from kubeaccel.view.cli import live_sources, page_reader
from kubeaccel.view.readers import start_watches
from kubeaccel.view.server import UiServer, asset

pytestmark = pytest.mark.cluster

MARKUP = '<img src=x onerror="window.__pwned=1">'


def _health(device: str, health: str, holder: str = "", namespace: str = "") -> str:
    line = (f'kubeaccel_device_health{{resource="ui.test/acc",device="{device}",index="{device[-1]}",numa="0",'
            f'health="{health}"}} 1\n')
    if holder:
        escaped = holder.replace("\\", "\\\\").replace('"', '\\"')
        line += (f'kubeaccel_device_allocated{{resource="ui.test/acc",device="{device}",namespace="{namespace}",'
                 f'pod="{escaped}",container="c"}} 1\n')
    return line


@pytest.fixture(scope="module")
def ui_cluster(cluster: LocalCluster) -> Iterator[tuple[LocalCluster, str, MetricsServer]]:
    namespace = cluster.create_namespace("ui")
    metrics = MetricsServer((_health("acc0", "Healthy") + _health("acc1", "Healthy", MARKUP, namespace)).encode())
    plugin_pod(cluster, namespace, cluster.nodes[0], metrics.port)
    cluster.kubectl("label", "namespace", namespace, "kubeaccel.io/tenant=team-ui")
    cluster.apply(json.dumps({"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "q"},
                              "spec": {"hard": {"requests.nec.com/ve": "4", "pods": "20"}}}), namespace)
    try:
        yield cluster, namespace, metrics
    finally:
        metrics.close()
        cluster.kubectl("delete", "namespace", namespace, "--wait=false", check=False)


@pytest.fixture(scope="module")
def ui(ui_cluster: tuple[LocalCluster, str, MetricsServer]) -> Iterator[UiServer]:
    """As `kubeaccel ui` runs it: full reads each interval, watch events applied in between."""
    kube = Kube.connect(kubeconfig=ui_cluster[0].kubeconfig)
    live = live_sources(kube)
    server = UiServer(live.update, port=0, interval=0.5, render=live.render,
                      watch=lambda changed: start_watches(kube, changed, on_event=live.event))
    server.start()
    yield server
    server.stop()
    kube.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    b = Browser()
    yield b
    b.close()


def _cell(device: str) -> str:
    return f'document.querySelector(\'td.device[data-device="{device}"]\')'


def test_first_render_and_an_unhealthy_device_within_2_s(
    ui: UiServer, ui_cluster: tuple[LocalCluster, str, MetricsServer], browser: Browser
) -> None:
    _, namespace, metrics = ui_cluster
    started = time.monotonic()
    browser.goto(ui.url)
    browser.wait(f"{_cell('acc0')} !== null", timeout=10)
    first_render = time.monotonic() - started
    assert browser.evaluate(f"{_cell('acc0')}.dataset.state") == "free"
    assert browser.evaluate(f"{_cell('acc1')}.dataset.state") == "held"
    assert browser.evaluate(f"{_cell('acc1')}.style.borderLeftStyle") == "solid"  # coloured by its holder too
    assert "free" in browser.evaluate(f"{_cell('acc0')}.getAttribute('aria-label')")  # the colour, in words
    browser.screenshot("01-first-render")
    metrics.body = (_health("acc0", "Unhealthy") + _health("acc1", "Healthy", MARKUP, namespace)).encode()
    took = browser.wait(f"{_cell('acc0')}.dataset.health === 'Unhealthy'", timeout=5)
    browser.screenshot("02-acc0-unhealthy")
    assert took <= 2.0, f"the cell changed after {took:.2f} s"
    assert "Unhealthy" in browser.evaluate(f"{_cell('acc0')}.textContent")
    print(f"first render {first_render:.2f} s; unhealthy shown after {took:.2f} s")


def test_server_strings_are_shown_as_text_never_run(ui: UiServer, browser: Browser) -> None:
    browser.goto(ui.url)
    browser.wait(f"{_cell('acc1')} !== null", timeout=10)
    assert MARKUP in browser.evaluate(f"{_cell('acc1')}.textContent")
    assert browser.evaluate("document.querySelectorAll('#grid img').length") == 0
    assert browser.evaluate("window.__pwned === undefined")


def test_executors_appear_as_they_start(
    ui: UiServer, ui_cluster: tuple[LocalCluster, str, MetricsServer], browser: Browser
) -> None:
    cluster, namespace, _ = ui_cluster
    browser.goto(ui.url)
    browser.wait("document.body.dataset.rendered > 0", timeout=10)

    def pod(name: str, role: str, node: str | None) -> None:
        spec: dict[str, object] = {"containers": [{"name": "c", "image": "spark"}]}
        if node:
            spec["nodeName"] = node
        cluster.apply(json.dumps({"apiVersion": "v1", "kind": "Pod", "metadata": {
            "name": name, "namespace": namespace, "labels": {"spark-app-selector": "spark-ui", "spark-role": role,
                                                             "spark-app-name": "ui-pi"}}, "spec": spec}))

    pod("ui-driver", "driver", cluster.nodes[1])
    app = "document.querySelector('table[data-app=\"spark-ui\"]')"
    browser.wait(f"{app} !== null", timeout=10)
    # an executor that cannot be scheduled shows as pending, with the scheduler's reason
    cluster.apply(json.dumps({"apiVersion": "v1", "kind": "Pod", "metadata": {
        "name": "ui-exec-waiting", "namespace": namespace,
        "labels": {"spark-app-selector": "spark-ui", "spark-role": "executor"}},
        "spec": {"containers": [{"name": "c", "image": "spark", "resources": {"limits": {"ui.test/none": "1"}}}]}}))
    for i in (1, 2):
        pod(f"ui-exec-{i}", "executor", cluster.nodes[1])
        took = browser.wait(f"{app}.querySelector('tr[data-pod=\"ui-exec-{i}\"]') !== null", timeout=5)
        assert took <= 3.0
    browser.wait(f"{app}.querySelector('tr[data-pod=\"ui-exec-waiting\"] .reason') !== null", timeout=10)
    reason = browser.evaluate(f"{app}.querySelector('tr[data-pod=\"ui-exec-waiting\"]').textContent")
    assert "Pending" in reason and "ui.test/none" in reason, reason
    browser.screenshot("03-app-with-executors")


@pytest.mark.parametrize("incremental", [True, False], ids=["incremental", "full-read"])
def test_watches_drive_the_page_not_the_interval(
    ui_cluster: tuple[LocalCluster, str, MetricsServer], browser: Browser, incremental: bool
) -> None:
    """With a 60 s interval, only the pod watch can make an executor appear within seconds; incremental
    (the CLI's way), it does so with no full read at all: the event is applied to the held pods."""
    cluster, namespace, _ = ui_cluster
    kube = Kube.connect(kubeconfig=cluster.kubeconfig)
    reads = [0]
    if incremental:
        live = live_sources(kube)

        def read() -> None:
            reads[0] += 1
            live.update()

        server = UiServer(read, port=0, interval=60, render=live.render,
                          watch=lambda changed: start_watches(kube, changed, on_event=live.event))
    else:
        server = UiServer(page_reader(kube), port=0, interval=60, watch=lambda wake: start_watches(kube, wake))
    server.start()
    name = f"watched-exec-{'i' if incremental else 'f'}"
    try:
        browser.goto(server.url)
        browser.wait("document.body.dataset.rendered > 0", timeout=10)
        time.sleep(1)  # the watches' initial ADDED events have passed
        before = reads[0]
        cluster.apply(json.dumps({"apiVersion": "v1", "kind": "Pod", "metadata": {
            "name": name, "namespace": namespace,
            "labels": {"spark-app-selector": f"spark-{name}", "spark-role": "executor"}},
            "spec": {"nodeName": cluster.nodes[1], "containers": [{"name": "c", "image": "spark"}]}}))
        took = browser.wait(f"document.querySelector('tr[data-pod=\"{name}\"]') !== null", timeout=10)
        assert took <= 3.0, f"the executor appeared after {took:.1f} s"
        if incremental:
            assert reads[0] == before, "a watch event made a full read"
            cluster.kubectl("delete", "pod", "-n", namespace, name, "--wait=false")
            took = browser.wait(f"document.querySelector('tr[data-pod=\"{name}\"]') === null", timeout=10)
            assert took <= 3.0 and reads[0] == before
            # what the events built is what a full read sees (quotas are not watched: read each interval)
            time.sleep(0.5)
            held, full = live.render() or {}, page_reader(kube)()
            assert {k: held[k] for k in ("nodes", "apps", "unavailable")} == {
                k: full[k] for k in ("nodes", "apps", "unavailable")}
    finally:
        server.stop()
        kube.close()


def test_tenants_show_quota_used_of_hard(ui: UiServer, browser: Browser) -> None:
    browser.goto(ui.url)
    row = "[...document.querySelectorAll('#tenants tr')].map(r => r.textContent).join('|')"
    browser.wait(f"{row}.includes('team-ui') && {row}.includes('pods')", timeout=10)
    text = browser.evaluate(row)
    assert "requests.nec.com/ve0 / 4" in text  # used / hard, as the quota status says
    browser.screenshot("04-tenants")


def test_the_grid_moves_with_the_arrow_keys(ui: UiServer, browser: Browser) -> None:
    browser.goto(ui.url)
    browser.wait(f"{_cell('acc1')} !== null", timeout=10)
    browser.evaluate(f"{_cell('acc0')}.focus()")
    browser.key("ArrowRight")
    assert browser.evaluate("document.activeElement.dataset.device") == "acc1"
    assert browser.evaluate("document.activeElement.tabIndex") == 0
    browser.key("ArrowLeft")
    assert browser.evaluate("document.activeElement.dataset.device") == "acc0"


# ---- the server's guards, over plain HTTP ----


def _get(port: int, path: str, host: str | None = None, method: str = "GET") -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    conn.putrequest(method, path, skip_host=True)
    conn.putheader("Host", host or f"127.0.0.1:{port}")
    conn.endheaders()
    response = conn.getresponse()
    body = response.read() if path != "/events" else b""
    conn.close()
    return response.status, dict(response.getheaders()), body


def test_only_its_own_host_read_only_and_strict_headers(ui: UiServer) -> None:
    status, headers, body = _get(ui.port, "/")
    assert status == 200 and b"/app.js" in body
    assert "default-src 'self'" in headers["Content-Security-Policy"]
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert _get(ui.port, "/", host=f"localhost:{ui.port}")[0] == 200
    assert _get(ui.port, "/", host="evil.example:80")[0] == 403  # DNS rebinding
    assert _get(ui.port, "/api/view", host=f"evil.example:{ui.port}")[0] == 403
    assert _get(ui.port, "/api/view", method="POST")[0] == 405
    assert _get(ui.port, "/nothing")[0] == 404
    status, _, body = _get(ui.port, "/api/view")
    assert status == 200 and "nodes" in json.loads(body)


def test_assets_are_packaged_and_fetch_nothing_from_elsewhere() -> None:
    for name in ("index.html", "app.js", "app.css"):
        text = asset(name).decode()
        assert "http://" not in text and "https://" not in text and "//cdn" not in text
    assert not any(sink in asset("app.js").decode() for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML",
                                                                 "document.write", "eval("))


def test_a_port_in_use_is_a_clear_error(cluster: LocalCluster, tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code, _, err = kubeaccel("ui", "--kubeconfig", str(cluster.kubeconfig), "--port", str(port))
    assert code == 2
    assert f"port {port} on 127.0.0.1 is already in use" in err and "hint:" in err
