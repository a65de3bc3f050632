"""All-or-nothing scheduling for a Spark app: the gang, resolved once from the conf, and its objects. Pure.

    from kubeaccel.spark.gang import resolve_gang
    gang = resolve_gang({"spark.kubeaccel.gang.enabled": "true", "spark.executor.instances": "8"})
    gang.scheduler, gang.min_executors, gang.members     # kubernetes, 8, 9

The conf keys (the CLI's ``--gang`` / ``--queue`` and the SparkApplication controller's
``spec.batchScheduler`` / ``batchSchedulerOptions.queue`` all land on them):

* ``spark.kubeaccel.gang.enabled``: the app is one gang (default: on when a scheduler or queue is named);
* ``spark.kubeaccel.gang.scheduler``: ``kubernetes`` (the core Workload API, Kubernetes >= 1.37 with the
  ``GenericWorkload`` feature gate), ``kueue``, ``volcano`` or ``yunikorn``; default ``kubernetes``, or
  ``kueue`` when a queue is named;
* ``spark.kubeaccel.queue``: the queue (Kueue LocalQueue, Volcano Queue, YuniKorn queue path);
* ``spark.kubernetes.scheduler.name``: Spark's own; Volcano and YuniKorn need theirs.

Who joins the gang, per scheduler (a Spark driver creates its executors only once it runs, so a gang
that waits for the driver *and* its executors before placing any of them never starts):

* ``kubernetes``: a ``scheduling.k8s.io/v1beta1`` PodGroup with ``gang.minCount`` = the executors the app
  needs to run (``spark.executor.instances``, or ``spark.dynamicAllocation.minExecutors``); the executor
  pod template names it in ``spec.schedulingGroup.podGroupName``. The scheduler places those executors
  all together or none of them, so no app ever holds part of its executors' devices. The driver is
  scheduled on its own, before the executors exist (in the gang it would wait for pods only it creates).
* ``kueue``: the pod-group labels and annotations on the driver and the executor template
  (``kueue.x-k8s.io/queue-name``, ``pod-group-name``, ``pod-group-total-count`` = driver + executors,
  ``pod-group-fast-admission`` and one ``role-hash``: see KUEUE_FAST_ANNOTATION). The queue admits the
  whole app or nothing; the driver's requests stand for every member's in the quota.
* ``volcano``: a ``scheduling.volcano.sh/v1beta1`` PodGroup (``minMember`` 1: the driver; ``minResources``:
  driver + executors, which Volcano's enqueue action reserves in the queue before the driver starts),
  ``schedulerName: volcano`` and the ``scheduling.k8s.io/group-name`` annotation, as Spark's own
  VolcanoFeatureStep does.
* ``yunikorn``: ``yunikorn.apache.org/task-groups`` on the driver (one group per role, the executors'
  ``minMember`` = the executors needed), ``task-group-name`` on every pod, the ``queue`` label and
  ``yunikorn.apache.org/queue`` annotation.
"""

from __future__ import annotations

import copy
import dataclasses
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum
from typing import TYPE_CHECKING, Any

import yaml

from kubeaccel.errors import ConfigError
from kubeaccel.kube.names import is_dns_label, label_problem
from kubeaccel.spark import dra
from kubeaccel.spark.conf import conf_bool, conf_int

if TYPE_CHECKING:
    from kubeaccel.spark.model import ResolvedApp

ENABLED_KEY = "spark.kubeaccel.gang.enabled"
SCHEDULER_KEY = "spark.kubeaccel.gang.scheduler"
QUEUE_KEY = "spark.kubeaccel.queue"
SPARK_SCHEDULER_KEY = "spark.kubernetes.scheduler.name"
DRIVER_SCHEDULER_KEY = "spark.kubernetes.driver.scheduler.name"
EXECUTOR_SCHEDULER_KEY = "spark.kubernetes.executor.scheduler.name"
MIN_EXECUTORS_KEY = "spark.dynamicAllocation.minExecutors"
MAX_EXECUTORS_KEY = "spark.dynamicAllocation.maxExecutors"
INSTANCES_KEY = "spark.executor.instances"

