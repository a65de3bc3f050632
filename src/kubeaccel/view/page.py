"""What the page shows, as one JSON document: pure, built from the readers' ``Sources`` and ``View``.

- ``nodes``: per node, its devices (health, holder, app) for the grid;
- ``apps``: per Spark app, its driver and executors with phase, the reason a pod waits, and devices;
- ``tenants``: per tenant namespace, each quota's hard and used amounts;
- ``unavailable``: sources that did not answer.

Every string is the server's (pod names, reasons, metric labels): the page sets them as text only.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict
from typing import Any

from kubeaccel.view.model import LABEL_APP_ID, LABEL_APP_NAME, LABEL_ROLE, DeviceRow, View, natural

MAX_REASON = 300


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def waiting_reason(pod: Mapping[str, Any]) -> str:
    """Why a pod is not running yet: a container's waiting reason, else the scheduler's condition."""
    status = _dict(pod.get("status"))
    for container in map(_dict, _list(status.get("containerStatuses"))):
        waiting = _dict(_dict(container.get("state")).get("waiting"))
        if waiting.get("reason"):
            text = f"{waiting['reason']}: {waiting.get('message') or ''}".rstrip(": ")
            return text[:MAX_REASON]
    for condition in map(_dict, _list(status.get("conditions"))):
        if condition.get("type") == "PodScheduled" and condition.get("status") == "False":
            return f"{condition.get('reason') or 'Unschedulable'}: {condition.get('message') or ''}"[:MAX_REASON]
    return str(status.get("reason") or "")[:MAX_REASON]


def _devices_by_pod(rows: Iterable[DeviceRow]) -> dict[tuple[str, str], list[dict[str, str]]]:
    held: dict[tuple[str, str], list[dict[str, str]]] = {}
    for r in rows:
        if r.pod:
            held.setdefault((r.namespace, r.pod), []).append(
                {"node": r.node, "resource": r.resource, "device": r.device, "index": r.index, "health": r.health})
    return held


def apps(pods: Iterable[Mapping[str, Any]], view: View) -> list[dict[str, Any]]:
    """The Spark apps (pods labelled with an app ID), driver first, each pod with its devices."""
    held = _devices_by_pod(view.rows)
    found: dict[tuple[str, str], dict[str, Any]] = {}
    for pod in pods:
        meta, spec, status = _dict(pod.get("metadata")), _dict(pod.get("spec")), _dict(pod.get("status"))
        labels = _dict(meta.get("labels"))
        app_id = str(labels.get(LABEL_APP_ID) or "")
        if not app_id:
            continue
        namespace, name = str(meta.get("namespace") or ""), str(meta.get("name") or "")
        app = found.setdefault((namespace, app_id), {"namespace": namespace, "app": app_id, "name": "", "phase": "",
                                                     "pods": []})
        role = str(labels.get(LABEL_ROLE) or "")
        phase = str(status.get("phase") or "Pending")
        if role == "driver":
            app["name"], app["phase"] = str(labels.get(LABEL_APP_NAME) or name), phase
        app["pods"].append({"name": name, "role": role, "phase": phase, "node": str(spec.get("nodeName") or ""),
                            "reason": waiting_reason(pod) if phase == "Pending" else "",
                            "devices": held.get((namespace, name), [])})
    for app in found.values():
        app["pods"].sort(key=lambda p: (p["role"] != "driver", natural(p["name"])))
        app["phase"] = app["phase"] or "NoDriver"
    return sorted(found.values(), key=lambda a: (a["namespace"], a["app"]))


def tenants(namespaces: Iterable[Mapping[str, Any]], quotas: Iterable[Mapping[str, Any]],
            tenant_of: Mapping[str, str]) -> list[dict[str, Any]]:
    """Each tenant namespace's quotas: resource -> hard and used, as the API reports them."""
    out: dict[str, dict[str, Any]] = {
        ns: {"namespace": ns, "tenant": tenant, "quota": []} for ns, tenant in tenant_of.items()
    }
    for quota in quotas:
        ns = str(_dict(quota.get("metadata")).get("namespace") or "")
        if ns not in out:
            continue
        status = _dict(quota.get("status"))
        hard, used = _dict(status.get("hard")), _dict(status.get("used"))
        for resource in sorted(hard):
            out[ns]["quota"].append({"resource": str(resource), "hard": str(hard[resource]),
                                     "used": str(used.get(resource, "0"))})
    return sorted(out.values(), key=lambda t: t["namespace"])


def snapshot(view: View, pods: Iterable[Mapping[str, Any]], namespaces: Iterable[Mapping[str, Any]],
             quotas: Iterable[Mapping[str, Any]], tenant_of: Mapping[str, str]) -> dict[str, Any]:
    nodes: dict[str, list[dict[str, Any]]] = {}
    for r in view.rows:
        # rows are flat (every field a str): a shallow copy, not asdict's deep one (half the page's build time)
        nodes.setdefault(r.node, []).append({**vars(r), "holder": r.holder})
    pod_list = list(pods)
    return {
        "nodes": [{"name": n, "devices": d} for n, d in sorted(nodes.items())],
        "apps": apps(pod_list, view),
        "tenants": tenants(namespaces, quotas, tenant_of),
        "unavailable": [asdict(p) for p in view.problems],
    }
