"""The devices each Spark app's pods hold: the view's rows grouped by app and pod, as Spark sees them.

Spark's discovery script (``kubeaccel-discover``) hands each executor the addresses in
``KUBEACCEL_DEVICES_<RESOURCE>``: the device indexes the plugin's Allocate gave its container (DRA: the
claim's devices). So a pod's addresses here are its rows' indexes, per resource, in natural order.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from kubeaccel.view.model import DeviceRow, Problem, View, natural


@dataclass(frozen=True)
class PodDevices:
    """One pod's devices of one resource."""

    namespace: str
    pod: str
    role: str
    node: str
    resource: str
    mode: str
    addresses: tuple[str, ...]  # what discovery handed Spark: the devices' indexes
    devices: tuple[str, ...]  # the devices' IDs
    unhealthy: tuple[str, ...]  # the addresses among them that are unhealthy now

    def as_dict(self) -> dict[str, object]:
        return {"namespace": self.namespace, "pod": self.pod, "role": self.role, "node": self.node,
                "resource": self.resource, "mode": self.mode, "addresses": list(self.addresses),
                "devices": list(self.devices), "unhealthy": list(self.unhealthy)}


def app_devices(view: View, namespace: str, app_id: str) -> list[PodDevices]:
    """The pods of app ``app_id`` in ``namespace`` that hold devices, driver first, then by pod name."""
    groups: dict[tuple[str, str, str], list[DeviceRow]] = {}
    for row in view.rows:
        if row.namespace == namespace and row.app == app_id and row.pod:
            groups.setdefault((row.pod, row.resource, row.mode), []).append(row)
    out = []
    for (pod, resource, mode), rows in groups.items():
        rows.sort(key=lambda r: natural(r.index or r.device))
        out.append(PodDevices(namespace, pod, rows[0].role, rows[0].node, resource, mode,
                              tuple(r.index or r.device for r in rows), tuple(r.device for r in rows),
                              tuple(r.index or r.device for r in rows if not r.healthy)))
    out.sort(key=lambda p: (p.role != "driver", natural(p.pod), p.resource))
    return out


def relevant_problems(view: View, nodes: Iterable[str]) -> list[Problem]:
    """The unavailable sources that could hide an app's devices: its pods' nodes, and cluster-wide ones."""
    wanted = set(nodes)
    return [p for p in view.problems if not p.node or p.node in wanted]


@dataclass(frozen=True)
class AppRef:
    namespace: str
    app_id: str
    nodes: tuple[str, ...]  # where its pods run: an unavailable plugin there may hide its devices


def for_apps(view: View, apps: Iterable[AppRef]) -> tuple[dict[tuple[str, str], list[PodDevices]], list[Problem]]:
    """Each app's pods' devices, and the problems (deduplicated) that may hide some of them."""
    devices, problems = {}, []
    for app in apps:
        devices[(app.namespace, app.app_id)] = app_devices(view, app.namespace, app.app_id)
        problems += [p for p in relevant_problems(view, app.nodes) if p not in problems]
    return devices, problems
