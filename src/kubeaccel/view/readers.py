"""The view's edge: fetch every source through the one door (``kube.client.Kube``), then ``model.build``.

- device-plugin devices and allocations: each plugin pod's ``/metrics`` through the API server's pod
  proxy (RBAC: ``get`` on ``pods/proxy``), read concurrently and bounded, so neither Prometheus nor node
  access is needed;
- DRA: ResourceSlices and ResourceClaims (``resource.k8s.io/v1``);
- pods (Spark app, start time), namespaces (tenant) and nodes (which nodes no source reported).

A source that does not answer (no rights, a pod that is down, junk) becomes a ``Problem`` row; only a
failure to list pods at all (no API server, no rights to the basics) is an error for the whole command.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from kubeaccel.errors import ApiNotFoundError, ForbiddenError, KubeaccelError
from kubeaccel.kube.client import ALL_NAMESPACES, Kube
from kubeaccel.kube.rest import NAMESPACES, PODS, RESOURCEQUOTAS, Collection
from kubeaccel.view import metrics
from kubeaccel.view.apps import PodDevices
from kubeaccel.view.model import LABEL_APP_ID, PluginReport, Problem, View, build, pod_facts, tenants

log = logging.getLogger(__name__)
PLUGIN_SELECTOR = {"app.kubernetes.io/component": "device-plugin"}
METRICS_PORT_NAME = "metrics"
DEFAULT_METRICS_PORT = 9434
SCRAPE_WORKERS = 16
PROXY_HINT = "grant get on pods/proxy in the plugin's namespace (docs/view.md: least RBAC)"

NODES = Collection("", "v1", "nodes", "node", False, "lightkube.resources.core_v1:Node")
RESOURCE_SLICES = Collection(
    "resource.k8s.io", "v1", "resourceslices", "resourceslice", False, "lightkube.resources.resource_v1:ResourceSlice"
)
RESOURCE_CLAIMS = Collection(
    "resource.k8s.io", "v1", "resourceclaims", "resourceclaim", True, "lightkube.resources.resource_v1:ResourceClaim"
)


@dataclass(frozen=True)
class PluginPod:
    namespace: str
    name: str
    node: str
    port: int
    running: bool

    @property
    def source(self) -> str:
        return f"{self.namespace}/{self.name}"


def plugin_pods(pods: Sequence[Mapping[str, Any]]) -> list[PluginPod]:
    """The plugin pods, with the port their container calls ``metrics`` (the chart's), else the default."""
    found = []
    for pod in pods:
        meta, spec, status = (pod.get(k) or {} for k in ("metadata", "spec", "status"))
        if not spec.get("nodeName"):
            continue
        port = DEFAULT_METRICS_PORT
        for container in spec.get("containers") or []:
            for p in container.get("ports") or []:
                if p.get("name") == METRICS_PORT_NAME and isinstance(p.get("containerPort"), int):
                    port = p["containerPort"]
        found.append(PluginPod(str(meta.get("namespace")), str(meta.get("name")), str(spec["nodeName"]), port,
                               status.get("phase") == "Running"))
    return found


def scrape(kube: Kube, pod: PluginPod) -> PluginReport:
    """One plugin's devices and allocations, or why they are missing."""
    if not pod.running:
        return PluginReport(pod.node, pod.source, error="the plugin pod is not running",
                            hint="kubectl describe pod shows why")
    try:
        body = kube.proxy_get(pod.namespace, pod.name, pod.port, "metrics", limit=metrics.MAX_METRICS_BYTES)
        devices, allocations = metrics.parse(body)
    except ForbiddenError:
        return PluginReport(pod.node, pod.source, error="not allowed to read its metrics through the pod proxy",
                            hint=PROXY_HINT)
    except KubeaccelError as exc:
        return PluginReport(pod.node, pod.source, error=f"metrics unavailable: {exc.message[:300]}",
                            hint=exc.hint or "")
    except metrics.MetricsError as exc:
        return PluginReport(pod.node, pod.source, error=f"metrics unreadable: {exc}",
                            hint="is this a kubeaccel plugin's metrics port?")
    return PluginReport(pod.node, pod.source, devices, allocations)


def _optional(kube: Kube, res: Collection, namespace: str | None, what: str,
              problems: list[Problem], **selectors: Mapping[str, str]) -> list[dict[str, Any]] | None:
    """A list the view can do without: forbidden or absent (no DRA API) becomes a problem or nothing."""
    try:
        return kube.list_raw(res, namespace, **selectors)
    except ApiNotFoundError:
        return None  # the API is not served (a cluster without DRA)
    except ForbiddenError:
        problems.append(Problem("", what, f"not allowed to list {res.plural}", f"grant list on {res.plural}"))
    except KubeaccelError as exc:
        problems.append(Problem("", what, exc.message[:300], exc.hint or ""))
    return None


@dataclass(frozen=True)
class Sources:
    """Everything fetched for one view, as plain data (the page also reads the pods and quotas)."""

    reports: list[PluginReport]
    slices: list[dict[str, Any]]
    claims: list[dict[str, Any]]
    pods: list[dict[str, Any]]
    namespaces: list[dict[str, Any]]
    nodes: list[dict[str, Any]] | None
    quotas: list[dict[str, Any]]
    problems: list[Problem]

    def view(self) -> View:
        return build(self.reports, self.slices, self.claims, pod_facts(self.pods), tenants(self.namespaces),
                     self.problems, self.nodes)


def read_sources(kube: Kube, *, namespace: str | None = None, quotas: bool = False) -> Sources:
    """Read every source once: the API's lists run beside the plugin scrapes, on one pool."""
    problems: list[Problem] = []
    scope = namespace or ALL_NAMESPACES
    with ThreadPoolExecutor(max_workers=SCRAPE_WORKERS) as pool:
        plugin_list = pool.submit(_optional, kube, PODS, ALL_NAMESPACES, "plugin pods", problems,
                                  labels=PLUGIN_SELECTOR)
        slices = pool.submit(_optional, kube, RESOURCE_SLICES, None, "resourceslices", problems)
        claims = pool.submit(_optional, kube, RESOURCE_CLAIMS, scope, "resourceclaims", problems)
        holders = pool.submit(kube.list_raw, PODS, scope)
        namespaces = pool.submit(_optional, kube, NAMESPACES, None, "namespaces", problems)
        nodes = pool.submit(_optional, kube, NODES, None, "nodes", problems)
        quota_list = pool.submit(_optional, kube, RESOURCEQUOTAS, scope, "resourcequotas", problems) if quotas else None
        scrapes = [pool.submit(scrape, kube, p) for p in plugin_pods(plugin_list.result() or [])]
        return Sources([s.result() for s in scrapes], slices.result() or [], claims.result() or [], holders.result(),
                       namespaces.result() or [], nodes.result(),
                       (quota_list.result() or []) if quota_list is not None else [], problems)


def read_view(kube: Kube, *, namespace: str | None = None) -> View:
    """Everything the devices table shows, read once."""
    return read_sources(kube, namespace=namespace).view()


def read_apps(
    kube: Kube, apps: Sequence[tuple[str, str]]
) -> tuple[dict[tuple[str, str], list[PodDevices]], list[Problem]]:
    """For `spark status --devices`: each (namespace, app ID)'s pods' devices, and what may hide some."""
    from kubeaccel.view.apps import AppRef, for_apps

    namespaces = {ns for ns, _ in apps}
    view = read_view(kube, namespace=next(iter(namespaces)) if len(namespaces) == 1 else None)
    refs = []
    for namespace, app_id in apps:
        pods = kube.list_raw(PODS, namespace, labels={LABEL_APP_ID: app_id}) if app_id else []
        nodes = tuple(sorted({str((p.get("spec") or {}).get("nodeName") or "") for p in pods} - {""}))
        refs.append(AppRef(namespace, app_id, nodes))
    return for_apps(view, refs)


WATCHED = ("lightkube.resources.core_v1:Pod", "lightkube.resources.resource_v1:ResourceClaim",
           "lightkube.resources.resource_v1:ResourceSlice")


def start_watches(kube: Kube, wake: Callable[[], None], *, namespace: str | None = None,
                  on_event: Callable[[str, str, dict[str, Any]], bool] | None = None) -> list[threading.Thread]:
    """Daemon threads that call ``wake`` on every change of a pod, ResourceClaim or ResourceSlice (the
    door's watch, which reconnects where the server ends one); with ``on_event`` (kind, event type, the
    object as JSON), only when it says the change matters. A watch that is refused (RBAC, no DRA API)
    ends quietly: the page's interval reads still see the change, later."""
    import importlib

    def follow(model: str) -> None:
        module, _, name = model.partition(":")
        try:
            res: Any = getattr(importlib.import_module(module), name)
            scope = None if name == "ResourceSlice" else (namespace or ALL_NAMESPACES)
            for kind, obj in kube.watch(res, scope):  # type: ignore[arg-type]
                if on_event is None or on_event(name, kind, obj.to_dict()):
                    wake()
        except (KubeaccelError, ImportError, AttributeError) as exc:
            log.info("no watch on %s (%s): the page reads it every interval", name, exc)

    threads = [threading.Thread(target=follow, args=(m,), name=f"kubeaccel-ui-watch-{m.rpartition(':')[2]}",
                                daemon=True) for m in WATCHED]
    for t in threads:
        t.start()
    return threads
