"""Gangs, pure: `resolve_gang` over good and bad confs (hypothesis), the objects per scheduler, the pods
joined to them, and the builder's hooks.

Matrix: kubernetes / kueue / volcano / yunikorn; static and dynamic allocation; bad counts, queues,
scheduler names; the Volcano PodGroup against the facts of Volcano's published CRD schema
(scheduling.volcano.sh_podgroups.yaml: minMember int32, minResources a map of quantities, queue and
priorityClassName strings) and YuniKorn's task-groups annotation format (a JSON list of
{name, minMember, minResource, ...}, from its gang scheduling user guide).
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kubeaccel.errors import ConfigError
from kubeaccel.spark import gang
from kubeaccel.spark.builder import Generated, build
from kubeaccel.spark.conf import SubmitRequest
from kubeaccel.spark.gang import GangSpec, Scheduler, resolve_gang
from kubeaccel.spark.model import resolve

GEN = Generated("spark-0123", "abc123def", "svc9", "cm7", "dir-uuid", 1_700_000_000_000, "alice")
# the quantity pattern of Volcano's CRD (minResources' additionalProperties)
_NUMBER = r"(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))"
QUANTITY = re.compile(rf"^(\+|-)?{_NUMBER}(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?{_NUMBER}))?$")


def _app(**conf: str) -> Any:
    base = {
        "spark.kubernetes.container.image": "spark:4.3",
        "spark.executor.resource.ve.amount": "1",
        "spark.executor.resource.ve.vendor": "nec.com",
        "spark.executor.resource.ve.discoveryScript": "/d",
    }
    request = SubmitRequest("local:///opt/app.jar", master="k8s://https://127.0.0.1:6443", name="etl",
                            main_class="x.Main", conf={**base, **conf})
    return resolve(request).placed("team-a")


def test_off_by_default_and_native_when_enabled() -> None:
    assert resolve_gang({}) is None
    assert resolve_gang({gang.ENABLED_KEY: "false"}) is None
    spec = resolve_gang({gang.ENABLED_KEY: "true", "spark.executor.instances": "8"})
    assert spec == GangSpec(Scheduler.KUBERNETES, 8, None)
    assert spec.members == 9


def test_dynamic_allocation_counts_min_executors() -> None:
    conf = {gang.ENABLED_KEY: "true", "spark.dynamicAllocation.enabled": "true",
            "spark.dynamicAllocation.minExecutors": "3", "spark.dynamicAllocation.maxExecutors": "10"}
    spec = resolve_gang(conf)
    assert spec is not None and spec.min_executors == 3


def test_queue_implies_kueue_and_the_gang() -> None:
    assert resolve_gang({gang.QUEUE_KEY: "team-a"}) == GangSpec(Scheduler.KUEUE, 2, "team-a")
    spec = resolve_gang({gang.QUEUE_KEY: "root.team-a", gang.SCHEDULER_KEY: "yunikorn"})
    assert spec is not None and spec.queue == "root.team-a"
    spec = resolve_gang({"spark.kubernetes.scheduler.name": "volcano", gang.ENABLED_KEY: "true"})
    assert spec is not None and spec.scheduler is Scheduler.VOLCANO


@pytest.mark.parametrize(("conf", "key"), [
    ({"spark.dynamicAllocation.enabled": "true", "spark.dynamicAllocation.minExecutors": "5",
      "spark.dynamicAllocation.maxExecutors": "2"}, "spark.dynamicAllocation.minExecutors"),
    ({"spark.dynamicAllocation.enabled": "true", "spark.dynamicAllocation.minExecutors": "-1"},
     "spark.dynamicAllocation.minExecutors"),
    ({"spark.dynamicAllocation.enabled": "true"}, "spark.dynamicAllocation.minExecutors"),
    ({"spark.executor.instances": "-3"}, "spark.executor.instances"),
    ({"spark.executor.instances": "0"}, "spark.executor.instances"),
    ({gang.QUEUE_KEY: "Team_A"}, gang.QUEUE_KEY),
    ({gang.QUEUE_KEY: ""}, gang.QUEUE_KEY),
    ({gang.SCHEDULER_KEY: "slurm"}, gang.SCHEDULER_KEY),
    ({gang.SCHEDULER_KEY: "kueue"}, gang.SCHEDULER_KEY),
    ({gang.SCHEDULER_KEY: "kubernetes", gang.QUEUE_KEY: "a"}, gang.QUEUE_KEY),
    ({gang.SCHEDULER_KEY: "volcano", "spark.kubernetes.scheduler.name": "other"},
     "spark.kubernetes.scheduler.name"),
    ({gang.ENABLED_KEY: "false", gang.QUEUE_KEY: "a"}, gang.QUEUE_KEY),
    ({gang.ENABLED_KEY: "maybe"}, gang.ENABLED_KEY),
])
def test_bad_confs_name_the_key(conf: dict[str, str], key: str) -> None:
    with pytest.raises(ConfigError) as info:
        resolve_gang({gang.ENABLED_KEY: "true", **conf} if gang.ENABLED_KEY not in conf else conf)
    assert key in info.value.message


KEYS = [gang.ENABLED_KEY, gang.SCHEDULER_KEY, gang.QUEUE_KEY, "spark.executor.instances",
        "spark.dynamicAllocation.enabled", "spark.dynamicAllocation.minExecutors",
        "spark.dynamicAllocation.maxExecutors", "spark.kubernetes.scheduler.name"]
VALUES = st.one_of(st.sampled_from(["true", "false", "0", "1", "8", "-1", "kueue", "volcano", "yunikorn",
                                    "kubernetes", "team-a", "root.a", "A_B", "", " 3 ", "9" * 13]),
                   st.text(max_size=70))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.sampled_from(KEYS), VALUES, max_size=6))
def test_any_conf_gives_a_gang_none_or_a_config_error(conf: dict[str, str]) -> None:
    try:
        spec = resolve_gang(conf)
    except ConfigError as exc:
        assert any(key in exc.message for key in KEYS), exc.message
        return
    if spec is None:
        return
    assert spec.min_executors >= 1
    if spec.queue is not None and spec.scheduler is not Scheduler.YUNIKORN:
        assert re.fullmatch(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?", spec.queue)
    assert (spec.scheduler is Scheduler.KUEUE) <= (spec.queue is not None)


def test_native_gang_in_the_build() -> None:
    built = build(_app(**{gang.ENABLED_KEY: "true", "spark.executor.instances": "8"}), GEN)
    (group,) = built.gang_objects
    assert group == {"apiVersion": "scheduling.k8s.io/v1beta1", "kind": "PodGroup",
                     "metadata": {"name": "etl-abc123def"},
                     "spec": {"schedulingPolicy": {"gang": {"minCount": 8}}}}
    assert group in built.owned  # owned by the driver, so it goes with the app
    # the executors join it through the template the driver reads; the driver is scheduled on its own
    template = yaml.safe_load(built.extra_config_maps[0]["data"]["podspec-configmap-key"])
    assert template["spec"]["schedulingGroup"] == {"podGroupName": "etl-abc123def"}
    assert built.driver_conf["spark.kubernetes.executor.podTemplateFile"]
    assert "schedulingGroup" not in built.driver_pod["spec"]
    assert built.driver_pod["metadata"]["annotations"][gang.GANG_ANNOTATION] == "etl-abc123def"


def test_user_template_keeps_its_content() -> None:
    text = yaml.safe_dump({"apiVersion": "v1", "kind": "Pod", "metadata": {"labels": {"a": "b"}},
                           "spec": {"containers": [{"name": "x"}], "nodeSelector": {"n": "1"}}})
    joined = yaml.safe_load(gang.executor_template(text, GangSpec(Scheduler.KUBERNETES, 2), "g"))
    assert joined["metadata"]["labels"] == {"a": "b"}
    assert joined["spec"]["nodeSelector"] == {"n": "1"}
    assert joined["spec"]["schedulingGroup"] == {"podGroupName": "g"}


def test_kueue_pod_group_metadata_on_driver_and_executors() -> None:
    built = build(_app(**{gang.QUEUE_KEY: "team-a", "spark.executor.instances": "4"}), GEN)
    assert built.gang_objects == []
    template = yaml.safe_load(built.extra_config_maps[0]["data"]["podspec-configmap-key"])
    for metadata in (built.driver_pod["metadata"], template["metadata"]):
        assert metadata["labels"][gang.KUEUE_QUEUE_LABEL] == "team-a"
        assert metadata["labels"][gang.KUEUE_GROUP_LABEL] == "etl-abc123def"
        assert metadata["annotations"][gang.KUEUE_TOTAL_ANNOTATION] == "5"


def _check_volcano_schema(group: dict[str, Any]) -> None:
    """The facts of Volcano's PodGroup CRD (v1beta1 openAPIV3Schema) our object relies on."""
    assert group["apiVersion"] == "scheduling.volcano.sh/v1beta1" and group["kind"] == "PodGroup"
    spec = group["spec"]
    assert set(spec) <= {"minMember", "minResources", "minTaskMember", "networkTopology", "priorityClassName",
                         "queue", "preemptable"}
    assert isinstance(spec["minMember"], int) and 0 <= spec["minMember"] < 2**31
    for value in spec["minResources"].values():
        assert isinstance(value, str) and QUANTITY.match(value), value
    assert isinstance(spec.get("queue", ""), str)


