"""Spec -> submit request: each field lands where the table says; what cannot be served is named; fuzzed specs
never crash the mapping.

Matrix: table of spec fields -> Spark conf key / flag conf / template path | unserved fields -> UnservedFieldError
naming them | kubeflow-shaped examples resolve through spark.model.resolve into the builder's manifests |
hypothesis: arbitrary specs map or fail with a ConfigError, never anything else.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
from fixtures.sparkapps import ALL_APPS, SPARK_PI, load
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kubeaccel.errors import ConfigError
from kubeaccel.operator import api, mapping
from kubeaccel.spark.builder import Generated, build

MASTER = "k8s://https://127.0.0.1:6443"
OWNER = {
    "apiVersion": api.API_VERSION,
    "kind": "SparkApplication",
    "name": "spark-pi",
    "uid": "u-1",
    "controller": True,
}


def _app(document: dict[str, Any], namespace: str = "team-a") -> api.SparkApplication:
    document = copy.deepcopy(document)
    document.setdefault("metadata", {}).update(namespace=namespace, uid="u-1")
    return api.SparkApplication.model_validate(document)


def _with(path: str, value: Any) -> dict[str, Any]:
    document = load(SPARK_PI)
    node = document["spec"]
    keys = path.split(".")
    for key in keys[:-1]:
        node = node.setdefault(key, {})
    node[keys[-1]] = value
    return document


CONF_TABLE = [
    ("image", "spark:9", "spark.kubernetes.container.image", "spark:9"),
    ("imagePullPolicy", "Always", "spark.kubernetes.container.image.pullPolicy", "Always"),
    ("imagePullSecrets", ["a", "b"], "spark.kubernetes.container.image.pullSecrets", "a,b"),
    ("sparkConf", {"spark.eventLog.enabled": "true"}, "spark.eventLog.enabled", "true"),
    ("hadoopConf", {"fs.s3a.endpoint": "http://s3"}, "spark.hadoop.fs.s3a.endpoint", "http://s3"),
    ("nodeSelector", {"zone": "a"}, "spark.kubernetes.node.selector.zone", "a"),
    ("memoryOverheadFactor", "0.2", "spark.kubernetes.memoryOverheadFactor", "0.2"),
    ("driver.coreLimit", "1200m", "spark.kubernetes.driver.limit.cores", "1200m"),
    ("driver.coreRequest", "500m", "spark.kubernetes.driver.request.cores", "500m"),
    ("executor.coreRequest", "250m", "spark.kubernetes.executor.request.cores", "250m"),
    ("driver.memoryOverhead", "256m", "spark.driver.memoryOverhead", "256m"),
    ("executor.image", "ex:1", "spark.kubernetes.executor.container.image", "ex:1"),
    ("driver.labels", {"team": "x"}, "spark.kubernetes.driver.label.team", "x"),
    ("executor.annotations", {"a/b": "c"}, "spark.kubernetes.executor.annotation.a/b", "c"),
    ("driver.envVars", {"FOO": "1"}, "spark.kubernetes.driverEnv.FOO", "1"),
    ("executor.envVars", {"FOO": "2"}, "spark.executorEnv.FOO", "2"),
    ("driver.serviceAccount", "sa", "spark.kubernetes.authenticate.driver.serviceAccountName", "sa"),
    ("executor.serviceAccount", "sx", "spark.kubernetes.authenticate.executor.serviceAccountName", "sx"),
    ("driver.javaOptions", "-Dx=1", "spark.driver.extraJavaOptions", "-Dx=1"),
    ("driver.schedulerName", "sched", "spark.kubernetes.driver.scheduler.name", "sched"),
    ("executor.nodeSelector", {"gpu": "y"}, "spark.kubernetes.executor.node.selector.gpu", "y"),
    ("driver.kubernetesMaster", "https://k", "spark.kubernetes.driver.master", "https://k"),
    ("driver.serviceLabels", {"s": "1"}, "spark.kubernetes.driver.service.label.s", "1"),
    ("executor.deleteOnTermination", False, "spark.kubernetes.executor.deleteOnTermination", "false"),
    ("driver.envSecretKeyRefs", {"PW": {"name": "s", "key": "k"}}, "spark.kubernetes.driver.secretKeyRef.PW", "s:k"),
    (
        "executor.secrets",
        [{"name": "g", "path": "/g", "secretType": "GCPServiceAccount"}],
        "spark.executorEnv.GOOGLE_APPLICATION_CREDENTIALS",
        "/g/key.json",
    ),
    ("executor.gpu", {"name": "nec.com/ve", "quantity": 2}, "spark.executor.resource.ve.amount", "2"),
    ("executor.gpu", {"name": "nec.com/ve", "quantity": 2}, "spark.executor.resource.ve.vendor", "nec.com"),
    ("dynamicAllocation", {"enabled": True, "maxExecutors": 5}, "spark.dynamicAllocation.maxExecutors", "5"),
    ("dynamicAllocation", {"enabled": True}, "spark.dynamicAllocation.shuffleTracking.enabled", "true"),
    ("batchScheduler", "volcano", mapping.GANG_ENABLED_KEY, "true"),
    ("batchScheduler", "kueue", mapping.GANG_SCHEDULER_KEY, "kueue"),
    ("batchSchedulerOptions", {"queue": "q1"}, mapping.QUEUE_KEY, "q1"),
]


@pytest.mark.parametrize("path, value, key, expected", CONF_TABLE, ids=[f"{p}->{k}" for p, _, k, _ in CONF_TABLE])
def test_field_becomes_conf(path: str, value: Any, key: str, expected: str) -> None:
    mapped = mapping.to_submission(_app(_with(path, value)), master=MASTER)
    assert mapped.request.conf[key] == expected


FLAG_TABLE = [
    ("driver.cores", 3, "spark.driver.cores", "3"),
    ("executor.memory", "2g", "spark.executor.memory", "2g"),
    ("executor.instances", 7, "spark.executor.instances", "7"),
    ("deps.packages", ["g:a:1", "g:b:2"], "spark.jars.packages", "g:a:1,g:b:2"),
    ("deps.excludePackages", ["g:c"], "spark.jars.excludes", "g:c"),
    ("deps.repositories", ["https://repo"], "spark.jars.repositories", "https://repo"),
]


@pytest.mark.parametrize("path, value, key, expected", FLAG_TABLE, ids=[p for p, *_ in FLAG_TABLE])
def test_field_becomes_flag(path: str, value: Any, key: str, expected: str) -> None:
    """As spark-submit's dedicated flags: they win over sparkConf."""
    document = _with(path, value)
    document["spec"]["sparkConf"] = {key: "overridden"}
    mapped = mapping.to_submission(_app(document), master=MASTER)
    assert mapped.request.flag_conf[key] == expected


