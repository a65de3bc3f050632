"""The pure builder: Spark's driver pod, conf ConfigMap, headless Service and NetworkPolicy.

Matrix: JVM and Python apps; accelerators; node selector / service account / pull policy; pod
templates (container selection, sidecars, executor template ConfigMap); name-length fallbacks;
bad confs. Field-for-field agreement with the real spark-submit is test_reference.py's job.
"""

from __future__ import annotations

import dataclasses

import pytest

from kubeaccel.errors import ConfigError
from kubeaccel.spark import builder
from kubeaccel.spark.builder import Generated, build
from kubeaccel.spark.conf import SubmitRequest, parse_properties
from kubeaccel.spark.labels import app_name_label
from kubeaccel.spark.model import ResolvedApp, resolve

MASTER = "k8s://https://127.0.0.1:6443"
GEN = Generated(
    app_id="spark-0123",
    name_id="abc123def",
    service_id="svc999",
    config_map_id="cm777",
    local_dir_id="dir-uuid",
    submit_time_ms=1_700_000_000_000,
    spark_user="alice",
)


def _app(request: SubmitRequest, **fields: object) -> ResolvedApp:
    app = resolve(request).placed("team-a")
    return dataclasses.replace(app, **fields)  # type: ignore[arg-type]


def _build(request: SubmitRequest, **fields: object) -> builder.AppManifests:
    return build(_app(request, **fields), GEN)


def _jvm(**conf: str) -> SubmitRequest:
    base = {"spark.kubernetes.container.image": "spark:4.3"}
    return SubmitRequest(
        "local:///opt/app.jar",
        master=MASTER,
        name="My App",
        main_class="com.x.Main",
        app_args=("in", "out"),
        conf={**base, **{k.replace("__", "."): v for k, v in conf.items()}},
    )


def test_jvm_driver_pod() -> None:
    apps = _build(_jvm())
    pod = apps.driver_pod
    assert pod["metadata"]["name"] == "my-app-abc123def-driver"
    assert pod["metadata"]["labels"] == {
        "spark-version": "4.3.0",
        "spark-app-selector": "spark-0123",
        "spark-app-name": "my-app",
        "spark-role": "driver",
    }
    [container] = pod["spec"]["containers"]
    assert container["name"] == "spark-kubernetes-driver"
    assert container["args"] == [
        "driver",
        "--properties-file",
        "/opt/spark/conf/spark.properties",
        "--class",
        "com.x.Main",
        "local:///opt/app.jar",
        "in",
        "out",
    ]
    assert container["resources"] == {"requests": {"cpu": "1", "memory": "1408Mi"}, "limits": {"memory": "1408Mi"}}
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["SPARK_USER"] == "alice"
    assert env["SPARK_LOCAL_DIRS"] == "/var/data/spark-dir-uuid"
    assert env["SPARK_CONF_DIR"] == "/opt/spark/conf"
    assert [p["containerPort"] for p in container["ports"]] == [7078, 7079, 4040, 15002]
    assert pod["spec"]["restartPolicy"] == "Never"
    conf_volume = pod["spec"]["volumes"][-1]
    assert conf_volume["configMap"]["name"] == apps.config_map["metadata"]["name"] == "spark-drv-cm777-conf-map"


def test_driver_conf_tells_the_driver_where_it_is() -> None:
    apps = _build(_jvm())
    props = parse_properties(apps.config_map["data"]["spark.properties"])
    assert props["spark.driver.host"] == "my-app-abc123def-driver-svc.team-a.svc"
    assert props["spark.kubernetes.namespace"] == "team-a"
    assert props["spark.kubernetes.driver.pod.name"] == "my-app-abc123def-driver"
    assert props["spark.app.id"] == "spark-0123"
    assert props["spark.kubernetes.memoryOverheadFactor"] == "0.1"
    assert props["spark.jars"] == "local:///opt/app.jar"
    assert props == apps.driver_conf


