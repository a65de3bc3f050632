"""Spark on DRA: the ResourceClaimTemplate and the pod-spec fragments for an app's accelerators. Pure.

Confs (validated here; a mistake is a ``ConfigError`` naming the key):

* ``spark.kubeaccel.dra.enabled=true``: every ``spark.<role>.resource.<name>`` request (amount +
  vendor, as Spark already requires) is claimed through DRA instead of an extended resource.
* ``spark.kubeaccel.dra.driverName`` (default ``dra.kubeaccel.io``): the DRA driver whose attributes
  the selector shorthands below refer to.
* per resource, ``spark.kubeaccel.dra.<role>.<name>.``:
  ``deviceClass`` (default ``<name>.<vendor>``, the class ``kubeaccel dra device-classes`` makes),
  ``numaNode`` (an int: every device on that NUMA node), ``model`` (a string attribute),
  ``minMemory`` (a quantity such as ``80Gi``: devices whose ``memory`` capacity is at least that),
  ``selector`` (any CEL expression over ``device``; the API server compiles it, and one it refuses
  is reported naming the conf it came from: ``invalid_selector``).

``claim_template`` builds one ResourceClaimTemplate per app and role (owned by the driver pod when
an owner is given, so it goes with the app); ``pod_fragment`` is what the driver pod spec and the
executor pod template carry (``spec.resourceClaims`` and the first container's
``resources.claims``); ``quota`` gives the ``<class>.deviceclass.resource.k8s.io/devices`` a
ResourceQuota counts. The discovery script is unchanged: the DRA driver's CDI spec sets the same
``KUBEACCEL_DEVICES_<RESOURCE>`` variable the device plugin sets.

Integration note: Spark itself adds ``limits: {<vendor>/<name>: amount}`` to executor containers
for every resource with a vendor. With a DeviceClass carrying ``extendedResourceName`` that limit
alone is already served by DRA (no conf needed); explicit claims from this module are for
selectors, and the submit path must then keep Spark from also adding the limit, or the executor
would be given the devices twice.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from kubeaccel.devices.quantity import parse_quantity
from kubeaccel.errors import ConfigError, InvalidError

ENABLED = "spark.kubeaccel.dra.enabled"
DRIVER_NAME = "spark.kubeaccel.dra.driverName"
DEFAULT_DRIVER = "dra.kubeaccel.io"
_PREFIX = "spark.kubeaccel.dra."
_PER_RESOURCE = re.compile(r"^spark\.kubeaccel\.dra\.(driver|executor)\.([^.]+)\.(.+)$")
_FIELDS = ("deviceClass", "numaNode", "model", "minMemory", "selector")
_RESOURCE_KEY = re.compile(r"^spark\.(driver|executor)\.resource\.([^.]+)\.(amount|vendor)$")
_DNS_SUBDOMAIN = re.compile(r"(?=.{1,253}$)[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
MAX_SELECTOR = 10 * 1024  # resource.k8s.io/v1 CELSelectorExpressionMaxLength
MAX_COUNT = 32  # DeviceRequest count limit (AllocationResultsMaxSize is 32 per request)
CLAIM_NAME = "accelerators"
SELECTOR_CONFS = "kubeaccel.io/selector-confs"
_SELECTOR_FIELD = re.compile(r"requests\[(\d+)\]\.exactly\.selectors\[(\d+)\]")


@dataclass(frozen=True)
class ClaimRequest:
    """One Spark resource of one role, claimed through DRA."""

    role: str
    name: str
    device_class: str
    count: int
    selected: tuple[tuple[str, str], ...] = ()  # (the conf that made it, CEL expression), in conf order

    @property
    def selectors(self) -> tuple[str, ...]:
        return tuple(expression for _, expression in self.selected)


def enabled(conf: Mapping[str, str]) -> bool:
    value = conf.get(ENABLED, "false").strip().lower()
    if value not in ("true", "false"):
        raise ConfigError(f"{ENABLED}={conf[ENABLED]!r} is not true or false", hint=f"set {ENABLED}=true")
    return value == "true"


def _driver(conf: Mapping[str, str]) -> str:
    driver = conf.get(DRIVER_NAME, DEFAULT_DRIVER).strip()
    if not _DNS_SUBDOMAIN.fullmatch(driver):
        raise ConfigError(f"{DRIVER_NAME}={driver!r} is not a DRA driver name",
                          hint="a lower-case DNS subdomain, e.g. dra.kubeaccel.io")
    return driver


def _cel_string(value: str) -> str:
    return json.dumps(value)  # a JSON string literal is a valid CEL string literal


def requests(conf: Mapping[str, str], role: str) -> list[ClaimRequest]:
    """The validated DRA requests of ``role`` ("driver" or "executor"); empty unless enabled."""
    if role not in ("driver", "executor"):
        raise ValueError(role)
    settings = _settings(conf, role)
    if not enabled(conf):
        if settings:
            raise ConfigError(f"spark.kubeaccel.dra.{role}.* is set but {ENABLED} is not true",
                              hint=f"set {ENABLED}=true to claim devices through DRA")
        return []
    driver = _driver(conf)
    resources = _spark_resources(conf, role)
    for name in settings:
        if name not in resources:
            raise ConfigError(f"spark.kubeaccel.dra.{role}.{name}.* names no Spark resource",
                              hint=f"set spark.{role}.resource.{name}.amount and .vendor first")
    return [_request(role, name, attrs, settings.get(name, {}), driver) for name, attrs in sorted(resources.items())]


def _settings(conf: Mapping[str, str], role: str) -> dict[str, dict[str, str]]:
    """``spark.kubeaccel.dra.<role>.<name>.<field>`` by name, then field; an unknown key is an error."""
    settings: dict[str, dict[str, str]] = {}
    for key, value in conf.items():
        if not key.startswith(_PREFIX) or key in (ENABLED, DRIVER_NAME):
            continue
        match = _PER_RESOURCE.match(key)
        if not match or match.group(3) not in _FIELDS:
            raise ConfigError(f"unknown DRA setting {key}",
                              hint=f"use spark.kubeaccel.dra.<driver|executor>.<name>.{{{','.join(_FIELDS)}}}")
        if match.group(1) == role:
            settings.setdefault(match.group(2), {})[match.group(3)] = value
    return settings


def _spark_resources(conf: Mapping[str, str], role: str) -> dict[str, dict[str, str]]:
    """Spark's own ``spark.<role>.resource.<name>.<field>`` confs, by name."""
    resources: dict[str, dict[str, str]] = {}
    for key, value in conf.items():
        match = _RESOURCE_KEY.match(key)
        if match and match.group(1) == role:
            resources.setdefault(match.group(2), {})[match.group(3)] = value.strip()
    return resources


