"""view.model: the pure join of plugin reports, DRA slices and claims, pods and tenants.

Matrix: plugin devices free / held / held by two (shared) / held but unlisted; a plugin that did not
answer -> a Problem, never a silent gap; DRA devices free / tainted / allocated+reserved / allocated
only; nodes advertising resources with no source; filters; the label keys the other halves write.
"""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from kubeaccel.dra.model import HEALTH_TAINT_KEY
from kubeaccel.kube.tenancy import create_tenant  # noqa: F401 - the module that writes LABEL_TENANT
from kubeaccel.spark.labels import LABEL_APP_ID, LABEL_APP_NAME, LABEL_ROLE
from kubeaccel.view import model
from kubeaccel.view.model import Allocation, Filters, PluginDevice, PluginReport, build, filtered, pod_facts
from kubeaccel.view.table import cells, to_json

VE = "nec.com/ve"


def _report(**kw: Any) -> PluginReport:
    devices = (PluginDevice(VE, "ve0", "0", "0", "Healthy"), PluginDevice(VE, "ve1", "1", "1", "Unhealthy"),
               PluginDevice(VE, "ve2", "2", "", "Healthy"))
    return PluginReport("n1", "kube-system/plugin-x", devices, **kw)


def test_the_label_keys_are_the_ones_the_halves_write() -> None:
    import inspect

    from kubeaccel.kube import tenancy

    assert (model.LABEL_APP_ID, model.LABEL_APP_NAME, model.LABEL_ROLE, model.DRA_HEALTH_TAINT) == (
        LABEL_APP_ID, LABEL_APP_NAME, LABEL_ROLE, HEALTH_TAINT_KEY)
    assert f'"{model.LABEL_TENANT}": name' in inspect.getsource(tenancy)


def test_plugin_devices_free_held_and_shared() -> None:
    allocations = (Allocation(VE, "ve0", "a", "p1", "c"), Allocation(VE, "ve0", "a", "p2", "c"),
                   Allocation(VE, "ve9", "b", "p3", "c"))
    pods = pod_facts([{"metadata": {"namespace": "a", "name": "p1", "labels": {LABEL_APP_ID: "spark-1"}},
                       "status": {"startTime": "2026-01-01T00:00:00Z"}}])
    view = build([_report(allocations=allocations)], [], [], pods, {"a": "team-a"})
    got = [(r.device, r.health, r.holder, r.app, r.tenant, r.since) for r in view.rows]
    assert got == [
        ("ve0", "Healthy", "a/p1/c", "spark-1", "team-a", "2026-01-01T00:00:00Z"),
        ("ve0", "Healthy", "a/p2/c", "", "team-a", ""),
        ("ve1", "Unhealthy", "", "", "", ""),
        ("ve2", "Healthy", "", "", "", ""),
        ("ve9", "Unknown", "b/p3/c", "", "", ""),  # an allocation the plugin no longer lists is kept
    ]
    assert not view.partial


def test_a_plugin_that_did_not_answer_is_a_problem_and_its_node_is_not_also_unserved() -> None:
    down = PluginReport("n2", "kube-system/plugin-y", error="metrics unavailable: refused", hint="h")
    nodes = [{"metadata": {"name": n}, "status": {"allocatable": {VE: "8", "cpu": "4"}}} for n in ("n1", "n2", "n3")]
    view = build([_report(), down], [], [], {}, {}, nodes=nodes)
    assert [(p.node, p.source) for p in view.problems] == [("n2", "kube-system/plugin-y"), ("n3", "node")]
    assert "nec.com/ve" in view.problems[1].reason
    assert view.partial and to_json(view)["partial"]


def _slice(node: str, devices: list[dict[str, Any]]) -> dict[str, Any]:
    return {"spec": {"nodeName": node, "driver": "dra.kubeaccel.io", "pool": {"name": f"{node}/ve"},
                     "devices": devices}}


def _dev(name: str, index: int, *, tainted: bool = False) -> dict[str, Any]:
    d: dict[str, Any] = {"name": name, "attributes": {"index": {"int": index}, "resource": {"string": VE},
                                                      "numaNode": {"int": index % 2}}}
    if tainted:
        d["taints"] = [{"key": HEALTH_TAINT_KEY, "value": "Unhealthy", "effect": "NoSchedule"}]
    return d