def test_service_is_headless_and_selects_the_driver() -> None:
    apps = _build(_jvm(spark__kubernetes__driver__label__team="a"))
    spec = apps.service["spec"]
    assert spec["clusterIP"] == "None"
    assert spec["selector"] == apps.driver_pod["metadata"]["labels"]
    assert spec["selector"]["team"] == "a"
    assert apps.owned[0] is apps.service and apps.owned[-1] is apps.config_map


def test_python_app() -> None:
    request = SubmitRequest(
        "local:///opt/job.py",
        master=MASTER,
        app_args=("x",),
        conf={"spark.kubernetes.container.image": "img", "spark.driver.memory": "2g"},
    )
    apps = _build(request)
    container = apps.driver_pod["spec"]["containers"][0]
    assert container["args"][3:] == ["--class", "org.apache.spark.deploy.PythonRunner", "local:///opt/job.py", "x"]
    assert container["resources"]["requests"]["memory"] == "2867Mi"  # 0.4 overhead for non-JVM apps
    assert apps.driver_conf["spark.kubernetes.resource.type"] == "python"
    assert apps.driver_conf["spark.kubernetes.memoryOverheadFactor"] == "0.4"


def test_accelerators_node_selector_service_account_pull_policy() -> None:
    apps = _build(
        _jvm(
            **{
                "spark__driver__resource__ve__amount": "1",
                "spark__driver__resource__ve__vendor": "nec.com",
                "spark__driver__resource__ve__discoveryScript": "/opt/d.sh",
                "spark__kubernetes__node__selector__disk": "ssd",
                "spark__kubernetes__authenticate__driver__serviceAccountName": "spark",
                "spark__kubernetes__container__image__pullPolicy": "Always",
                "spark__kubernetes__driver__limit__cores": "2",
                "spark__kubernetes__container__image__pullSecrets": "reg1, reg2",
            }
        )
    )
    spec = apps.driver_pod["spec"]
    container = spec["containers"][0]
    assert container["resources"]["limits"] == {"memory": "1408Mi", "cpu": "2", "nec.com/ve": "1"}
    assert container["imagePullPolicy"] == "Always"
    assert spec["nodeSelector"] == {"disk": "ssd"}
    assert spec["serviceAccountName"] == spec["serviceAccount"] == "spark"
    assert spec["imagePullSecrets"] == [{"name": "reg1"}, {"name": "reg2"}]


def test_pod_templates() -> None:
    template = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "ignored", "labels": {"team": "ml"}},
        "spec": {
            "tolerations": [{"key": "accel", "operator": "Exists"}],
            "containers": [
                {"name": "sidecar", "image": "busybox"},
                {"name": "main", "env": [{"name": "FROM_TEMPLATE", "value": "1"}]},
            ],
        },
    }
    apps = _build(
        _jvm(spark__kubernetes__driver__podTemplateContainerName="main"),
        driver_template=template,
        executor_template_text="kind: Pod\n",
    )
    pod = apps.driver_pod
    assert pod["metadata"]["name"] == "my-app-abc123def-driver"
    assert pod["metadata"]["labels"]["team"] == "ml"
    assert [c["name"] for c in pod["spec"]["containers"]] == ["sidecar", "main"]
    assert pod["spec"]["containers"][1]["env"][0] == {"name": "FROM_TEMPLATE", "value": "1"}
    assert pod["spec"]["tolerations"] == [{"key": "accel", "operator": "Exists"}]
    [template_map] = apps.extra_config_maps
    assert template_map["data"] == {"podspec-configmap-key": "kind: Pod\n"}
    assert pod["spec"]["volumes"][0]["configMap"]["name"] == template_map["metadata"]["name"]
    assert (
        apps.driver_conf["spark.kubernetes.executor.podTemplateFile"] == "/opt/spark/pod-template/pod-spec-template.yml"
    )
    assert template["metadata"]["name"] == "ignored"  # the caller's template is not modified