# the core Workload API (Kubernetes 1.37: scheduling.k8s.io/v1beta1, feature gate GenericWorkload)
NATIVE_API_VERSION = "scheduling.k8s.io/v1beta1"
NATIVE_FEATURE_GATE = "GenericWorkload"
KUEUE_GROUP = "kueue.x-k8s.io"
KUEUE_QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
KUEUE_GROUP_LABEL = "kueue.x-k8s.io/pod-group-name"
KUEUE_TOTAL_ANNOTATION = "kueue.x-k8s.io/pod-group-total-count"
# Kueue admits a plain-pod group once all its pods exist, unless fast admission is asked for: then on the
# first pod's shape times the total count, with one pod set per role hash. A Spark driver creates its
# executors only once admitted, so the group asks for fast admission and driver and executors share one
# role: Kueue reserves the driver's requests x (1 + executors) in the ClusterQueue, all or nothing.
KUEUE_FAST_ANNOTATION = "kueue.x-k8s.io/pod-group-fast-admission"
KUEUE_ROLE_ANNOTATION = "kueue.x-k8s.io/role-hash"
KUEUE_ROLE = "spark"
VOLCANO_API_VERSION = "scheduling.volcano.sh/v1beta1"
VOLCANO_GROUP_ANNOTATION = "scheduling.k8s.io/group-name"
YUNIKORN_TASK_GROUPS = "yunikorn.apache.org/task-groups"
YUNIKORN_TASK_GROUP_NAME = "yunikorn.apache.org/task-group-name"
YUNIKORN_POLICY = "yunikorn.apache.org/schedulingPolicyParameters"
YUNIKORN_QUEUE_ANNOTATION = "yunikorn.apache.org/queue"
YUNIKORN_QUEUE_LABEL = "queue"
DRIVER_TASK_GROUP = "spark-driver"
EXECUTOR_TASK_GROUP = "spark-executor"
QUEUE_MAX = 63
GANG_ANNOTATION = "kubeaccel.io/gang"  # on the driver: the native PodGroup its executors join (for `status`)

Manifest = dict[str, Any]

class Scheduler(StrEnum):
    """Who makes the app all-or-nothing."""

    KUBERNETES = "kubernetes"
    KUEUE = "kueue"
    VOLCANO = "volcano"
    YUNIKORN = "yunikorn"

    @property
    def scheduler_name(self) -> str | None:
        """The pods' ``spec.schedulerName`` this choice needs (None: the default scheduler's)."""
        return {Scheduler.VOLCANO: "volcano", Scheduler.YUNIKORN: "yunikorn"}.get(self)

@dataclass(frozen=True)
class GangSpec:
    """One app as one gang: who schedules it, in which queue, how many executors must start together."""

    scheduler: Scheduler
    min_executors: int  # the executors the app needs to run: they are placed all together or not at all
    queue: str | None = None

    @property
    def members(self) -> int:
        """Driver + the executors needed: the pods of the app's smallest running shape."""
        return 1 + self.min_executors

def _min_executors(conf: Mapping[str, str]) -> int:
    if conf_bool(conf, "spark.dynamicAllocation.enabled"):
        minimum = conf_int(conf, MIN_EXECUTORS_KEY, 0)
        if MAX_EXECUTORS_KEY in conf:
            maximum = conf_int(conf, MAX_EXECUTORS_KEY, minimum)
            if minimum > maximum:
                raise ConfigError(
                    f"{MIN_EXECUTORS_KEY}={minimum} is above {MAX_EXECUTORS_KEY}={maximum}",
                    hint=f"lower {MIN_EXECUTORS_KEY} or raise {MAX_EXECUTORS_KEY}",
                )
        if minimum < 1:
            raise ConfigError(
                f"a gang needs at least one executor, but {MIN_EXECUTORS_KEY}={minimum}",
                hint=f"set {MIN_EXECUTORS_KEY} to the executors the app needs to run, e.g. {MIN_EXECUTORS_KEY}=2",
            )
        return minimum
    return conf_int(conf, INSTANCES_KEY, 2, minimum=1)

