"""Simulated nodes: the Node objects kwok adopts and the pod lifecycle stages it plays on them.

A pod bound to a kwok node becomes Running at once. It finishes when annotated
``kubeaccel.io/kwok-finish: Succeeded`` (or ``Failed``), at creation or later
(``kubectl annotate pod P kubeaccel.io/kwok-finish=Succeeded``), so tests control when pods end.
A pod owned by a Job finishes by itself, as on a real node.
"""

from __future__ import annotations

from typing import Any

import yaml

# kwok adopts only nodes carrying this annotation, so a real kubelet's node in the same cluster is left alone.
MANAGED_ANNOTATION = "kwok.x-k8s.io/node"
MANAGED_VALUE = "fake"
FINISH_ANNOTATION = "kubeaccel.io/kwok-finish"
NODE_TYPE_LABEL = "type"
NODE_TYPE = "kwok"
# Simulated nodes carry this taint-free marker label so workloads can target or avoid them.
SIMULATED_LABEL = "kubeaccel.io/simulated"


def node_manifest(name: str, resources: dict[str, str]) -> dict[str, Any]:
    """A Node whose capacity and allocatable are ``resources`` (kwok keeps what the status says)."""
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "annotations": {MANAGED_ANNOTATION: MANAGED_VALUE, "node.alpha.kubernetes.io/ttl": "0"},
            "labels": {
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                NODE_TYPE_LABEL: NODE_TYPE,
                SIMULATED_LABEL: "true",
            },
        },
        "spec": {},
        "status": {
            "capacity": dict(resources),
            "allocatable": dict(resources),
        },
    }


_CONTAINERS_RUNNING = """\
{{ $now := Now }}
conditions:
- {type: Initialized, status: "True", lastTransitionTime: {{ $now | Quote }}}
- {type: Ready, status: "True", lastTransitionTime: {{ $now | Quote }}}
- {type: ContainersReady, status: "True", lastTransitionTime: {{ $now | Quote }}}
- {type: PodScheduled, status: "True", lastTransitionTime: {{ $now | Quote }}}
containerStatuses:
{{ range .spec.containers }}
- name: {{ .name | Quote }}
  image: {{ .image | Quote }}
  ready: true
  started: true
  restartCount: 0
  state: {running: {startedAt: {{ $now | Quote }}}}
{{ end }}
hostIP: {{ NodeIPWith .spec.nodeName | Quote }}
podIP: {{ PodIPWith .spec.nodeName ( or .spec.hostNetwork false ) ( or .metadata.uid "" ) \
( or .metadata.name "" ) ( or .metadata.namespace "" ) | Quote }}
phase: Running
startTime: {{ $now | Quote }}
"""


def _containers_terminated(phase: str, exit_code: int, reason: str) -> str:
    return f"""\
{{{{ $now := Now }}}}
conditions:
- {{type: Ready, status: "False", reason: PodCompleted, lastTransitionTime: {{{{ $now | Quote }}}}}}
- {{type: ContainersReady, status: "False", reason: PodCompleted, lastTransitionTime: {{{{ $now | Quote }}}}}}
containerStatuses:
{{{{ range .spec.containers }}}}
- name: {{{{ .name | Quote }}}}
  image: {{{{ .image | Quote }}}}
  ready: false
  started: false
  restartCount: 0
  state: {{terminated: {{exitCode: {exit_code}, reason: {reason}, finishedAt: {{{{ $now | Quote }}}}}}}}
{{{{ end }}}}
phase: {phase}
"""


def _stage(
    name: str, expressions: list[dict[str, Any]], next_: dict[str, Any], kind: str = "Pod",
    delay_ms: tuple[int, int] | None = None,
) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "resourceRef": {"apiGroup": "v1", "kind": kind},
        "selector": {"matchExpressions": expressions},
        "next": next_,
    }
    if delay_ms is not None:
        spec["delay"] = {"durationMilliseconds": delay_ms[0], "jitterDurationMilliseconds": delay_ms[1]}
    return {"apiVersion": "kwok.x-k8s.io/v1alpha1", "kind": "Stage", "metadata": {"name": name}, "spec": spec}