def _request(role: str, name: str, attrs: Mapping[str, str], own: Mapping[str, str], driver: str) -> ClaimRequest:
    """One Spark resource as a DRA request: its count, DeviceClass and selectors, each checked."""
    where = f"spark.{role}.resource.{name}"
    amount, vendor = attrs.get("amount", ""), attrs.get("vendor", "")
    if not amount.isdecimal() or not 0 < int(amount) <= MAX_COUNT:
        raise ConfigError(f"{where}.amount={amount!r} is not a count of 1 to {MAX_COUNT}",
                          hint="a DRA request asks for whole devices: 1, 2, ...")
    if not _DNS_SUBDOMAIN.fullmatch(vendor) or not _DNS_LABEL.fullmatch(name):
        raise ConfigError(f"{where}: vendor {vendor!r} and name {name!r} do not name a device class",
                          hint=f"set {where}.vendor to a DNS domain such as nec.com")
    prefix = f"spark.kubeaccel.dra.{role}.{name}"
    device_class = own.get("deviceClass", f"{name}.{vendor}").strip()
    if not _DNS_SUBDOMAIN.fullmatch(device_class):
        raise ConfigError(f"{prefix}.deviceClass={device_class!r} is not a DeviceClass name",
                          hint="a lower-case DNS subdomain, e.g. ve.nec.com (kubectl get deviceclasses)")
    return ClaimRequest(role, name, device_class, int(amount), _selectors(prefix, own, driver))


def _selectors(prefix: str, own: Mapping[str, str], driver: str) -> tuple[tuple[str, str], ...]:
    """(the conf, its CEL expression) for each of numaNode, model, minMemory and selector that is set."""
    scope = f"device.attributes[{_cel_string(driver)}]"
    selectors: list[tuple[str, str]] = []
    if "numaNode" in own:
        raw = own["numaNode"].strip()
        if not raw.isdecimal() or int(raw) > 1023:
            raise ConfigError(f"{prefix}.numaNode={own['numaNode']!r} is not a NUMA node number",
                              hint="use 0, 1, ... (see `kubeaccel dra devices`)")
        selectors.append((f"{prefix}.numaNode", f"{scope}.numaNode == {int(raw)}"))
    if "model" in own:
        model = own["model"].strip()
        if not model or len(model) > 64:
            raise ConfigError(f"{prefix}.model={own['model']!r} must be 1 to 64 characters",
                              hint="the model attribute as `kubeaccel dra devices -o yaml` shows it")
        # string(): a VE's sysfs model is a number, published as an int attribute; a bare
        # `== "3"` never matches an int. The guard keeps a device without the attribute a non-match.
        selectors.append((f"{prefix}.model", f'"model" in {scope} && string({scope}.model) == {_cel_string(model)}'))
    if "minMemory" in own:
        raw = own["minMemory"].strip()
        try:
            parse_quantity(raw)
        except ValueError as exc:
            raise ConfigError(f"{prefix}.minMemory: {exc}",
                              hint="a quantity such as 80Gi; `kubeaccel dra devices -o yaml` shows each device's "
                              "capacity.memory") from None
        selectors.append((f"{prefix}.minMemory", f"device.capacity[{_cel_string(driver)}].memory"
                          f".compareTo(quantity({_cel_string(raw)})) >= 0"))
    if "selector" in own:
        expression = own["selector"].strip()
        if not expression or len(expression) > MAX_SELECTOR:
            raise ConfigError(f"{prefix}.selector must be a CEL expression of 1 to {MAX_SELECTOR} characters",
                              hint='e.g. device.attributes["dra.kubeaccel.io"].index < 4')
        selectors.append((f"{prefix}.selector", expression))
    return tuple(selectors)


