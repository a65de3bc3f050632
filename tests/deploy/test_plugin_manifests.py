"""deploy/plugin/daemonset.yaml, the plain manifest for ``kubectl apply`` users: it is the Helm chart
rendered with its defaults (and current), every document is valid Kubernetes 1.37 (kubernetes-validate,
strict), the DaemonSet keeps to least privilege, the ConfigMap's config is a valid daemon config,
and the image's entrypoint agrees with the DaemonSet (config path, metrics port).

``least_privilege_problems`` is tested against mutated copies too, so the guard itself can fail.
"""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from deploy.chart import K8S_VERSION, REPO, find, image_builder, least_privilege_problems

from kubeaccel.devices.config import build_backends, parse_config

MANIFEST = REPO / "deploy" / "plugin" / "daemonset.yaml"


def documents() -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(MANIFEST.read_text()) if d]


def test_manifest_is_the_chart_rendered_with_its_defaults() -> None:
    done = subprocess.run([sys.executable, str(REPO / "scripts/helm/render_manifest.py"), "--check"],
                          capture_output=True, text=True, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("doc", documents(), ids=lambda d: f"{d['kind']}/{d['metadata']['name']}")
def test_manifest_is_valid_kubernetes(doc: dict[str, Any]) -> None:
    kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_validation_rejects_a_broken_manifest() -> None:
    broken = copy.deepcopy(find(documents(), "DaemonSet"))
    broken["spec"]["template"]["spec"]["containers"][0]["securityContext"]["privileged"] = "yes"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSION, strict=True)


def test_daemonset_keeps_to_least_privilege() -> None:
    assert least_privilege_problems(find(documents(), "DaemonSet")) == []


@pytest.mark.parametrize(
    ("path", "value", "problem"),
    [
        (("containers", 0, "securityContext", "privileged"), True, "is privileged"),
        (("containers", 0, "securityContext", "allowPrivilegeEscalation"), True, "privilege escalation"),
        (("containers", 0, "securityContext", "readOnlyRootFilesystem"), False, "writable root"),
        (("containers", 0, "securityContext", "capabilities", "add"), ["SYS_ADMIN"], "adds capabilities"),
        (("containers", 0, "securityContext", "capabilities", "drop"), [], "does not drop"),
        (("hostNetwork",), True, "hostNetwork"),
        (("priorityClassName",), "default", "priorityClassName"),
        (("volumes", 2, "hostPath", "path"), "/", "mounts host path /"),
        (("containers", 0, "volumeMounts", 2, "readOnly"), False, "mounts /dev writable"),
        (("containers", 0, "resources", "limits"), {}, "lacks cpu/memory limits"),
    ],
)
def test_least_privilege_guard_catches_escalations(path: tuple[str | int, ...], value: object, problem: str) -> None:
    ds = copy.deepcopy(find(documents(), "DaemonSet"))
    target: Any = ds["spec"]["template"]["spec"]
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    assert any(problem in p for p in least_privilege_problems(ds)), least_privilege_problems(ds)


def test_configmap_holds_a_valid_daemon_config(tmp_path: Path) -> None:
    config = parse_config(yaml.safe_load(find(documents(), "ConfigMap")["data"]["plugin.yaml"]))
    assert [(r.name, r.optional) for r in config.resources] == [("nec.com/ve", False), ("nvidia.com/gpu", True)]
    # On a node without VEs or the NVIDIA driver: the ve backend starts and advertises nothing, the
    # optional nvidia resource is skipped.
    backends = build_backends(config, root=tmp_path)
    try:
        assert [b.resource_name for b in backends] == ["nec.com/ve"]
        assert [len(b.scan()) for b in backends] == [0]
    finally:
        for b in backends:
            b.close()


def test_image_entrypoint_matches_the_daemonset() -> None:
    builder = image_builder()
    config_file = Path(builder.CONFIG_PATH)
    assert builder.ENTRYPOINT[-2:] == ("--config", str(config_file))
    container = find(documents(), "DaemonSet")["spec"]["template"]["spec"]["containers"][0]
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert str(config_file.parent) == mounts["config"]
    assert config_file.name in find(documents(), "ConfigMap")["data"]
    port = container["ports"][0]["containerPort"]
    assert port == builder.METRICS_PORT
    assert {"name": "KUBEACCEL_METRICS_PORT", "value": str(port)} in container["env"]