# kwok's template functions NodeConditions, NodeIP, NodeName and NodePort give a healthy node's conditions,
# its simulated address and kubelet port. Capacity and allocatable stay what node_manifest wrote.
_NODE_STATUS = """\
{{ $now := Now }}
conditions:
{{ range NodeConditions }}
- lastHeartbeatTime: {{ $now | Quote }}
  lastTransitionTime: {{ $now | Quote }}
  message: {{ .message | Quote }}
  reason: {{ .reason | Quote }}
  status: {{ .status | Quote }}
  type: {{ .type | Quote }}
{{ end }}
addresses:
{{ with NodeIP }}
- {address: {{ . | Quote }}, type: InternalIP}
{{ end }}
- {address: {{ NodeName | Quote }}, type: Hostname}
{{ with NodePort }}
daemonEndpoints:
  kubeletEndpoint:
    Port: {{ . }}
{{ end }}
nodeInfo:
  architecture: amd64
  operatingSystem: linux
  kubeletVersion: {{ printf "kwok-%s" Version | Quote }}
  containerRuntimeVersion: {{ printf "kwok-%s" Version | Quote }}
  kernelVersion: {{ printf "kwok-%s" Version | Quote }}
phase: Running
"""
_READY = '.status.conditions.[] | select( .type == "Ready" ) | .status'


def node_stages() -> list[dict[str, Any]]:
    """Simulated nodes become Ready at once and refresh their status every 5-10 min.

    kwok (from v0.7 on) has no built-in stages: kwokctl passes them, and so must we. Liveness between
    status refreshes comes from the node Leases kwok renews itself (``--node-lease-duration-seconds``).
    """
    return [
        _stage("kubeaccel-node-initialize", [{"key": _READY, "operator": "NotIn", "values": ["True"]}],
               {"statusTemplate": _NODE_STATUS}, kind="Node"),
        _stage("kubeaccel-node-heartbeat", [{"key": _READY, "operator": "In", "values": ["True"]}],
               {"statusTemplate": _NODE_STATUS}, kind="Node", delay_ms=(300_000, 600_000)),
    ]


_NOT_DELETING = {"key": ".metadata.deletionTimestamp", "operator": "DoesNotExist"}
_RUNNING = {"key": ".status.phase", "operator": "In", "values": ["Running"]}


def pod_stages() -> list[dict[str, Any]]:
    """Pod lifecycle on kwok nodes."""
    finish_stages = [
        _stage(
            f"kubeaccel-pod-{phase.lower()}",
            [_NOT_DELETING, _RUNNING, {"key": f'.metadata.annotations["{FINISH_ANNOTATION}"]', "operator": "In",
                                       "values": [phase]}],
            {"statusTemplate": _containers_terminated(phase, code, reason)},
        )
        for phase, code, reason in (("Succeeded", 0, "Completed"), ("Failed", 1, "Error"))
    ]
    return [
        _stage(
            "kubeaccel-pod-running",
            [_NOT_DELETING, {"key": ".status.podIP", "operator": "DoesNotExist"}],
            {"statusTemplate": _CONTAINERS_RUNNING},
        ),
        *finish_stages,
        _stage(
            "kubeaccel-job-pod-complete",
            [_NOT_DELETING, _RUNNING, {"key": ".metadata.ownerReferences.[].kind", "operator": "In",
                                       "values": ["Job"]}],
            {"statusTemplate": _containers_terminated("Succeeded", 0, "Completed")},
        ),
        _stage(
            "kubeaccel-pod-delete",
            [{"key": ".metadata.deletionTimestamp", "operator": "Exists"}],
            {"finalizers": {"empty": True}, "delete": True},
        ),
    ]


def kwok_config() -> str:
    return yaml.safe_dump_all([*node_stages(), *pod_stages()], sort_keys=False)