def test_cli_inputs() -> None:
    document = _with("deps", {"jars": ["j1"], "files": ["f1"], "pyFiles": ["p.py"], "archives": ["a.zip#a"]})
    document["spec"]["arguments"] = ["1", "2"]
    request = mapping.to_submission(_app(document), master=MASTER).request
    assert (request.jars, request.files, request.py_files, request.archives) == (
        ("j1",),
        ("f1",),
        ("p.py",),
        ("a.zip#a",),
    )
    assert request.app_args == ("1", "2") and request.main_class == "org.apache.spark.examples.SparkPi"
    assert request.name == "spark-pi" and request.conf["spark.kubernetes.namespace"] == "team-a"
    assert request.conf["spark.kubernetes.driver.pod.name"] == "spark-pi-driver"


TEMPLATE_TABLE = [
    ("driver.tolerations", [{"key": "k", "operator": "Exists"}], "driver", ["spec", "tolerations", 0, "key"], "k"),
    ("executor.affinity", {"nodeAffinity": {}}, "executor", ["spec", "affinity"], {"nodeAffinity": {}}),
    ("driver.podSecurityContext", {"fsGroup": 185}, "driver", ["spec", "securityContext", "fsGroup"], 185),
    (
        "executor.securityContext",
        {"runAsUser": 1},
        "executor",
        ["spec", "containers", 0, "securityContext"],
        {"runAsUser": 1},
    ),
    (
        "driver.env",
        [{"name": "A", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}],
        "driver",
        ["spec", "containers", 0, "env", 0, "name"],
        "A",
    ),
    (
        "executor.envFrom",
        [{"configMapRef": {"name": "c"}}],
        "executor",
        ["spec", "containers", 0, "envFrom", 0],
        {"configMapRef": {"name": "c"}},
    ),
    ("driver.hostNetwork", True, "driver", ["spec", "hostNetwork"], True),
    ("executor.priorityClassName", "high", "executor", ["spec", "priorityClassName"], "high"),
    ("driver.sidecars", [{"name": "side", "image": "busybox"}], "driver", ["spec", "containers", 1, "name"], "side"),
    (
        "executor.initContainers",
        [{"name": "init", "image": "busybox"}],
        "executor",
        ["spec", "initContainers", 0, "name"],
        "init",
    ),
    (
        "driver.configMaps",
        [{"name": "cm", "path": "/etc/cm"}],
        "driver",
        ["spec", "volumes", 0, "configMap", "name"],
        "cm",
    ),
    (
        "sparkConfigMap",
        "sconf",
        "executor",
        ["spec", "containers", 0, "env", 0],
        {"name": "SPARK_CONF_DIR", "value": "/etc/spark/conf"},
    ),
    ("hadoopConfigMap", "hconf", "driver", ["spec", "volumes", 0, "configMap", "name"], "hconf"),
    ("driver.terminationGracePeriodSeconds", 5, "driver", ["spec", "terminationGracePeriodSeconds"], 5),
    ("batchSchedulerOptions", {"priorityClassName": "p"}, "executor", ["spec", "priorityClassName"], "p"),
]