def _claim(name: str, device: str, reserved: list[str]) -> dict[str, Any]:
    return {"metadata": {"namespace": "t", "name": name},
            "status": {"allocation": {"devices": {"results": [
                {"driver": "dra.kubeaccel.io", "pool": "n1/ve", "device": device, "request": "r"}]}},
                "reservedFor": [{"resource": "pods", "name": p, "uid": "u"} for p in reserved]}}


def test_dra_devices_from_slices_and_claims() -> None:
    slices = [_slice("n1", [_dev("veslot0", 0), _dev("veslot1", 1, tainted=True), _dev("veslot2", 2)]),
              {"spec": {"driver": "net", "pool": {"name": "p"}, "devices": [{"name": "x"}]}}]  # not a node's
    claims = [_claim("c0", "veslot0", ["exec-1"]), _claim("c2", "veslot2", [])]
    view = build([], slices, claims, {}, {})
    got = [(r.node, r.resource, r.device, r.index, r.health, r.numa, r.mode, r.holder) for r in view.rows]
    assert got == [
        ("n1", VE, "veslot0", "0", "Healthy", "0", "dra", "t/exec-1"),
        ("n1", VE, "veslot1", "1", "Unhealthy", "1", "dra", ""),
        ("n1", VE, "veslot2", "2", "Healthy", "0", "dra", "t/claim:c2"),
    ]


def test_filters() -> None:
    view = build([_report(allocations=(Allocation(VE, "ve2", "a", "p", "c"),))],
                 [_slice("n9", [_dev("g", 0)])], [], {}, {})
    assert [r.device for r in filtered(view, Filters(unhealthy=True)).rows] == ["ve1"]
    assert [r.device for r in filtered(view, Filters(namespace="a")).rows] == ["ve2"]
    assert [r.node for r in filtered(view, Filters(node="n9")).rows] == ["n9"]
    assert filtered(view, Filters(resource="other")).rows == ()
    assert cells(view.rows[0]) == ["n1", VE, "ve0 (0)", "Healthy", "plugin", "-", "-"]


_JSONISH = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=8),
                        lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c, max_size=4),
                        max_leaves=30)


@settings(max_examples=200, deadline=None)
@given(st.lists(_JSONISH), st.lists(_JSONISH), st.lists(_JSONISH), st.lists(_JSONISH))
def test_odd_objects_from_the_server_never_break_the_join(slices: list[Any], claims: list[Any], pods: list[Any],
                                                          nodes: list[Any]) -> None:
    dicts = [[x for x in xs if isinstance(x, dict)] for xs in (slices, claims, pods, nodes)]
    view = build([], dicts[0], dicts[1], pod_facts(dicts[2]), model.tenants(dicts[3]), nodes=dicts[3])
    to_json(view)


@settings(max_examples=200, deadline=None)
@given(st.lists(_JSONISH), st.lists(_JSONISH), st.lists(_JSONISH))
def test_odd_objects_never_break_the_pages_document(pods: list[Any], namespaces: list[Any], quotas: list[Any]) -> None:
    import json

    from kubeaccel.view import page

    pods_, ns_, quotas_ = ([x for x in xs if isinstance(x, dict)] for xs in (pods, namespaces, quotas))
    view = build([], [], [], pod_facts(pods_), model.tenants(ns_))
    json.dumps(page.snapshot(view, pods_, ns_, quotas_, model.tenants(ns_)))


def test_the_page_says_why_a_pod_waits() -> None:
    from kubeaccel.view.page import waiting_reason

    unscheduled = {"status": {"phase": "Pending", "conditions": [
        {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": "0/3 nodes: no nec.com/ve"}]}}
    pulling = {"status": {"containerStatuses": [{"state": {"waiting": {"reason": "ErrImagePull", "message": "x"}}}]}}
    assert waiting_reason(unscheduled) == "Unschedulable: 0/3 nodes: no nec.com/ve"
    assert waiting_reason(pulling) == "ErrImagePull: x"
    assert waiting_reason({}) == ""