def _queue(conf: Mapping[str, str], scheduler: Scheduler) -> str | None:
    raw = conf.get(QUEUE_KEY)
    if raw is None:
        return None
    if scheduler is Scheduler.YUNIKORN:  # a queue path: root.team-a.etl
        parts = raw.split(".")
        if len(raw) > QUEUE_MAX * 4 or not all(is_dns_label(part) for part in parts):
            raise ConfigError(
                f"{QUEUE_KEY}={raw[:100]!r} is not a YuniKorn queue path of DNS labels",
                hint=f"e.g. {QUEUE_KEY}=root.team-a",
            )
        return raw
    problem = label_problem(raw, QUEUE_KEY)
    if problem:
        raise ConfigError(problem, hint=f"a queue name is a DNS label, e.g. {QUEUE_KEY}=team-a")
    return raw

def _scheduler(conf: Mapping[str, str]) -> Scheduler:
    raw = conf.get(SCHEDULER_KEY)
    if raw is None:
        named = conf.get(SPARK_SCHEDULER_KEY)
        if named in (Scheduler.VOLCANO.value, Scheduler.YUNIKORN.value):
            return Scheduler(named)
        return Scheduler.KUEUE if QUEUE_KEY in conf else Scheduler.KUBERNETES
    try:
        return Scheduler(raw.strip().lower())
    except ValueError:
        raise ConfigError(
            f"{SCHEDULER_KEY}={raw[:100]!r} is not a gang scheduler",
            hint="use " + ", ".join(s.value for s in Scheduler),
        ) from None

def _check_scheduler_names(conf: Mapping[str, str], scheduler: Scheduler) -> None:
    wanted = scheduler.scheduler_name
    for key in (SPARK_SCHEDULER_KEY, DRIVER_SCHEDULER_KEY, EXECUTOR_SCHEDULER_KEY):
        named = conf.get(key)
        if named is None:
            continue
        if wanted is not None and named != wanted:
            raise ConfigError(
                f"{key}={named[:100]!r} contradicts {SCHEDULER_KEY}={scheduler.value}, whose pods need "
                f"schedulerName {wanted}",
                hint=f"drop {key} or set it to {wanted}",
            )
        if wanted is None and named in (Scheduler.VOLCANO.value, Scheduler.YUNIKORN.value):
            raise ConfigError(
                f"{key}={named} contradicts {SCHEDULER_KEY}={scheduler.value}",
                hint=f"set {SCHEDULER_KEY}={named} for a {named} gang, or drop {key}",
            )

def resolve_gang(conf: Mapping[str, str]) -> GangSpec | None:
    """The app's gang from its final conf, or None when the app is not one. Every problem is a ConfigError
    naming the key."""
    named = SCHEDULER_KEY in conf or QUEUE_KEY in conf
    if not conf_bool(conf, ENABLED_KEY, default=named):
        if QUEUE_KEY in conf:
            raise ConfigError(
                f"{QUEUE_KEY} is set but {ENABLED_KEY}=false: a queued app is admitted as one gang",
                hint=f"drop {ENABLED_KEY}=false, or drop {QUEUE_KEY}",
            )
        return None
    scheduler = _scheduler(conf)
    queue = _queue(conf, scheduler)
    if scheduler is Scheduler.KUEUE and queue is None:
        raise ConfigError(
            f"{SCHEDULER_KEY}=kueue needs a queue: Kueue admits only pods of a LocalQueue",
            hint=f"pass --queue NAME (or {QUEUE_KEY}=NAME), naming a LocalQueue of the app's namespace",
        )
    if scheduler is Scheduler.KUBERNETES and queue is not None:
        raise ConfigError(
            f"{QUEUE_KEY}={queue} needs a queueing scheduler, but {SCHEDULER_KEY}=kubernetes has no queues",
            hint=f"set {SCHEDULER_KEY}=kueue (or volcano / yunikorn), or drop {QUEUE_KEY}",
        )
    _check_scheduler_names(conf, scheduler)
    if scheduler is Scheduler.KUEUE:
        _check_kueue_claims(conf)
    return GangSpec(scheduler, _min_executors(conf), queue)

def _check_kueue_claims(conf: Mapping[str, str]) -> None:
    """Kueue (0.17) counts a queued app's DRA devices from the driver's ResourceClaimTemplate (the pod group's
    one pod set is the driver's shape) and refuses, for ever, a template with a CEL selector (its
    pkg/dra/claims.go, countDevicesPerClass: "CEL selectors are not supported"): refuse that app here."""
    for claim in dra.requests(conf, "driver"):
        if claim.selected:
            key = claim.selected[0][0]
            raise ConfigError(
                f"{key} puts a CEL selector on the driver's ResourceClaimTemplate, which Kueue cannot count "
                f"against the queue's quota: the app would stay inadmissible in {QUEUE_KEY}",
                hint=f"drop {key} (numaNode, model, minMemory and selector are all CEL selectors), or submit "
                "without --queue (--gang keeps the executors all-or-nothing)",
            )