def test_volcano_pod_group_and_pods() -> None:
    built = build(_app(**{gang.SCHEDULER_KEY: "volcano", gang.QUEUE_KEY: "batch",
                          "spark.executor.instances": "8"}), GEN)
    (group,) = built.gang_objects
    _check_volcano_schema(group)
    assert group["spec"]["queue"] == "batch"
    assert group["spec"]["minMember"] == 1
    assert group["spec"]["minResources"]["nec.com/ve"] == "8"  # the executors' devices, reserved together
    assert built.driver_pod["spec"]["schedulerName"] == "volcano"
    assert built.driver_pod["metadata"]["annotations"][gang.VOLCANO_GROUP_ANNOTATION] == "etl-abc123def"
    template = yaml.safe_load(built.extra_config_maps[0]["data"]["podspec-configmap-key"])
    assert template["spec"]["schedulerName"] == "volcano"


def test_yunikorn_task_groups() -> None:
    built = build(_app(**{gang.SCHEDULER_KEY: "yunikorn", gang.QUEUE_KEY: "root.team-a",
                          "spark.executor.instances": "8"}), GEN)
    assert built.gang_objects == []
    annotations = built.driver_pod["metadata"]["annotations"]
    groups = json.loads(annotations[gang.YUNIKORN_TASK_GROUPS])
    assert [g["name"] for g in groups] == ["spark-driver", "spark-executor"]
    assert groups[1]["minMember"] == 8 and groups[1]["minResource"]["nec.com/ve"] == "1"
    for task_group in groups:
        assert set(task_group) <= {"name", "minMember", "minResource", "nodeSelector", "tolerations", "affinity",
                                   "topologySpreadConstraints"}
        assert all(QUANTITY.match(v) for v in task_group["minResource"].values())
    assert annotations[gang.YUNIKORN_TASK_GROUP_NAME] == "spark-driver"
    assert annotations[gang.YUNIKORN_POLICY] == "gangSchedulingStyle=Hard"
    assert built.driver_pod["metadata"]["labels"]["queue"] == "root.team-a"
    assert built.driver_pod["spec"]["schedulerName"] == "yunikorn"
    template = yaml.safe_load(built.extra_config_maps[0]["data"]["podspec-configmap-key"])
    assert template["metadata"]["annotations"][gang.YUNIKORN_TASK_GROUP_NAME] == "spark-executor"


