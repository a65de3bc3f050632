"""The Helm chart deploy/helm/kubeaccel-device-plugin, with the real Helm (built from its Go module
by scripts/bootstrap.d/40-helm.sh): ``helm lint``; ``helm template`` validated against the Kubernetes
1.37 schema (kubernetes-validate, strict) with the default and with every value set; each value
reaching the manifest; the least-privilege guard on every rendering; bad values refused by
values.schema.json with the key named (hypothesis over keys and wrong values), and every config the
daemon accepts accepted by the chart and handed to the daemon unchanged.

The chart on a real cluster (install, upgrade, uninstall, least privilege, CDI) is in
tests/deploy/test_helm_real_node.py.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from deploy.chart import CHART, HELM, K8S_VERSION, REPO, find, helm, least_privilege_problems, rendered, template
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kubeaccel.demo.common import HELM_VERSION
from kubeaccel.devices.config import parse_config
from kubeaccel.errors import ConfigError

FULL: dict[str, Any] = {
    "image": {"repository": "registry.example.com/accel/device-plugin", "tag": "1.2.3", "pullPolicy": "Always"},
    "imagePullSecrets": [{"name": "pull"}],
    "config": {"resources": [
        {"name": "nec.com/ve", "backend": "ve", "cdi": True},
        {"name": "example.com/serial", "backend": "generic", "paths": ["/dev/ttyUSB*"], "shareCount": 2},
        {"name": "nvidia.com/gpu", "backend": "nvidia", "optional": True, "replicas": 2},
    ]},
    "kubeletDir": "/data/kubelet/",
    "podResourcesDir": "/data/kubelet/pod-resources",
    "cdi": {"specDir": "/etc/cdi"},
    "logLevel": "debug",
    "metrics": {"enabled": True, "port": 9500},
    "serviceMonitor": {"enabled": True, "interval": "15s", "scrapeTimeout": "5s", "labels": {"release": "prom"}},
    "priorityClassName": "system-node-critical",
    "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%"}},
    "tolerations": [{"key": "example.com/dedicated", "operator": "Exists", "effect": "NoSchedule"}],
    "nodeSelector": {"accel.example.com/present": "true"},
    "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
        {"matchExpressions": [{"key": "type", "operator": "NotIn", "values": ["kwok"]}]}]}}},
    "resources": {"requests": {"cpu": "20m", "memory": "64Mi"}, "limits": {"cpu": 1, "memory": "256Mi"}},
    "podAnnotations": {"example.com/owner": "accel-team"},
    "podLabels": {"team": "accel"},
}  # fmt: skip


def container(docs: list[dict[str, Any]]) -> dict[str, Any]:
    return find(docs, "DaemonSet")["spec"]["template"]["spec"]["containers"][0]  # type: ignore[no-any-return]


def test_helm_is_the_version_bootstrap_builds() -> None:
    version = helm("version", "--template", "{{.Version}}").stdout
    assert version == f"v{HELM_VERSION}"
    script = (REPO / "scripts/bootstrap.d/40-helm.sh").read_text()
    assert re.search(r"^HELM_VERSION=\$\{HELM_VERSION:-([0-9.]+)\}$", script, re.MULTILINE).group(1) == HELM_VERSION  # type: ignore[union-attr]
    assert Path(HELM).name == "helm"


@pytest.mark.parametrize("values", [{}, FULL], ids=["defaults", "every-value"])
def test_chart_lints(values: dict[str, Any], tmp_path: Path) -> None:
    (tmp_path / "values.yaml").write_text(yaml.safe_dump(values))
    done = helm("lint", str(CHART), "--strict", "--values", str(tmp_path / "values.yaml"))
    assert "0 chart(s) failed" in done.stdout


@pytest.mark.parametrize("values", [{}, FULL], ids=["defaults", "every-value"])
def test_rendering_is_valid_kubernetes_and_least_privileged(values: dict[str, Any]) -> None:
    docs = rendered(values)
    for doc in docs:
        if doc["kind"] == "ServiceMonitor":  # a CRD: not in the Kubernetes schema (checked below)
            continue
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    kubelet_dir = values.get("kubeletDir", "/var/lib/kubelet").rstrip("/")
    spec_dir = values.get("cdi", {}).get("specDir", "/var/run/cdi")
    pod_resources = values.get("podResourcesDir", "/var/lib/kubelet/pod-resources")
    allowed = {f"{kubelet_dir}/device-plugins", "/dev", "/sys", spec_dir, pod_resources}
    assert least_privilege_problems(find(docs, "DaemonSet"), allowed) == []


def test_defaults_serve_ve_with_an_optional_nvidia_resource() -> None:
    docs = rendered()
    config = parse_config(yaml.safe_load(find(docs, "ConfigMap")["data"]["plugin.yaml"]))
    assert [(r.name, r.backend, r.optional) for r in config.resources] == [
        ("nec.com/ve", "ve", False),
        ("nvidia.com/gpu", "nvidia", True),
    ]
    assert {d["kind"] for d in docs} == {"ConfigMap", "DaemonSet"}  # no Service/ServiceMonitor by default
    assert container(docs)["image"] == "docker.io/kubeaccel/device-plugin:0.1.0"  # the appVersion
    assert all(d["metadata"]["name"] == "kubeaccel-device-plugin" for d in docs)


def test_every_value_reaches_the_manifest() -> None:
    docs = rendered(FULL)
    ds = find(docs, "DaemonSet")
    pod = ds["spec"]["template"]["spec"]
    c = container(docs)
    assert c["image"] == "registry.example.com/accel/device-plugin:1.2.3" and c["imagePullPolicy"] == "Always"
    assert pod["imagePullSecrets"] == FULL["imagePullSecrets"]
    assert yaml.safe_load(find(docs, "ConfigMap")["data"]["plugin.yaml"]) == FULL["config"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["device-plugins"]["hostPath"]["path"] == "/data/kubelet/device-plugins"
    assert volumes["cdi"]["hostPath"] == {"path": "/etc/cdi", "type": "DirectoryOrCreate"}
    mounts = {m["name"]: m for m in c["volumeMounts"]}
    assert mounts["cdi"]["mountPath"] == "/etc/cdi" and not mounts["cdi"].get("readOnly")
    assert volumes["pod-resources"]["hostPath"] == {"path": "/data/kubelet/pod-resources", "type": "Directory"}
    # where the daemon's --pod-resources-socket looks by default, read-only
    assert mounts["pod-resources"] == {"name": "pod-resources", "mountPath": "/var/lib/kubelet/pod-resources",
                                       "readOnly": True}
    env = {e["name"]: e["value"] for e in c["env"]}
    assert env == {
        "KUBEACCEL_METRICS_PORT": "9500",
        "KUBEACCEL_METRICS_ADDR": "0.0.0.0",
        "KUBEACCEL_CDI_DIR": "/etc/cdi",
    }
    assert c["args"] == ["--log-level", "debug"]
    assert c["ports"] == [{"name": "metrics", "containerPort": 9500, "protocol": "TCP"}]
    assert c["resources"] == FULL["resources"]
    assert pod["priorityClassName"] == "system-node-critical"
    assert ds["spec"]["updateStrategy"] == FULL["updateStrategy"]
    assert pod["tolerations"] == FULL["tolerations"]
    assert pod["nodeSelector"] == FULL["nodeSelector"] and pod["affinity"] == FULL["affinity"]
    meta = ds["spec"]["template"]["metadata"]
    assert meta["labels"]["team"] == "accel" and meta["annotations"]["example.com/owner"] == "accel-team"
    assert meta["annotations"]["prometheus.io/port"] == "9500"
    service, monitor = find(docs, "Service"), find(docs, "ServiceMonitor")
    assert service["spec"]["clusterIP"] == "None"
    assert service["spec"]["ports"] == [{"name": "metrics", "port": 9500, "targetPort": "metrics", "protocol": "TCP"}]
    assert service["spec"]["selector"].items() <= meta["labels"].items()
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert monitor["metadata"]["labels"]["release"] == "prom"
    assert monitor["spec"]["endpoints"] == [{"port": "metrics", "path": "/metrics", "interval": "15s",
                                             "scrapeTimeout": "5s", "honorLabels": True, "relabelings": [
                                                 {"sourceLabels": ["__meta_kubernetes_pod_node_name"],
                                                  "targetLabel": "node"}]}]  # fmt: skip
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": ["kube-system"]}


def test_without_metrics_nothing_listens_and_a_service_monitor_is_refused() -> None:
    c = container(rendered({"metrics": {"enabled": False}}))
    assert "ports" not in c and "livenessProbe" not in c and "env" in c and c["env"] in (None, [])
    done = template({"metrics": {"enabled": False}, "serviceMonitor": {"enabled": True}}, check=False)
    assert done.returncode != 0 and "serviceMonitor.enabled needs metrics.enabled" in done.stderr


def test_the_pod_resources_dir_is_mounted_by_default_and_only_with_metrics() -> None:
    """Without it kubeaccel_device_allocated (and `kubeaccel devices`' holders) stayed empty under Helm."""
    from kubeaccel.plugin.paths import DEFAULT_POD_RESOURCES_SOCKET

    def mounts(values: dict[str, Any]) -> dict[str, str]:
        return {m["name"]: m["mountPath"] for m in container(rendered(values))["volumeMounts"]}

    assert mounts({})["pod-resources"] == str(DEFAULT_POD_RESOURCES_SOCKET.parent)
    assert "pod-resources" not in mounts({"metrics": {"enabled": False}})
    assert "pod-resources" not in mounts({"podResourcesDir": ""})


def test_cdi_spec_dir_is_mounted_only_when_a_resource_uses_cdi() -> None:
    plain = find(rendered(), "DaemonSet")["spec"]["template"]["spec"]
    assert "cdi" not in {v["name"] for v in plain["volumes"]}
    with_cdi = {"config": {"resources": [{"name": "example.com/sim", "backend": "simulated", "count": 1, "cdi": True}]}}
    pod = find(rendered(with_cdi), "DaemonSet")["spec"]["template"]["spec"]
    assert {"name": "cdi", "hostPath": {"path": "/var/run/cdi", "type": "DirectoryOrCreate"}} in pod["volumes"]


def test_nvidia_cdi_sees_nvidias_own_spec_and_the_driver_root_read_only() -> None:
    nvidia = {"name": "nvidia.com/gpu", "backend": "nvidia", "cdi": True, "driverRoot": "/driver-root",
              "hostDriverRoot": "/"}
    docs = rendered({"config": {"resources": [nvidia]}, "nvidiaDriverRoot": {"hostPath": "/"}})
    pod = find(docs, "DaemonSet")["spec"]["template"]["spec"]
    volumes = {v["name"]: v.get("hostPath") for v in pod["volumes"]}
    mounts = {m["name"]: m for m in container(docs)["volumeMounts"]}
    assert volumes["nvidia-driver-root"] == {"path": "/", "type": "Directory"}
    assert mounts["nvidia-driver-root"] == {"name": "nvidia-driver-root", "mountPath": "/driver-root", "readOnly": True}
    # NVIDIA's own spec in /etc/cdi is seen (read-only) so that Allocate names it instead of writing ours.
    assert volumes["cdi-etc"]["path"] == "/etc/cdi" and mounts["cdi-etc"]["readOnly"] is True
    # Without a hostPath nothing of the host's driver is mounted.
    plain = find(rendered({"config": {"resources": [nvidia]}}), "DaemonSet")["spec"]["template"]["spec"]
    assert "nvidia-driver-root" not in {v["name"] for v in plain["volumes"]}


def test_a_changed_config_changes_the_pod_template() -> None:
    def checksum(values: dict[str, Any]) -> str:
        return str(
            find(rendered(values), "DaemonSet")["spec"]["template"]["metadata"]["annotations"]["checksum/config"]
        )

    two = {"config": {"resources": [{"name": "example.com/sim", "backend": "simulated", "count": 2}]}}
    three = {"config": {"resources": [{"name": "example.com/sim", "backend": "simulated", "count": 3}]}}
    assert checksum(two) == checksum(two) != checksum(three)


def test_the_schema_is_generated_from_the_daemons_models() -> None:
    done = subprocess.run([sys.executable, str(REPO / "scripts/helm/gen_schema.py"), "--check"],
                          capture_output=True, text=True, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr


# --- bad values: refused by the schema, with the key named --------------------------------------

# (values path, a wrong value) for every kind of chart key; the error must name the path.
BAD_VALUES: list[tuple[tuple[str | int, ...], Any]] = [
    (("image", "repository"), ""),
    (("image", "tag"), 12),
    (("image", "pullPolicy"), "Sometimes"),
    (("image", "tagg"), "x"),
    (("kubeletDir",), "var/lib/kubelet"),
    (("podResourcesDir",), "pod-resources"),
    (("cdi", "specDir"), "relative"),
    (("logLevel",), "verbose"),
    (("metrics", "port"), 0),
    (("metrics", "port"), 70000),
    (("metrics", "port"), "9434"),
    (("metrics", "enabled"), "yes"),
    (("serviceMonitor", "interval"), "often"),
    (("serviceMonitor", "labels"), {"a": 1}),
    (("updateStrategy", "type"), "Recreate"),
    (("tolerations",), {"key": "x"}),
    (("nodeSelector",), {"zone": 1}),
    (("affinity",), []),
    (("resources", "limits", "memory"), "lots"),
    (("resources", "limitz"), {}),
    (("priorityClassName",), 5),
    (("podLabels",), ["a"]),
    (("replicas",), 3),
    (("config", "resources"), []),
    (("config", "resources", 0, "name"), "Not A Name"),
    (("config", "resources", 0, "name"), "kubernetes.io/ve"),
    (("config", "resources", 0, "backend"), "quantum"),
    (("config", "resources", 0, "replicas"), 0),
    (("config", "resources", 0, "cdi"), "true"),
    (("config", "resources", 0, "veosSocketDir"), 7),
    (("config", "resources", 0, "count"), 4),  # a simulated key on a ve resource
    (("config", "resources", 1, "visibleDevices"), "serial"),
    (("config", "resources", 1, "optional"), "maybe"),
    (("config", "versión"), "v1"),
]


def _with(path: tuple[str | int, ...], value: Any) -> dict[str, Any]:
    """The chart's default values with ``value`` at ``path`` (lists taken over whole, as a values file does)."""
    values: dict[str, Any] = yaml.safe_load((CHART / "values.yaml").read_text())
    target: Any = values
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    top = path[0]
    return {top: values[top]} if isinstance(top, str) else values


def _pointer(path: tuple[str | int, ...]) -> str:
    return "/" + "/".join(str(p) for p in path)


def _assert_refused(path: tuple[str | int, ...], value: Any) -> None:
    done = template(_with(path, value), check=False)
    assert done.returncode == 1, f"{path}={value!r} was accepted"
    assert "values don't meet the specifications of the schema" in done.stderr
    # The error names the key (or a key below it; for an unknown key, its parent and the key's name).
    parent, key = _pointer(path[:-1]) if len(path) > 1 else "", str(path[-1])
    named = f"at '{_pointer(path)}" in done.stderr or (f"at '{parent}'" in done.stderr and key in done.stderr)
    assert named, done.stderr
    assert "panic" not in done.stderr and "goroutine" not in done.stderr


@pytest.mark.parametrize(("path", "value"), BAD_VALUES, ids=str)
def test_bad_values_are_refused_naming_the_key(path: tuple[str | int, ...], value: Any) -> None:
    _assert_refused(path, value)


WRONG = st.one_of(st.integers(-5, 70000), st.text(max_size=8), st.booleans(), st.lists(st.integers(), max_size=2),
                  st.dictionaries(st.sampled_from(["x", "y"]), st.integers(), max_size=1))  # fmt: skip
TYPED_KEYS: dict[tuple[str | int, ...], type | tuple[type, ...]] = {
    ("metrics", "port"): int,
    ("metrics", "enabled"): bool,
    ("serviceMonitor", "enabled"): bool,
    ("logLevel",): str,
    ("image", "pullPolicy"): str,
    ("config", "resources", 0, "replicas"): int,
    ("config", "resources", 1, "optional"): bool,
    ("nodeSelector",): dict,
    ("tolerations",): list,
}


@pytest.mark.slow  # a long property run: in `make test`, not `make unit`
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(key=st.sampled_from(sorted(TYPED_KEYS, key=str)), value=WRONG)
def test_values_of_the_wrong_type_are_refused_naming_the_key(key: tuple[str | int, ...], value: Any) -> None:
    wanted = TYPED_KEYS[key]
    if isinstance(value, wanted) and not (wanted is int and isinstance(value, bool)):
        return  # the right type: range and enum checks are covered above
    _assert_refused(key, value)


# --- every config the daemon accepts, the chart accepts and passes on unchanged -----------------

NAMES = st.from_regex(r"\A[a-z]{1,8}(\.[a-z]{1,5})?\.(com|io|org)/[a-z][a-z0-9-]{0,10}[a-z0-9]\Z")
COMMON = {"replicas": st.integers(1, 8), "cdi": st.booleans(), "optional": st.booleans()}
BACKEND_KEYS: dict[str, dict[str, st.SearchStrategy[Any]]] = {
    "simulated": {"count": st.integers(0, 64), "numaNodes": st.integers(1, 4), "idPrefix": st.from_regex(
        r"\A[a-z][a-z0-9]{0,6}\Z"), "stateFile": st.just("/run/sim/state.json")},
    "generic": {"paths": st.lists(st.sampled_from(["/dev/ttyUSB*", "/dev/fpga*"]), min_size=1, max_size=2),
                "shareCount": st.integers(1, 4), "permissions": st.sampled_from(["rw", "r", "rwm"])},
    "ve": {"veosSocketDir": st.just("/var/opt/nec/ve/veos"), "pollIntervalSeconds": st.floats(0.01, 5)},
    "nvidia": {"visibleDevices": st.sampled_from(["index", "uuid"]), "ignoredXids": st.lists(st.integers(1, 200),
               max_size=3)},
}  # fmt: skip
REQUIRED = {"simulated": {"count"}, "generic": {"paths"}}


@st.composite
def resource_entries(draw: st.DrawFn) -> dict[str, Any]:
    backend = draw(st.sampled_from(sorted(BACKEND_KEYS)))
    entry: dict[str, Any] = {"name": draw(NAMES), "backend": backend}
    for key, strategy in {**COMMON, **BACKEND_KEYS[backend]}.items():
        if key in REQUIRED.get(backend, ()) or draw(st.booleans()):
            entry[key] = draw(strategy)
    return entry


@pytest.mark.slow  # a long property run: in `make test`, not `make unit`
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(entries=st.lists(resource_entries(), min_size=1, max_size=4, unique_by=lambda e: e["name"]))
def test_configs_the_daemon_accepts_pass_the_chart_unchanged(entries: list[dict[str, Any]]) -> None:
    config = {"resources": entries}
    try:
        parse_config(config)
    except ConfigError:
        return  # rules beyond a schema (e.g. replicas with shareCount): the daemon has the last word
    docs = rendered({"config": config})
    assert yaml.safe_load(find(docs, "ConfigMap")["data"]["plugin.yaml"]) == config