# ---- the objects and the pod changes, one function each ----

def group_name(prefix: str) -> str:
    """The gang's name (PodGroup, Kueue pod group, YuniKorn app): the submission's unique prefix.

    The prefix is a DNS subdomain of at most ~216 characters; Kueue's pod-group-name is a label value."""
    return prefix if len(prefix) <= 63 else prefix[:63].rstrip("-.")

def native_pod_group(gang: GangSpec, name: str) -> Manifest:
    """The core ``PodGroup``: the executors the app needs, placed all together or not at all."""
    return {
        "apiVersion": NATIVE_API_VERSION,
        "kind": "PodGroup",
        "metadata": {"name": name},
        "spec": {"schedulingPolicy": {"gang": {"minCount": gang.min_executors}}},
    }

def _quantity(value: Decimal) -> str:
    text = format(value.normalize(), "f")
    return text

def volcano_pod_group(gang: GangSpec, name: str, min_resources: Mapping[str, Decimal]) -> Manifest:
    """Volcano's ``PodGroup``: the driver (minMember 1) is enqueued only when the queue has room for the
    whole app (``minResources``, requests of driver + executors needed)."""
    spec: Manifest = {
        "minMember": 1,
        "minResources": {key: _quantity(value) for key, value in sorted(min_resources.items())},
    }
    if gang.queue:
        spec["queue"] = gang.queue
    return {"apiVersion": VOLCANO_API_VERSION, "kind": "PodGroup", "metadata": {"name": name}, "spec": spec}

def yunikorn_task_groups(gang: GangSpec, driver: Mapping[str, Decimal], executor: Mapping[str, Decimal]) -> str:
    """The driver's ``yunikorn.apache.org/task-groups`` value: one task group per role."""
    def resources(requests: Mapping[str, Decimal]) -> dict[str, str]:
        return {key: _quantity(value) for key, value in sorted(requests.items())}

    groups = [
        {"name": DRIVER_TASK_GROUP, "minMember": 1, "minResource": resources(driver)},
        {"name": EXECUTOR_TASK_GROUP, "minMember": gang.min_executors, "minResource": resources(executor)},
    ]
    return json.dumps(groups, separators=(",", ":"))

def pod_metadata(gang: GangSpec, name: str, role: str) -> tuple[dict[str, str], dict[str, str]]:
    """(labels, annotations) the gang puts on a pod of ``role`` (driver / executor)."""
    labels: dict[str, str] = {}
    annotations: dict[str, str] = {}
    if gang.scheduler is Scheduler.KUEUE:
        assert gang.queue is not None
        labels = {KUEUE_QUEUE_LABEL: gang.queue, KUEUE_GROUP_LABEL: name}
        annotations = {KUEUE_TOTAL_ANNOTATION: str(gang.members), KUEUE_FAST_ANNOTATION: "true",
                       KUEUE_ROLE_ANNOTATION: KUEUE_ROLE}
    elif gang.scheduler is Scheduler.VOLCANO:
        annotations = {VOLCANO_GROUP_ANNOTATION: name}  # the queue is the PodGroup's
    elif gang.scheduler is Scheduler.YUNIKORN:
        annotations = {YUNIKORN_TASK_GROUP_NAME: DRIVER_TASK_GROUP if role == "driver" else EXECUTOR_TASK_GROUP}
        if gang.queue:
            labels = {YUNIKORN_QUEUE_LABEL: gang.queue}
            annotations[YUNIKORN_QUEUE_ANNOTATION] = gang.queue
    return labels, annotations

def _join(pod: Manifest, gang: GangSpec, name: str, role: str) -> None:
    labels, annotations = pod_metadata(gang, name, role)
    metadata = pod.get("metadata") or {}
    pod["metadata"] = metadata
    if labels:
        metadata["labels"] = {**(metadata.get("labels") or {}), **labels}
    if annotations:
        metadata["annotations"] = {**(metadata.get("annotations") or {}), **annotations}
    spec = pod.get("spec") or {}
    pod["spec"] = spec
    if gang.scheduler.scheduler_name:
        spec["schedulerName"] = gang.scheduler.scheduler_name
    if gang.scheduler is Scheduler.KUBERNETES and role == "executor":
        spec["schedulingGroup"] = {"podGroupName": name}

