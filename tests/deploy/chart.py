"""Helpers for the chart tests: run the real Helm on deploy/helm/kubeaccel-device-plugin, and the
least-privilege guard every rendering of the DaemonSet must pass."""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

import yaml

from kubeaccel.demo.common import helm_binary

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "deploy" / "helm" / "kubeaccel-device-plugin"
K8S_VERSION = "1.37"  # the local cluster's (kubeaccel.cluster.spec); kubernetes-validate knows it
HELM = helm_binary()

ALLOWED_HOST_PATHS = {"/var/lib/kubelet/device-plugins", "/var/lib/kubelet/pod-resources", "/dev", "/sys",
                      "/var/run/cdi", "/etc/cdi"}
READ_ONLY_HOST_PATHS = {"/dev", "/sys", "/var/lib/kubelet/pod-resources"}


def helm(*args: str, stdin: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([HELM, *args], capture_output=True, text=True, input=stdin, timeout=120, check=False)
    if check and done.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed ({done.returncode}):\n{done.stderr}")
    return done


# What YAML may hold unescaped (YAML 1.2 "printable"); everything else in a JSON string goes as \uXXXX.
_NOT_YAML_PRINTABLE = re.compile("[^\t\n\r\x20-\x7e\x85\xa0-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def yaml_safe_json(values: Any) -> str:
    """Values as JSON that Helm's YAML parser reads back unchanged: every string quoted (YAML 1.1
    reads a bare y or n as a boolean, which PyYAML writes unquoted), characters beyond the BMP raw
    (Go's YAML refuses the surrogate-pair escapes json writes for them), and the characters YAML
    does not allow raw (C1 controls, DEL, noncharacters) escaped."""
    text = json.dumps(values, ensure_ascii=False)
    return _NOT_YAML_PRINTABLE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def template(values: dict[str, Any] | None = None, *extra: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """``helm template kubeaccel CHART -n kube-system`` with ``values`` as a values file on stdin."""
    return helm("template", "kubeaccel", str(CHART), "--namespace", "kube-system", "--values", "-", *extra,
                stdin=yaml_safe_json(values or {}), check=check)  # fmt: skip


def rendered(values: dict[str, Any] | None = None, *extra: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(template(values, *extra).stdout) if d]


def find(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    (doc,) = [d for d in docs if d["kind"] == kind]
    return doc


def least_privilege_problems(daemonset: dict[str, Any], allowed_host_paths: set[str] = ALLOWED_HOST_PATHS) -> list[str]:
    """Everything in the DaemonSet that grants more than the plugin needs (given the host paths it may mount)."""
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
        if path not in allowed_host_paths:
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


@cache
def image_builder() -> ModuleType:
    """deploy/plugin/build_image.py as a module: the image's constants and ``build()``."""
    spec = importlib.util.spec_from_file_location("plugin_build_image", REPO / "deploy/plugin/build_image.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