@pytest.mark.parametrize("path, value, role, where, expected", TEMPLATE_TABLE, ids=[p for p, *_ in TEMPLATE_TABLE])
def test_field_goes_through_the_pod_template(path: str, value: Any, role: str, where: list[Any], expected: Any) -> None:
    mapped = mapping.to_submission(_app(_with(path, value)), master=MASTER)
    node: Any = mapped.driver_template if role == "driver" else mapped.executor_template
    for step in where:
        node = node[step]
    assert node == expected


def test_volumes_follow_their_mounts() -> None:
    document = _with("volumes", [{"name": "data", "emptyDir": {}}, {"name": "unused", "emptyDir": {}}])
    document["spec"]["executor"]["volumeMounts"] = [{"name": "data", "mountPath": "/data"}]
    del document["spec"]["driver"]["securityContext"]
    mapped = mapping.to_submission(_app(document), master=MASTER)
    assert mapped.executor_template is not None
    assert [v["name"] for v in mapped.executor_template["spec"]["volumes"]] == ["data"]
    assert mapped.executor_template["spec"]["containers"][0]["volumeMounts"] == [{"name": "data", "mountPath": "/data"}]
    assert mapped.driver_template is None  # nothing for the driver: no template at all


UNSERVED = [
    ("mode", "client", "spec.mode"),
    ("proxyUser", "bob", "spec.proxyUser"),
    ("monitoring", {"exposeDriverMetrics": True}, "spec.monitoring"),
    ("sparkUIOptions", {"servicePort": 80}, "spec.sparkUIOptions"),
    ("driverIngressOptions", [{"servicePort": 80, "servicePortName": "ui"}], "spec.driverIngressOptions"),
    ("batchSchedulerOptions", {"resources": {"cpu": "1"}}, "spec.batchSchedulerOptions.resources"),
    ("batchScheduler", "slurm", "spec.batchScheduler"),
    ("type", "Python", "spec.type"),
    ("executor.gpu", {"name": "gpu", "quantity": 1}, "spec.executor.gpu.name"),
    ("driver.volumeMounts", [{"name": "nope", "mountPath": "/x"}], "spec.driver.volumeMounts"),
    ("executor.secrets", [{"name": "s", "path": "/s", "secretType": "Odd"}], "spec.executor.secrets[s].secretType"),
    ("sparkConf", {"spark.kubernetes.driver.podTemplateFile": "/t.yaml"}, "spec.sparkConf"),
]


@pytest.mark.parametrize("path, value, named", UNSERVED, ids=[n for *_, n in UNSERVED])
def test_unserved_field_is_named(path: str, value: Any, named: str) -> None:
    document = _with(path, value)
    if path == "sparkConf":
        document["spec"]["driver"]["tolerations"] = [{"operator": "Exists"}]
    with pytest.raises(mapping.UnservedFieldError) as info:
        mapping.to_submission(_app(document), master=MASTER)
    assert info.value.field.startswith(named) and named in info.value.message