def test_pending_states() -> None:
    group = {"metadata": {"name": "g"}, "spec": {"schedulingPolicy": {"gang": {"minCount": 8}}}}
    assert gang.pod_group_state(group) == "gang g: waiting for 8 executors to be placed together"
    group["status"] = {"conditions": [{"type": "PodGroupInitiallyScheduled", "status": "False",
                                       "reason": "Unschedulable", "message": "0/2 nodes: Insufficient nec.com/ve"}]}
    assert gang.pod_group_state(group) == "gang g: Unschedulable: 0/2 nodes: Insufficient nec.com/ve"
    workload = {"status": {"conditions": [{"type": "QuotaReserved", "status": "False",
                                           "message": "couldn't assign flavors"}]}}
    assert gang.kueue_state(workload) == "queued: couldn't assign flavors"
    assert gang.kueue_state({"status": {"conditions": [{"type": "Admitted", "status": "True"}]}}) == "admitted"


def test_cluster_shortfalls_name_the_numbers() -> None:
    from decimal import Decimal

    nodes = [{"metadata": {"labels": {"type": "kwok"}}, "status": {"allocatable": {"nec.com/ve": "8", "cpu": "32"}}},
             {"metadata": {"labels": {"type": "real"}}, "status": {"allocatable": {"nec.com/ve": "8"}}},
             {"metadata": {"labels": {"type": "kwok"}}, "spec": {"unschedulable": True},
              "status": {"allocatable": {"nec.com/ve": "8"}}}]
    allocatable = gang.node_allocatable(nodes, {"type": "kwok"})
    assert allocatable == {"nec.com/ve": Decimal(8), "cpu": Decimal(32)}
    needed = {"nec.com/ve": Decimal(9), "cpu": Decimal(4), "pods": Decimal(10)}
    assert gang.cluster_shortfalls(needed, allocatable) == ["needs 9 nec.com/ve, the cluster has 8"]
    assert gang.cluster_shortfalls({"x.io/dev": Decimal(1)}, allocatable) == ["needs 1 x.io/dev, the cluster has 0"]