def driver_pod(pod: Manifest, gang: GangSpec, name: str, task_groups: str | None = None) -> Manifest:
    """The driver pod joined to the gang (for the native API: scheduled on its own, see the module doc)."""
    pod = copy.deepcopy(pod)
    _join(pod, gang, name, "driver")
    if gang.scheduler is Scheduler.KUBERNETES:
        pod["metadata"]["annotations"] = {**(pod["metadata"].get("annotations") or {}), GANG_ANNOTATION: name}
    if gang.scheduler is Scheduler.YUNIKORN and task_groups is not None:
        pod["metadata"]["annotations"][YUNIKORN_TASK_GROUPS] = task_groups
        pod["metadata"]["annotations"][YUNIKORN_POLICY] = "gangSchedulingStyle=Hard"
    return pod

def executor_template(text: str | None, gang: GangSpec, name: str) -> str:
    """The executor pod template text (the user's, else a minimal one) joined to the gang."""
    pod: Manifest = (yaml.safe_load(text) if text else None) or {"apiVersion": "v1", "kind": "Pod"}
    _join(pod, gang, name, "executor")
    return yaml.safe_dump(pod, sort_keys=False)

# ---- what the cluster must serve ----

@dataclass(frozen=True)
class Requirement:
    """An API the gang's scheduler needs, and how to say it is missing."""

    group_version: str
    plural: str
    missing: str
    hint: str

def requirement(gang: GangSpec) -> Requirement:
    if gang.scheduler is Scheduler.KUBERNETES:
        return Requirement(
            NATIVE_API_VERSION, "podgroups",
            f"the cluster does not serve {NATIVE_API_VERSION} PodGroup (the Workload API for gangs)",
            f"Kubernetes >= 1.37 with the feature gate {NATIVE_FEATURE_GATE}=true on kube-apiserver and "
            f"kube-scheduler, and --runtime-config={NATIVE_API_VERSION}=true; or submit without --gang",
        )
    if gang.scheduler is Scheduler.KUEUE:
        return Requirement(
            f"{KUEUE_GROUP}/v1beta2", "localqueues",
            f"Kueue is not installed: the cluster has no CustomResourceDefinition localqueues.{KUEUE_GROUP}",
            "install Kueue (>= 0.17) and create the LocalQueue, or submit without --queue",
        )
    if gang.scheduler is Scheduler.VOLCANO:
        return Requirement(
            VOLCANO_API_VERSION, "podgroups",
            "Volcano is not installed: the cluster has no CustomResourceDefinition podgroups.scheduling.volcano.sh",
            f"install Volcano, or choose another {SCHEDULER_KEY}",
        )
    return Requirement("v1", "pods", "", "")  # YuniKorn: annotations only, nothing to create



# ---- the builder's hooks: the app's gang applied to one submission (prefix: its unique name prefix) ----


def pod_requests(quota: Mapping[str, Decimal]) -> dict[str, Decimal]:
    """A pod's resource requests (``cpu``, ``memory``, ``nec.com/ve``) from its ResourceQuota-keyed totals."""
    return {key.removeprefix("requests."): value for key, value in quota.items() if key.startswith("requests.")}


def app_requests(app: ResolvedApp) -> tuple[dict[str, Decimal], dict[str, Decimal]]:
    """(one driver's, one executor's) resource requests."""
    return pod_requests(app.driver.quota_requests()), pod_requests(app.executor.quota_requests())


def gang_requests(app: ResolvedApp, gang: GangSpec) -> dict[str, Decimal]:
    """What the gang needs placed at once: driver + the executors needed."""
    driver, executor = app_requests(app)
    total = dict(driver)
    for key, value in executor.items():
        total[key] = total.get(key, Decimal(0)) + value * gang.min_executors
    return total


def with_gang_template(app: ResolvedApp, prefix: str) -> ResolvedApp:
    """The app with its executor pod template joined to its gang (unchanged when it is not one)."""
    if app.gang is None:
        return app
    text = executor_template(app.executor_template_text, app.gang, group_name(prefix))
    return dataclasses.replace(app, executor_template_text=text)