def test_long_names_fall_back_for_the_service() -> None:
    request = SubmitRequest(
        "local:///a.jar",
        master=MASTER,
        name="x" * 70,
        main_class="a.B",
        conf={"spark.kubernetes.container.image": "img"},
    )
    apps = _build(request)
    assert apps.service["metadata"]["name"] == "spark-svc999-driver-svc"
    assert len(apps.driver_pod["metadata"]["labels"]["spark-app-name"]) <= 63


@pytest.mark.parametrize(("name", "label"), [("My_App.1", "my-app-1"), ("--x--", "x"), ("ÄÖ job", "job")])
def test_app_name_label(name: str, label: str) -> None:
    assert app_name_label(name) == label


@pytest.mark.parametrize(
    ("conf", "words"),
    [
        ({"spark.kubernetes.container.image": ""}, "no container image"),
        ({"spark.kubernetes.container.image.pullPolicy": "Sometimes"}, "pullPolicy"),
        ({"spark.driver.port": "http"}, "not a whole number from 1 to 65535"),
        ({"spark.ui.port": "70000"}, "not a whole number from 1 to 65535"),
        ({"spark.kubernetes.namespace": "../namespaces/other"}, "not a DNS label"),
        ({"spark.kubernetes.driver.pod.name": "Bad_Name"}, "not a DNS subdomain"),
        ({"spark.kubernetes.local.dirs.tmpfs": "yes"}, "not true or false"),
        ({"spark.executor.resource.gpu.amount": "1"}, "vendor was not specified"),
    ],
)
def test_bad_confs(conf: dict[str, str], words: str) -> None:
    request = _jvm()
    request = SubmitRequest(request.app_resource, master=MASTER, main_class="a.B", conf={**request.conf, **conf})
    with pytest.raises(ConfigError, match=words):
        _build(request)


# ---- each object alone: one function per object ----


def test_each_object_is_built_alone_and_equals_what_build_assembles() -> None:
    app = _app(_jvm(), executor_template_text="kind: Pod\n")
    whole = build(app, GEN)
    assert builder.driver_pod(app, GEN) == whole.driver_pod
    assert builder.conf_config_map(app, GEN) == whole.config_map
    assert builder.service(app, GEN) == whole.service
    assert builder.network_policy(app, GEN) == whole.network_policy
    assert [builder.executor_template_config_map(app, GEN)] == whole.extra_config_maps
    assert builder.driver_conf(app, GEN) == whole.driver_conf


def test_network_policy_admits_only_the_apps_own_pods() -> None:
    policy = builder.network_policy(_app(_jvm()), GEN)
    assert policy["metadata"]["name"] == "my-app-abc123def-policy"
    own = {"spark-app-selector": "spark-0123"}
    assert policy["spec"]["podSelector"]["matchLabels"] == {"spark-role": "executor", **own}
    assert policy["spec"]["ingress"] == [{"from": [{"podSelector": {"matchLabels": own}}]}]


def test_service_ports_follow_the_port_confs() -> None:
    service = builder.service(_app(_jvm(spark__driver__port="9000", spark__ui__port="9001")), GEN)
    assert [(p["name"], p["port"]) for p in service["spec"]["ports"]] == [
        ("driver-rpc-port", 9000),
        ("blockmanager", 7079),
        ("spark-ui", 9001),
        ("spark-connect", 15002),
    ]


def test_conf_config_map_carries_the_namespace_and_is_immutable() -> None:
    config_map = builder.conf_config_map(_app(_jvm()), GEN)
    assert config_map["immutable"] is True
    assert config_map["data"]["spark.kubernetes.namespace"] == "team-a"
    assert config_map["data"]["spark.properties"].startswith("#Java properties built from Kubernetes config map")


def test_no_executor_template_no_template_config_map() -> None:
    assert builder.executor_template_config_map(_app(_jvm()), GEN) is None


def test_an_unplaced_app_cannot_be_built() -> None:
    with pytest.raises(ValueError, match="placed"):
        build(resolve(_jvm()), GEN)