def test_requirement_names_the_feature_gate() -> None:
    need = gang.requirement(GangSpec(Scheduler.KUBERNETES, 2))
    assert need.group_version == "scheduling.k8s.io/v1beta1"
    assert "GenericWorkload" in need.hint and "runtime-config" in need.hint
    assert "localqueues.kueue.x-k8s.io" in gang.requirement(GangSpec(Scheduler.KUEUE, 2, "q")).missing


@pytest.mark.parametrize(("flags", "named"), [
    (["--queue", "Team_A"], "spark.kubeaccel.queue"),
    (["--gang", "--conf", "spark.executor.instances=-2"], "spark.executor.instances"),
    (["--gang", "--conf", "spark.dynamicAllocation.enabled=true", "--conf", "spark.dynamicAllocation.minExecutors=4",
      "--conf", "spark.dynamicAllocation.maxExecutors=2"], "spark.dynamicAllocation.minExecutors"),
])
def test_cli_flags_reach_the_conf_and_bad_input_exits_2(flags: list[str], named: str) -> None:
    from fixtures.spark import run_cli

    code, output, error = run_cli(["spark", "submit", "--master", "k8s://https://127.0.0.1:6443",
                                   "--conf", "spark.kubernetes.container.image=spark:4.3", *flags, "local:///a.py"])
    assert code == 2, output
    assert isinstance(error, ConfigError) and named in error.message


def test_a_queued_dra_app_with_a_selector_on_the_drivers_claim_is_refused() -> None:
    """Kueue cannot count a claim with a CEL selector (pkg/dra/claims.go, countDevicesPerClass): refused."""
    dra_conf = {"spark.kubeaccel.dra.enabled": "true", "spark.kubeaccel.queue": "batch",
                "spark.driver.resource.ve.amount": "1", "spark.driver.resource.ve.vendor": "nec.com",
                "spark.driver.resource.ve.discoveryScript": "/opt/kubeaccel/discover"}
    with pytest.raises(ConfigError) as info:
        resolve_gang({**dra_conf, "spark.kubeaccel.dra.driver.ve.numaNode": "1"})
    assert "spark.kubeaccel.dra.driver.ve.numaNode" in info.value.message and "Kueue" in info.value.message
    gang_spec = resolve_gang(dra_conf)  # no selector: Kueue counts the driver's devices
    assert gang_spec is not None and gang_spec.scheduler is Scheduler.KUEUE
    # the same selector without a queue (the core gang) is no concern of Kueue's
    native = {k: v for k, v in dra_conf.items() if k != "spark.kubeaccel.queue"}
    assert resolve_gang({**native, "spark.kubeaccel.gang.enabled": "true",
                         "spark.kubeaccel.dra.driver.ve.numaNode": "1"}) is not None
