"""deploy/plugin: every manifest is valid Kubernetes 1.32 (kubernetes-validate, strict schema), the
DaemonSet keeps to least privilege, the ConfigMap's config is a valid daemon config, and the
Dockerfile's entrypoint agrees with the DaemonSet (config path, metrics port).

``least_privilege_problems`` is tested against mutated copies too, so the guard itself can fail.
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from kubeaccel.devices.config import build_backends, parse_config

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "plugin"
K8S_VERSION = "1.32"
ALLOWED_HOST_PATHS = {"/var/lib/kubelet/device-plugins", "/dev", "/sys"}
READ_ONLY_HOST_PATHS = {"/dev", "/sys"}


def documents() -> list[dict[str, Any]]:
    docs = []
    for path in sorted(DEPLOY.glob("*.yaml")):
        docs.extend(d for d in yaml.safe_load_all(path.read_text()) if d)
    return docs


def find(kind: str) -> dict[str, Any]:
    (doc,) = [d for d in documents() if d["kind"] == kind]
    return doc


def least_privilege_problems(daemonset: dict[str, Any]) -> list[str]:
    """Everything in the DaemonSet that grants more than the plugin needs."""
    problems = []
    pod = daemonset["spec"]["template"]["spec"]
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        if pod.get(key):
            problems.append(f"{key} is set")
    if pod.get("automountServiceAccountToken", True):
        problems.append("the service account token is mounted (the plugin never calls the API server)")
    if pod.get("priorityClassName") != "system-node-critical":
        problems.append("priorityClassName is not system-node-critical")
    if not pod.get("tolerations"):
        problems.append("no tolerations: tainted accelerator nodes would get no plugin")
    host_paths = {v["name"]: v["hostPath"]["path"] for v in pod.get("volumes", []) if "hostPath" in v}
    for name, path in host_paths.items():
        if path not in ALLOWED_HOST_PATHS:
            problems.append(f"volume {name} mounts host path {path}")
    for container in pod.get("initContainers", []) + pod["containers"]:
        where = f"container {container['name']}"
        sc = container.get("securityContext", {})
        if sc.get("privileged"):
            problems.append(f"{where} is privileged")
        if sc.get("allowPrivilegeEscalation", True):
            problems.append(f"{where} allows privilege escalation")
        if not sc.get("readOnlyRootFilesystem"):
            problems.append(f"{where} has a writable root file system")
        caps = sc.get("capabilities", {})
        if "ALL" not in caps.get("drop", []):
            problems.append(f"{where} does not drop all capabilities")
        if caps.get("add"):
            problems.append(f"{where} adds capabilities {caps['add']}")
        resources = container.get("resources", {})
        for part in ("requests", "limits"):
            if not {"cpu", "memory"} <= set(resources.get(part, {})):
                problems.append(f"{where} lacks cpu/memory {part}")
        for mount in container.get("volumeMounts", []):
            if host_paths.get(mount["name"]) in READ_ONLY_HOST_PATHS and not mount.get("readOnly"):
                problems.append(f"{where} mounts {host_paths[mount['name']]} writable")
    return problems


@pytest.mark.parametrize("doc", documents(), ids=lambda d: f"{d['kind']}/{d['metadata']['name']}")
def test_manifest_is_valid_kubernetes(doc: dict[str, Any]) -> None:
    kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_validation_rejects_a_broken_manifest() -> None:
    broken = copy.deepcopy(find("DaemonSet"))
    broken["spec"]["template"]["spec"]["containers"][0]["securityContext"]["privileged"] = "yes"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSION, strict=True)


def test_daemonset_keeps_to_least_privilege() -> None:
    assert least_privilege_problems(find("DaemonSet")) == []


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
    ds = copy.deepcopy(find("DaemonSet"))
    target: Any = ds["spec"]["template"]["spec"]
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    assert any(problem in p for p in least_privilege_problems(ds)), least_privilege_problems(ds)


def test_configmap_holds_a_valid_daemon_config(tmp_path: Path) -> None:
    config = parse_config(yaml.safe_load(find("ConfigMap")["data"]["plugin.yaml"]))
    assert [r.name for r in config.resources] == ["nec.com/ve", "example.com/serial"]
    # On a node without those devices the backends start and advertise nothing.
    backends = build_backends(config, root=tmp_path)
    try:
        assert [len(b.scan()) for b in backends] == [0, 0]
    finally:
        for b in backends:
            b.close()


def dockerfile_instruction(name: str) -> str:
    text = (DEPLOY / "Dockerfile").read_text()
    (line,) = [m.group(1) for m in re.finditer(rf"^{name}\s+(.+)$", text, re.MULTILINE)]
    return line


def test_dockerfile_entrypoint_matches_the_daemonset() -> None:
    entrypoint = json.loads(dockerfile_instruction("ENTRYPOINT"))
    assert entrypoint[:3] == ["kubeaccel", "plugin", "run"]
    config_file = Path(entrypoint[entrypoint.index("--config") + 1])
    container = find("DaemonSet")["spec"]["template"]["spec"]["containers"][0]
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert str(config_file.parent) == mounts["config"]
    assert config_file.name in find("ConfigMap")["data"]
    port = container["ports"][0]["containerPort"]
    assert dockerfile_instruction("EXPOSE") == str(port)
    assert {"name": "KUBEACCEL_METRICS_PORT", "value": str(port)} in container["env"]