def template_name(app_name: str, role: str) -> str:
    base = f"{app_name}-{role}-accel"
    return base if len(base) <= 253 else f"{app_name[:230]}-{role}-accel"


def claim_template(
    app_name: str,
    namespace: str,
    role: str,
    claims: list[ClaimRequest],
    owner: Mapping[str, Any] | None = None,
    *,
    app_id: str | None = None,
) -> dict[str, Any]:
    """One ResourceClaimTemplate for the role's requests (one device request per Spark resource).

    With ``app_id`` every claim made from it carries Spark's ``spark-app-selector`` label (Kubernetes copies
    the template's ``spec.metadata``), so the DRA driver can name the app holding each device."""
    metadata: dict[str, Any] = {"name": template_name(app_name, role), "namespace": namespace,
                                "labels": {"app.kubernetes.io/managed-by": "kubeaccel", "spark-role": role}}
    sources = [[conf for conf, _ in c.selected] for c in claims]
    if any(sources):  # which conf made each selector: a refused one is reported by its conf (``invalid_selector``)
        metadata["annotations"] = {SELECTOR_CONFS: json.dumps(sources, separators=(",", ":"))}
    if owner is not None:
        metadata["ownerReferences"] = [{"apiVersion": "v1", "kind": "Pod", "name": owner["metadata"]["name"],
                                        "uid": owner["metadata"]["uid"], "controller": True}]
    claim_metadata = {"metadata": {"labels": {"spark-app-selector": app_id}}} if app_id else {}
    return {
        "apiVersion": "resource.k8s.io/v1", "kind": "ResourceClaimTemplate", "metadata": metadata,
        "spec": {**claim_metadata, "spec": {"devices": {"requests": [
            {"name": c.name, "exactly": {
                "deviceClassName": c.device_class, "allocationMode": "ExactCount", "count": c.count,
                **({"selectors": [{"cel": {"expression": s}} for s in c.selectors]} if c.selectors else {}),
            }} for c in claims]}}},
    }


def pod_fragment(app_name: str, role: str) -> dict[str, Any]:
    """What the pod (template) carries: the claim from the template, used by the first container."""
    return {"spec": {
        "resourceClaims": [{"name": CLAIM_NAME, "resourceClaimTemplateName": template_name(app_name, role)}],
        "containers": [{"resources": {"claims": [{"name": CLAIM_NAME}]}}],
    }}


def quota(claims: list[ClaimRequest], pods: int = 1) -> dict[str, int]:
    """What ``pods`` pods with these claims count against a ResourceQuota (devices per class)."""
    out: dict[str, int] = {}
    for c in claims:
        key = f"{c.device_class}.deviceclass.resource.k8s.io/devices"
        out[key] = out.get(key, 0) + c.count * pods
    return out


def invalid_selector(template: Mapping[str, Any], error: InvalidError) -> ConfigError | None:
    """The API server refused ``template`` over a CEL selector: the error again, naming the conf it came from.

    None when the refusal is about something else (the caller re-raises the original)."""
    try:
        sources = json.loads(template["metadata"]["annotations"][SELECTOR_CONFS])
        requests_ = template["spec"]["spec"]["devices"]["requests"]
    except (KeyError, TypeError, ValueError):
        return None
    for text in (*error.causes, error.message):
        match = _SELECTOR_FIELD.search(text)
        if not match:
            continue
        i, j = int(match.group(1)), int(match.group(2))
        try:
            conf = sources[i][j]
            expression = requests_[i]["exactly"]["selectors"][j]["cel"]["expression"]
        except (IndexError, KeyError, TypeError):
            return None
        detail = text[match.end():].lstrip(".").removeprefix("cel.expression").lstrip(": ")
        return ConfigError(
            f"{conf}: the API server could not compile the CEL selector {expression[:200]!r}: {detail[:800]}",
            hint=f"fix {conf}; attributes are device.attributes[\"<domain>\"].<name>, capacity "
            'device.capacity["<domain>"].<name> (a quantity: .compareTo(quantity("80Gi")) >= 0); '
            "`kubeaccel dra devices -o yaml` shows what a node publishes",
        )
    return None
