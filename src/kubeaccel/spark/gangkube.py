"""The gang's edge to the cluster: is its API served (checked before the first write), and why is a gang
pending (for `spark status`). The objects themselves are built in kubeaccel.spark.gang (pure)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from kubeaccel.errors import ConfigError, ForbiddenError, NotFoundError, QuotaError
from kubeaccel.kube import rest
from kubeaccel.kube.client import Kube
from kubeaccel.spark import gang
from kubeaccel.spark.gang import GangSpec, Scheduler

if TYPE_CHECKING:
    from kubeaccel.spark.model import ResolvedApp

# lightkube's classes for the slow lane: the core PodGroup is in lightkube-models; the CRDs are generic
NATIVE_PODGROUPS = rest.Collection(
    "scheduling.k8s.io", "v1beta1", "podgroups", "podgroup", True, "lightkube.resources.scheduling_v1beta1:PodGroup"
)
VOLCANO_PODGROUPS = rest.Collection(
    "scheduling.volcano.sh", "v1beta1", "podgroups", "podgroup", True, "kubeaccel.spark.gangkube:VolcanoPodGroup"
)
KUEUE_LOCALQUEUES = rest.Collection(
    "kueue.x-k8s.io", "v1beta2", "localqueues", "localqueue", True, "kubeaccel.spark.gangkube:LocalQueue"
)
NODES = rest.Collection("", "v1", "nodes", "node", False, "lightkube.resources.core_v1:Node")
KUEUE_WORKLOADS = rest.Collection(
    "kueue.x-k8s.io", "v1beta2", "workloads", "workload", True, "kubeaccel.spark.gangkube:KueueWorkload"
)


_GENERIC = {
    "VolcanoPodGroup": ("scheduling.volcano.sh", "v1beta1", "PodGroup", "podgroups"),
    "LocalQueue": ("kueue.x-k8s.io", "v1beta2", "LocalQueue", "localqueues"),
    "KueueWorkload": ("kueue.x-k8s.io", "v1beta2", "Workload", "workloads"),
}


def __getattr__(name: str) -> Any:  # the generic lightkube classes, made only when the slow lane needs one
    made = _GENERIC.get(name)
    if made is None:  # e.g. `__path__`, which every `from ... import` asks for: never load lightkube for it
        raise AttributeError(name)
    from lightkube.generic_resource import create_namespaced_resource

    return create_namespaced_resource(*made)


def _collection(spec: GangSpec) -> rest.Collection | None:
    return {
        Scheduler.KUBERNETES: NATIVE_PODGROUPS,
        Scheduler.VOLCANO: VOLCANO_PODGROUPS,
        Scheduler.KUEUE: KUEUE_LOCALQUEUES,
    }.get(spec.scheduler)


def check_served(kube: Kube, spec: GangSpec | None, namespace: str) -> None:
    """Refuse (ConfigError, before anything is written) a gang whose API the cluster does not serve, and a
    Kueue queue that is not a LocalQueue of the namespace."""
    if spec is None:
        return
    collection = _collection(spec)
    if collection is None:  # YuniKorn: annotations only
        return
    need = gang.requirement(spec)
    if kube.serves(need.group_version, need.plural) is False:
        raise ConfigError(need.missing, hint=need.hint)
    if spec.scheduler is Scheduler.VOLCANO:
        __getattr__("VolcanoPodGroup")  # the submit creates one: lightkube must know the kind to encode it
    if spec.scheduler is Scheduler.KUEUE and spec.queue is not None:
        try:
            kube.get_raw(KUEUE_LOCALQUEUES, spec.queue, namespace)
        except NotFoundError:
            raise ConfigError(
                f"there is no LocalQueue {spec.queue} in namespace {namespace}",
                hint="create it (kind LocalQueue, apiVersion kueue.x-k8s.io/v1beta2) or pass another --queue",
            ) from None


def check_fits_cluster(kube: Kube, app: ResolvedApp) -> None:
    """Refuse (QuotaError, exit 6) a gang larger than the whole allocatable of the nodes its executors may use:
    it would wait for ever. Best effort: a user who may not list nodes is not checked."""
    if app.gang is None:
        return
    try:
        nodes = kube.list_raw(NODES)
    except ForbiddenError:
        return
    allocatable = gang.node_allocatable(nodes, gang.executor_selector(app.conf))
    short = gang.cluster_shortfalls(gang.gang_requests(app, app.gang), allocatable)
    if short:
        raise QuotaError(
            f"the gang (driver + {app.gang.min_executors} executors) can never be placed: " + "; ".join(short),
            hint="lower spark.executor.instances (or spark.dynamicAllocation.minExecutors) or the resource amounts, "
            "or add nodes",
        )


def pending_reason(kube: Kube, driver: Mapping[str, Any]) -> str | None:
    """Why a gang of this driver's app waits, from its PodGroup's condition or Kueue's Workload; None when
    the app is no gang or nothing is known."""
    metadata = driver.get("metadata") or {}
    namespace = str(metadata.get("namespace", ""))
    annotations = metadata.get("annotations") or {}
    labels = metadata.get("labels") or {}
    group = annotations.get(gang.GANG_ANNOTATION)
    if labels.get(gang.KUEUE_QUEUE_LABEL):
        return _kueue_state(kube, namespace, str(labels.get(gang.KUEUE_GROUP_LABEL, "")))
    if not group:
        return None
    try:
        found = kube.get_raw(NATIVE_PODGROUPS, str(group), namespace)
    except NotFoundError:
        return f"gang {group}: its PodGroup is gone"
    return gang.pod_group_state(found)


def _kueue_state(kube: Kube, namespace: str, group: str) -> str | None:
    try:
        items = kube.list_raw(KUEUE_WORKLOADS, namespace)
    except NotFoundError:
        return "queued: Kueue is not installed"
    for item in items:
        if item.get("metadata", {}).get("name") == group:
            return gang.kueue_state(item)
    return "queued: Kueue has not made a Workload for it yet"
