"""The cluster's devices as rows: a pure join of what the readers fetched, no I/O.

Inputs are plain data: each plugin pod's metrics (already parsed by ``view.metrics``), the
ResourceSlices and ResourceClaims of DRA, the pods that hold devices and the namespaces' tenant
labels. ``build`` joins them into one ``View``: a row per device (held or free), and a ``Problem``
per source that did not answer, so nothing is dropped silently.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

# The label keys and taint the other halves write; view sits below them, so it names them itself
# (tests/view checks they equal spark.labels' and dra.model's).
LABEL_APP_ID = "spark-app-selector"
LABEL_APP_NAME = "spark-app-name"
LABEL_ROLE = "spark-role"
LABEL_TENANT = "kubeaccel.io/tenant"
DRA_HEALTH_TAINT = "kubeaccel.io/unhealthy"

_DIGITS = re.compile(r"(\d+)")
MODE_PLUGIN = "plugin"
MODE_DRA = "dra"
HEALTHY = "Healthy"
UNHEALTHY = "Unhealthy"
UNKNOWN = "Unknown"


@dataclass(frozen=True)
class DeviceRow:
    """One device: where it is, what it is, and who holds it (empty holder fields: free)."""

    node: str
    resource: str
    device: str
    index: str
    health: str
    numa: str
    mode: str
    namespace: str = ""
    pod: str = ""
    container: str = ""
    app: str = ""
    tenant: str = ""
    since: str = ""
    claim: str = ""  # DRA: the ResourceClaim that holds it
    role: str = ""  # the holder's Spark role (driver, executor)

    @property
    def holder(self) -> str:
        if not self.pod:
            return f"{self.namespace}/claim:{self.claim}" if self.claim else ""
        return "/".join(p for p in (self.namespace, self.pod, self.container) if p)

    @property
    def healthy(self) -> bool:
        return self.health == HEALTHY


@dataclass(frozen=True)
class Problem:
    """A source that did not answer: the rows it would have given are missing, and this says why."""

    node: str
    source: str
    reason: str
    hint: str = ""


@dataclass(frozen=True)
class PluginDevice:
    resource: str
    device: str
    index: str
    numa: str
    health: str


@dataclass(frozen=True)
class Allocation:
    resource: str
    device: str
    namespace: str
    pod: str
    container: str


@dataclass(frozen=True)
class PluginReport:
    """What one plugin pod's metrics say (parsed), or why they could not be read."""

    node: str
    source: str  # namespace/pod of the plugin
    devices: tuple[PluginDevice, ...] = ()
    allocations: tuple[Allocation, ...] = ()
    error: str = ""
    hint: str = ""


@dataclass(frozen=True)
class View:
    rows: tuple[DeviceRow, ...]
    problems: tuple[Problem, ...]

    @property
    def partial(self) -> bool:
        return bool(self.problems)


@dataclass(frozen=True)
class Filters:
    node: str | None = None
    resource: str | None = None
    namespace: str | None = None
    unhealthy: bool = False

    def keep(self, row: DeviceRow) -> bool:
        return (
            (self.node is None or row.node == self.node)
            and (self.resource is None or row.resource == self.resource)
            and (self.namespace is None or row.namespace == self.namespace)
            and (not self.unhealthy or not row.healthy)
        )

    def keep_problem(self, problem: Problem) -> bool:
        return self.node is None or problem.node in (self.node, "")


def plugin_rows(report: PluginReport) -> list[DeviceRow]:
    """A row per device the plugin advertises, one more per extra holder of a shared device; an allocation
    of a device the plugin no longer lists (an older plugin without per-device health) still shows."""
    held: dict[tuple[str, str], list[Allocation]] = {}
    for a in report.allocations:
        held.setdefault((a.resource, a.device), []).append(a)
    rows = []
    for d in report.devices:
        base = DeviceRow(report.node, d.resource, d.device, d.index, d.health, d.numa, MODE_PLUGIN)
        holders = held.pop((d.resource, d.device), [])
        rows.extend(_held(base, holders) if holders else [base])
    for (resource, device), holders in held.items():
        rows.extend(_held(DeviceRow(report.node, resource, device, "", UNKNOWN, "", MODE_PLUGIN), holders))
    return rows


def _held(base: DeviceRow, holders: Sequence[Allocation]) -> list[DeviceRow]:
    return [replace(base, namespace=a.namespace, pod=a.pod, container=a.container) for a in holders]


