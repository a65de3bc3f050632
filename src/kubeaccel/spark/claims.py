"""Spark on DRA in a submission: the ResourceClaimTemplates and the pod (template) changes. Pure.

The confs are resolved once (``model.ResolvedApp.driver_claims`` / ``executor_claims``, built by
``spark.dra.requests``); this module turns them into objects for one submission, named after its
unique prefix so two submissions of one app never share a template:

* one ResourceClaimTemplate per role that claims devices (``<prefix>-<role>-accel``), created right
  after the driver pod with an owner reference to it (so it goes with the app);
* the driver pod gets ``spec.resourceClaims`` and its container ``resources.claims`` (the builder
  leaves out the extended-resource limit of a claimed device: it would allocate a second set);
* the executor pod template (the user's, else a minimal one) gets the same, plus the annotation
  ``kubeaccel.io/dra-claimed`` naming the extended resources Spark itself will put on the executor
  container (``spark.executor.resource.<name>.vendor`` is mandatory on Kubernetes, and Spark always
  turns it into ``limits: {<vendor>/<name>: amount}``). The MutatingAdmissionPolicy in
  ``deploy/dra/spark-claims-policy.yaml`` removes exactly those limits from pods carrying the
  annotation and a claim, so an executor gets its devices once, through its claim.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import yaml

from kubeaccel.spark import dra
from kubeaccel.spark.dra import ClaimRequest

CLAIMED_ANNOTATION = "kubeaccel.io/dra-claimed"
Manifest = dict[str, Any]


def extended_names(claims: Sequence[ClaimRequest], vendors: dict[str, str]) -> list[str]:
    """The ``<vendor>/<name>`` limits Spark adds for the claimed resources (vendors by resource name)."""
    return sorted(f"{vendors[c.name]}/{c.name}" for c in claims if c.name in vendors)


def templates(prefix: str, namespace: str, driver: Sequence[ClaimRequest],
              executor: Sequence[ClaimRequest], app_id: str | None = None) -> list[Manifest]:
    """The ResourceClaimTemplates of one submission (none when nothing is claimed through DRA); their claims
    carry the app's ``spark-app-selector`` label when ``app_id`` is given."""
    out = []
    for role, claims in (("driver", driver), ("executor", executor)):
        if claims:
            template = dra.claim_template(prefix, namespace, role, list(claims), app_id=app_id)
            template["metadata"].pop("namespace")  # created in the submission's namespace like the rest
            out.append(template)
    return out


def _add_claim(pod: Manifest, container: Manifest, prefix: str, role: str) -> None:
    fragment = dra.pod_fragment(prefix, role)["spec"]
    spec = pod.setdefault("spec", {})
    spec["resourceClaims"] = [*(spec.get("resourceClaims") or []), *fragment["resourceClaims"]]
    resources = container.setdefault("resources", {})
    resources["claims"] = [*(resources.get("claims") or []), *fragment["containers"][0]["resources"]["claims"]]


def add_driver_claim(pod: Manifest, container_name: str, prefix: str) -> Manifest:
    """The driver pod with its claim, used by the Spark driver container (named ``container_name``)."""
    pod = copy.deepcopy(pod)
    container = next(c for c in pod["spec"]["containers"] if c.get("name") == container_name)
    _add_claim(pod, container, prefix, "driver")
    return pod


def executor_template(text: str | None, prefix: str, container_name: str | None, claimed: Sequence[str]) -> str:
    """The executor pod template text with the claim (``text`` was checked by ``templates.load``).

    Spark uses the container named by ``spark.kubernetes.executor.podTemplateContainerName``, else the
    first one, so the claim goes to that container."""
    pod: Manifest = (yaml.safe_load(text) if text else None) or {"apiVersion": "v1", "kind": "Pod"}
    spec: Manifest = pod.get("spec") or {}
    pod["spec"] = spec
    containers = spec.get("containers") or [{"name": "spark-kubernetes-executor"}]
    spec["containers"] = containers
    container = next((c for c in containers if container_name and c.get("name") == container_name), containers[0])
    _add_claim(pod, container, prefix, "executor")
    metadata = pod.get("metadata") or {}
    pod["metadata"] = metadata
    metadata["annotations"] = {**(metadata.get("annotations") or {}), CLAIMED_ANNOTATION: ",".join(claimed)}
    return yaml.safe_dump(pod, sort_keys=False)