def gang_driver_pod(app: ResolvedApp, pod: Manifest, prefix: str) -> Manifest:
    if app.gang is None:
        return pod
    task_groups = None
    if app.gang.scheduler is Scheduler.YUNIKORN:
        task_groups = yunikorn_task_groups(app.gang, *app_requests(app))
    return driver_pod(pod, app.gang, group_name(prefix), task_groups)


def gang_objects(app: ResolvedApp, prefix: str) -> list[Manifest]:
    """The objects the gang adds to a submission: the PodGroup of the native API or of Volcano."""
    if app.gang is None:
        return []
    name = group_name(prefix)
    if app.gang.scheduler is Scheduler.KUBERNETES:
        return [native_pod_group(app.gang, name)]
    if app.gang.scheduler is Scheduler.VOLCANO:
        return [volcano_pod_group(app.gang, name, gang_requests(app, app.gang))]
    return []


# ---- what a pending gang says (for `spark status`) ----


def pod_group_state(pod_group: Mapping[str, Any]) -> str:
    """A core PodGroup's scheduling state in one line: scheduled, or why not (its condition's message)."""
    name = (pod_group.get("metadata") or {}).get("name", "")
    need = ((pod_group.get("spec") or {}).get("schedulingPolicy") or {}).get("gang", {}).get("minCount")
    for condition in (pod_group.get("status") or {}).get("conditions") or []:
        if condition.get("type") != "PodGroupInitiallyScheduled":
            continue
        if condition.get("status") == "True":
            return f"gang {name}: scheduled"
        reason = condition.get("reason") or "pending"
        message = condition.get("message") or ""
        return f"gang {name}: {reason}" + (f": {message}" if message else "")
    return f"gang {name}: waiting for {need} executors to be placed together"


def kueue_state(workload: Mapping[str, Any]) -> str:
    """A Kueue Workload's state in one line: admitted, or queued with Kueue's message."""
    conditions = {c.get("type"): c for c in (workload.get("status") or {}).get("conditions") or []}
    admitted = conditions.get("Admitted")
    if admitted and admitted.get("status") == "True":
        return "admitted"
    for kind in ("QuotaReserved", "Admitted", "Evicted"):
        condition = conditions.get(kind)
        if condition and condition.get("message"):
            return f"queued: {condition['message']}"
    return "queued"


# ---- the pre-flight: a gang the whole cluster cannot hold waits for ever ----


def node_allocatable(nodes: Sequence[Mapping[str, Any]], selector: Mapping[str, str]) -> dict[str, Decimal]:
    """The allocatable of the schedulable nodes whose labels match ``selector``, summed per resource."""
    from kubeaccel.kube.quantity import parse_quantity

    total: dict[str, Decimal] = {}
    for node in nodes:
        labels = (node.get("metadata") or {}).get("labels") or {}
        if (node.get("spec") or {}).get("unschedulable") or any(labels.get(k) != v for k, v in selector.items()):
            continue
        for key, value in ((node.get("status") or {}).get("allocatable") or {}).items():
            try:
                total[key] = total.get(key, Decimal(0)) + parse_quantity(value)
            except ValueError:
                continue
    return total


def cluster_shortfalls(needed: Mapping[str, Decimal], allocatable: Mapping[str, Decimal]) -> list[str]:
    """Pure: what the gang needs beyond the cluster's whole allocatable, one line per resource."""
    from kubeaccel.kube.quantity import format_quantity

    short = []
    for key, value in sorted(needed.items()):
        if key == "pods" or value <= 0:
            continue
        has = allocatable.get(key, Decimal(0))
        if value > has:
            short.append(f"needs {format_quantity(value, key)} {key}, the cluster has {format_quantity(has, key)}")
    return short


def executor_selector(conf: Mapping[str, str]) -> dict[str, str]:
    """The node labels an executor must match (Spark's node selectors), to count only the nodes it may use."""
    selector = {}
    for prefix in ("spark.kubernetes.node.selector.", "spark.kubernetes.executor.node.selector."):
        selector.update({k[len(prefix):]: v for k, v in conf.items() if k.startswith(prefix) and len(k) > len(prefix)})
    return selector