@pytest.mark.parametrize("name, text", ALL_APPS.items())
def test_examples_build_through_the_cli_builder(name: str, text: str) -> None:
    """The same ResolvedApp and builder as `spark submit`: the driver carries the owner and operator labels."""
    mapped = mapping.to_submission(_app(load(text)), master=MASTER, submission_id="sub-1", owner=OWNER)
    app = mapping.resolve_mapped(mapped)
    manifests = build(app.placed(None), Generated.fresh("spark"))
    pod = manifests.driver_pod
    assert pod["metadata"]["ownerReferences"] == [OWNER]
    assert pod["metadata"]["labels"][mapping.LABEL_SUBMISSION_ID] == "sub-1"
    assert pod["metadata"]["name"] == load(text)["metadata"]["name"] + "-driver"
    assert manifests.namespace == "team-a"


_names = st.text("abcxyz0-", min_size=1, max_size=8)
_maps = st.dictionaries(_names, _names, max_size=3)
_pod = st.fixed_dictionaries(
    {},
    optional={
        "cores": st.integers(1, 64),
        "memory": st.sampled_from(["512m", "1g", "2Gi", "7"]),
        "coreLimit": st.sampled_from(["1", "500m", "x"]),
        "labels": _maps,
        "annotations": _maps,
        "envVars": _maps,
        "nodeSelector": _maps,
        "serviceAccount": _names,
        "gpu": st.fixed_dictionaries(
            {"name": st.sampled_from(["nec.com/ve", "gpu", "a/b"]), "quantity": st.integers(0, 8)}
        ),
        "tolerations": st.lists(st.fixed_dictionaries({"operator": st.just("Exists")}), max_size=2),
        "instances": st.integers(0, 10),
    },
)
_spec = st.fixed_dictionaries(
    {
        "type": st.sampled_from(["Java", "Scala", "Python", "R"]),
        "mainApplicationFile": st.sampled_from(["local:///a.jar", "local:///a.py", "local:///a.R", "s3a://b/c.jar"]),
        "image": st.sampled_from(["spark:4", "img with space"]),
        "driver": _pod,
        "executor": _pod,
    },
    optional={
        "mainClass": st.sampled_from(["a.B", ""]),
        "sparkConf": st.dictionaries(
            st.sampled_from(["spark.executor.instances", "spark.x", "spark.driver.memory"]), _names, max_size=2
        ),
        "batchScheduler": st.sampled_from(["volcano", "kueue", "nope"]),
        "dynamicAllocation": st.fixed_dictionaries(
            {"enabled": st.booleans()}, optional={"maxExecutors": st.integers(0, 9)}
        ),
        "arguments": st.lists(st.text(max_size=5), max_size=3),
    },
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spec=_spec)
def test_any_spec_maps_or_fails_with_a_config_error(spec: dict[str, Any]) -> None:
    document = {"apiVersion": api.API_VERSION, "kind": "SparkApplication", "metadata": {"name": "fuzz"}, "spec": spec}
    spec["executor"].pop("instances", None) if "instances" in spec["driver"] else None
    spec["driver"].pop("instances", None)
    try:
        app = _app(document)
    except ValueError:
        return  # pydantic refuses it, as the CRD schema would at apply time
    try:
        mapped = mapping.to_submission(app, master=MASTER, submission_id="s", owner=OWNER)
        resolved = mapping.resolve_mapped(mapped)
    except ConfigError as exc:
        assert exc.message
        return
    build(resolved.placed(None), Generated.fresh("spark"))


@pytest.mark.parametrize(
    "message, fields",
    [
        ("no container image for the driver (set spark.kubernetes.container.image (or "
         "spark.kubernetes.driver.container.image))", ["spec.driver.image", "spec.image"]),
        ("spark.executor.memory='x' is not a size", ["spec.executor.memory"]),
        ("spark.dynamicAllocation.maxExecutors=... ", ["spec.dynamicAllocation"]),
        ("nothing here", []),
    ],
)  # fmt: skip
def test_cli_messages_name_the_spec_field(message: str, fields: list[str]) -> None:
    assert mapping.spec_fields_named(message) == fields


def test_missing_image_names_spec_image() -> None:
    document = load(SPARK_PI)
    del document["spec"]["image"]
    with pytest.raises(ConfigError) as info:
        mapping.resolve_mapped(mapping.to_submission(_app(document), master=MASTER))
    assert "spec.image" in mapping.spec_fields_named(info.value.message + (info.value.hint or ""))