def _attribute(attributes: Mapping[str, Any], name: str) -> str:
    value = attributes.get(name)
    if not isinstance(value, Mapping):
        return ""
    for kind in ("string", "int", "bool", "version"):
        if kind in value:
            return str(value[kind])
    return ""


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def dra_rows(slices: Iterable[Mapping[str, Any]], claims: Iterable[Mapping[str, Any]]) -> list[DeviceRow]:
    """A row per device of every ResourceSlice of a node, joined to the claims allocated to it."""
    holders: dict[tuple[str, str, str], list[DeviceRow]] = {}
    for claim in claims:
        meta, status = _dict(claim.get("metadata")), _dict(claim.get("status"))
        namespace, name = str(meta.get("namespace") or ""), str(meta.get("name") or "")
        pods = [str(r.get("name") or "") for r in map(_dict, _list(status.get("reservedFor")))
                if r.get("resource") == "pods"]
        for result in map(_dict, _list(_dict(_dict(status.get("allocation")).get("devices")).get("results"))):
            key = (str(result.get("driver") or ""), str(result.get("pool") or ""), str(result.get("device") or ""))
            bare = DeviceRow("", "", "", "", "", "", MODE_DRA, namespace=namespace, claim=name)
            holders.setdefault(key, []).extend([replace(bare, pod=p) for p in pods] or [bare])
    rows = []
    for s in slices:
        spec = _dict(s.get("spec"))
        node, driver = str(spec.get("nodeName") or ""), str(spec.get("driver") or "")
        pool = str(_dict(spec.get("pool")).get("name") or "")
        if not node:
            continue  # a network-attached pool: not one node's devices
        for device in map(_dict, _list(spec.get("devices"))):
            name = str(device.get("name") or "")
            attributes = _dict(device.get("attributes"))
            unhealthy = any(_dict(t).get("key") == DRA_HEALTH_TAINT for t in _list(device.get("taints")))
            base = DeviceRow(
                node,
                _attribute(attributes, "resource") or driver,
                name,
                _attribute(attributes, "index"),
                UNHEALTHY if unhealthy else HEALTHY,
                _attribute(attributes, "numaNode"),
                MODE_DRA,
            )
            found = holders.get((driver, pool, name), [])
            rows.extend([replace(base, namespace=h.namespace, pod=h.pod, claim=h.claim) for h in found] or [base])
    return rows


@dataclass(frozen=True)
class PodFacts:
    app: str
    since: str
    role: str = ""


def pod_facts(pods: Iterable[Mapping[str, Any]]) -> dict[tuple[str, str], PodFacts]:
    """(namespace, name) -> the pod's Spark app (its ID label, else its name label) and start time."""
    facts = {}
    for pod in pods:
        meta = _dict(pod.get("metadata"))
        labels = _dict(meta.get("labels"))
        app = str(labels.get(LABEL_APP_ID) or labels.get(LABEL_APP_NAME) or "")
        since = str(_dict(pod.get("status")).get("startTime") or meta.get("creationTimestamp") or "")
        role = str(labels.get(LABEL_ROLE) or "")
        facts[(str(meta.get("namespace") or ""), str(meta.get("name") or ""))] = PodFacts(app, since, role)
    return facts


def tenants(namespaces: Iterable[Mapping[str, Any]]) -> dict[str, str]:
    """namespace -> its tenant (the label ``kubeaccel tenant create`` writes)."""
    out = {}
    for ns in namespaces:
        meta = _dict(ns.get("metadata"))
        tenant = _dict(meta.get("labels")).get(LABEL_TENANT)
        if tenant:
            out[str(meta.get("name") or "")] = str(tenant)
    return out


def unserved_nodes(nodes: Iterable[Mapping[str, Any]], served: set[str]) -> list[Problem]:
    """Nodes that advertise extended resources but whose devices no source reported."""
    problems = []
    for node in nodes:
        name = str(_dict(node.get("metadata")).get("name") or "")
        allocatable = _dict(_dict(node.get("status")).get("allocatable"))
        extended = sorted(
            k for k, v in allocatable.items()
            if "/" in k and not k.startswith(("hugepages-", "kubernetes.io/")) and str(v) not in ("0", "")
        )
        if extended and name not in served:
            problems.append(Problem(name, "node", f"advertises {', '.join(extended)[:200]} but no kubeaccel plugin "
                                    "pod or DRA slice reports its devices",
                                    "is the kubeaccel device-plugin DaemonSet running there?"))
    return problems


def build(  # noqa: PLR0917 - the fetched inputs, one per source
    reports: Iterable[PluginReport],
    slices: Iterable[Mapping[str, Any]],
    claims: Iterable[Mapping[str, Any]],
    pods: Mapping[tuple[str, str], PodFacts],
    tenant_of: Mapping[str, str],
    problems: Iterable[Problem] = (),
    nodes: Iterable[Mapping[str, Any]] | None = None,
) -> View:
    """Join every source into one view, sorted by node, resource and device index."""
    rows: list[DeviceRow] = []
    found = list(problems)
    reported: set[str] = set()
    for report in reports:
        reported.add(report.node)
        if report.error:
            found.append(Problem(report.node, report.source, report.error, report.hint))
        else:
            rows.extend(plugin_rows(report))
    rows.extend(dra_rows(slices, claims))
    if nodes is not None:
        found.extend(unserved_nodes(nodes, reported | {r.node for r in rows}))
    enriched = []
    for row in rows:
        facts = pods.get((row.namespace, row.pod))
        enriched.append(replace(row, app=facts.app if facts else "", since=facts.since if facts else "",
                                role=facts.role if facts else "", tenant=tenant_of.get(row.namespace, "")))
    enriched.sort(key=lambda r: (r.node, r.resource, natural(r.index or r.device), natural(r.device), r.holder))
    return View(tuple(enriched), tuple(sorted(found, key=lambda p: (p.node, p.source))))


def natural(text: str) -> tuple[tuple[int, int | str], ...]:
    return tuple((0, int(p)) if p.isdecimal() and len(p) <= 18 else (1, p) for p in _DIGITS.split(text) if p)


def filtered(view: View, filters: Filters) -> View:
    return View(tuple(r for r in view.rows if filters.keep(r)),
                tuple(p for p in view.problems if filters.keep_problem(p)))
