"""From a ResourceClaim (plain JSON from the API server) to what the runtime injects: pure.

``allocated`` picks the ``status.allocation.devices.results`` entries of our driver and checks each
one against the pools this node publishes; anything else (another node's pool, a device we do not
have, a malformed entry, a replaced claim) is a ``ClaimError`` that becomes that claim's error in
the kubelet's answer. ``claim_spec`` builds the claim's CDI spec: one CDI device per allocated
device, named ``<claim uid>-<device>`` under the driver's kind, carrying the device's nodes and
the variables of its request group (``KUBEACCEL_DEVICES_*`` and the backend's native ones).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from kubeaccel.devices import cdi
from kubeaccel.devices.model import Backend, Device, sort_key
from kubeaccel.devices.naming import devices_env_var
from kubeaccel.dra.model import Pool

MAX_RESULTS = 256  # resource.k8s.io/v1 AllocationResultsMaxSize: more is not a claim the API server made


class ClaimError(ValueError):
    """This claim cannot be prepared here; the message goes back to the kubelet (and into events)."""


@dataclass(frozen=True)
class Allocated:
    """One device of a claim, resolved against this node's pools."""

    request: str
    pool: str
    name: str
    resource_name: str
    device: Device


def _field(obj: Any, key: str, kind: type, where: str) -> Any:
    if not isinstance(obj, Mapping):
        raise ClaimError(f"malformed claim: {where} is not an object")
    value = obj.get(key)
    if not isinstance(value, kind):
        raise ClaimError(f"malformed claim: {where}.{key} is missing or not a {kind.__name__}")
    return value


def allocated(claim: Mapping[str, Any], uid: str, driver: str, pools: Mapping[str, Pool]) -> list[Allocated]:
    """The devices of ``claim`` that ``driver`` must prepare on this node, in result order."""
    meta = _field(claim, "metadata", dict, "claim")
    name = meta.get("name", "?")
    if meta.get("uid") != uid:
        raise ClaimError(
            f"claim {name} has UID {meta.get('uid')!r}, not {uid!r}: it was deleted and re-created; "
            "the kubelet's claim is gone"
        )
    if meta.get("deletionTimestamp") and not (claim.get("status") or {}).get("allocation"):
        raise ClaimError(f"claim {name} is being deleted")
    status = claim.get("status") or {}
    if not isinstance(status, Mapping) or not status.get("allocation"):
        raise ClaimError(f"claim {name} is not allocated (no status.allocation): the scheduler has not placed it")
    devices = _field(status["allocation"], "devices", dict, "status.allocation")
    results = devices.get("results") or []
    if not isinstance(results, list):
        raise ClaimError("malformed claim: status.allocation.devices.results is not a list")
    if len(results) > MAX_RESULTS:
        raise ClaimError(f"malformed claim: {len(results)} allocation results (at most {MAX_RESULTS})")
    out: list[Allocated] = []
    seen: set[tuple[str, str]] = set()
    for i, result in enumerate(results):
        where = f"status.allocation.devices.results[{i}]"
        if not isinstance(result, Mapping) or result.get("driver") != driver:
            if not isinstance(result, Mapping):
                raise ClaimError(f"malformed claim: {where} is not an object")
            continue  # another driver's device: not ours to prepare
        request = _field(result, "request", str, where)
        pool_name = _field(result, "pool", str, where)
        device_name = _field(result, "device", str, where)
        pool = pools.get(pool_name)
        if pool is None:
            raise ClaimError(
                f"{where}: pool {pool_name!r} is not published by this node (the claim belongs to another node?)"
            )
        device = pool.devices.get(device_name)
        if device is None:
            raise ClaimError(f"{where}: device {device_name!r} is not in pool {pool_name!r} on this node")
        if (pool_name, device_name) in seen:
            continue  # one device named by two results (consumable capacity) is prepared once
        seen.add((pool_name, device_name))
        out.append(Allocated(request, pool_name, device_name, pool.resource_name, device))
    if not out:
        raise ClaimError(f"claim {name} has no devices of driver {driver}")
    return out


def cdi_kind(driver: str) -> str:
    """Every claim's spec uses the driver's own kind: ``<driver>/claim``."""
    return cdi.kind_for(f"{driver}/claim")


def cdi_device(uid: str, device_name: str) -> str:
    return cdi.device_name(f"{uid}-{device_name}")


def spec_file(uid: str) -> str:
    return cdi.spec_file_name(f"dra-{uid}")


def claim_spec(
    driver: str, uid: str, devices: Sequence[Allocated], backends: Mapping[str, Backend]
) -> tuple[dict[str, Any], dict[tuple[str, str], str]]:
    """The claim's CDI spec and ``(pool, device) → qualified CDI name``.

    Devices of one (request, resource) group share its variables, so a container that gets the
    whole request sees ``KUBEACCEL_DEVICES_NEC_COM_VE=0,1`` and the backend's native list.
    """
    kind = cdi_kind(driver)
    groups: dict[tuple[str, str], list[Allocated]] = {}
    for item in devices:
        groups.setdefault((item.request, item.resource_name), []).append(item)
    edits: dict[str, cdi.ContainerEdits] = {}
    ids: dict[tuple[str, str], str] = {}
    for (_, resource_name), group in groups.items():
        members = sorted(group, key=lambda a: sort_key(a.device.index))
        extra = backends[resource_name].container_allocation([m.device for m in members])
        indices = ",".join(dict.fromkeys(m.device.index for m in members))
        env = {**extra.envs, devices_env_var(resource_name): indices}
        own = {n for m in members for n in m.device.nodes}
        shared = [n for n in extra.device_nodes if n not in own]  # e.g. NVIDIA's control nodes
        for position, member in enumerate(members):
            name = cdi_device(uid, member.name)
            first = position == 0  # group-wide nodes and mounts once, not once per device
            nodes = [*member.device.nodes, *(shared if first else ())]
            edits[name] = cdi.ContainerEdits.of(
                env, device_nodes=list(dict.fromkeys(nodes)), mounts=extra.mounts if first else ()
            )
            ids[(member.pool, member.name)] = cdi.qualified(kind, name)
    return cdi.spec(kind, edits), ids
