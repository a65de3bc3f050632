"""Allocation policy: which device IDs a request may get, and which it should get.

Pure functions over ``Devices`` snapshots, so the plugin's ``Allocate`` and
``GetPreferredAllocation`` handlers stay thin and the rules are tested without gRPC.

Preferred allocations pack onto the fewest NUMA nodes because a job whose devices share a NUMA
node (and its memory and PCIe root) avoids cross-socket traffic. Devices whose NUMA node is
unknown (``numa_node=None``) form one group of their own.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from collections.abc import Set as AbstractSet

from kubeaccel.devices.model import Devices, sort_key
from kubeaccel.errors import KubeaccelError


class AllocationError(KubeaccelError):
    """A request names devices that cannot be allocated (unknown, duplicated, unhealthy, too many)."""


# Error texts go back to the kubelet (and into pod events): bounded whatever the request held.
MAX_NAMED_IDS = 5
MAX_ID_CHARS = 64


def bounded_id(device_id: str) -> str:
    """``repr`` of an ID, cut to ``MAX_ID_CHARS`` characters."""
    if len(device_id) > MAX_ID_CHARS:
        return repr(device_id[:MAX_ID_CHARS]) + f"... ({len(device_id)} characters)"
    return repr(device_id)


def names(ids: Iterable[str]) -> str:
    """A bounded list for an error text: the first few IDs in natural order, and how many in all."""
    distinct = sorted(set(ids), key=sort_key)
    shown = ", ".join(bounded_id(i) for i in distinct[:MAX_NAMED_IDS])
    rest = len(distinct) - MAX_NAMED_IDS
    return f"{shown} and {rest} more ({len(distinct)} in all)" if rest > 0 else shown


_names = names


def _duplicates(ids: Sequence[str]) -> list[str]:
    return sorted((i for i, n in Counter(ids).items() if n > 1), key=sort_key)


def check_allocation(devices: Devices, ids: Sequence[str]) -> Devices:
    """The devices for an ``Allocate`` request, or ``AllocationError`` naming every bad ID.

    One error lists all problems at once (unknown, duplicated and unhealthy IDs) so an operator
    reading the kubelet's event sees the whole picture, not the first ID only.
    """
    if not ids:
        raise AllocationError(
            "empty allocation request: no device IDs were given",
            hint="request at least one device of this resource",
        )
    # The common case, checked cheaply (Allocate is on every pod's start path): distinct, known, healthy.
    wanted = set(ids)
    if len(wanted) == len(ids) and all((d := devices.get(i)) is not None and d.healthy for i in wanted):
        return devices.subset(wanted)
    problems: list[str] = []
    unknown = devices.unknown(ids)
    if unknown:
        problems.append(f"unknown device ID(s) {_names(unknown)}")
    duplicated = _duplicates(ids)
    if duplicated:
        problems.append(f"duplicated device ID(s) {_names(duplicated)}")
    unhealthy = [i for i in ids if i in devices and not devices[i].healthy]
    if unhealthy:
        problems.append(f"unhealthy device ID(s) {_names(unhealthy)}")
    if problems:
        raise AllocationError(
            "cannot allocate: " + "; ".join(problems),
            hint=f"request only healthy devices this node advertises ({len(devices.healthy())} healthy of "
            f"{len(devices)}); `kubeaccel plugin devices` lists them",
        )
    return devices.subset(ids)


def _first_not_in(ids: list[str], skip: set[str], count: int) -> list[str]:
    """The first ``count`` of ``ids`` (already in natural order) that are not in ``skip``."""
    out: list[str] = []
    for i in ids:
        if len(out) == count:
            break
        if i not in skip:
            out.append(i)
    return out


def _group_of(numa_node: int | None) -> int:
    # -1 is what sysfs writes for "no NUMA node", so unknown and none share one group.
    return -1 if numa_node is None else numa_node


def preferred_allocation(
    devices: Devices, must_include: Sequence[str], size: int, excluded: AbstractSet[str] = frozenset()
) -> list[str]:
    """Exactly ``size`` IDs from the available devices, including all of ``must_include``.

    The available devices are ``devices`` less ``excluded`` (IDs of ``devices``): the kubelet
    offers all but the allocated ones, and skipping a few is far cheaper than copying 131,072.

    The result spans the fewest NUMA groups possible. Among allocations spanning that few groups
    it is the one whose IDs, in natural order (``sort_key``), compare lowest — so answers are
    deterministic and favour low-numbered devices. Returned in natural order.
    """
    problems: list[str] = []
    duplicated = _duplicates(must_include)
    if duplicated:
        problems.append(f"duplicated must-include ID(s) {_names(duplicated)}")
    missing = sorted({*devices.unknown(must_include), *(i for i in must_include if i in excluded)}, key=sort_key)
    if missing:
        problems.append(f"must-include ID(s) {_names(missing)} not among the available devices")
    if size < 1:
        problems.append(f"allocation size {size} is less than 1")
    count = len(devices) - len(excluded)
    if size > count:
        problems.append(f"allocation size {size} exceeds the {count} available device(s)")
    if size < len(set(must_include)):
        problems.append(f"allocation size {size} is smaller than the {len(set(must_include))} must-include device(s)")
    if problems:
        raise AllocationError(
            "cannot choose a preferred allocation: " + "; ".join(problems),
            hint="the allocation size must lie between the number of must-include devices and the number "
            "of available devices, and every must-include device must be available",
        )

    must = set(must_include)
    groups: dict[int, int] = {}  # group -> non-must devices not yet passed by the scan below
    members = devices.by_numa_node()
    for numa, ids in members.items():
        group = _group_of(numa)
        groups[group] = groups.get(group, 0) + len(ids)
    for i in excluded:
        groups[_group_of(devices[i].numa_node)] -= 1
    for i in must:
        groups[_group_of(devices[i].numa_node)] -= 1
    allowed = {_group_of(devices[i].numa_node) for i in must}
    skip = must | excluded if excluded else must
    optional = [g for g in groups if g not in allowed]
    needed = size - len(must)

    def reachable(allowed: set[int], extra_groups: int, need: int) -> bool:
        # Enough devices left in the allowed groups plus the largest `extra_groups` others?
        others = sorted((groups[g] for g in optional if g not in allowed), reverse=True)
        return sum(groups.get(g, 0) for g in allowed) + sum(others[:extra_groups]) >= need

    # The fewest extra groups that can hold the rest: the largest ones first.
    extra_groups = 0
    while not reachable(allowed, extra_groups, needed):
        extra_groups += 1

    if extra_groups == 0:
        # The rest fits in the must-include devices' groups: the lowest IDs of those groups, found
        # without walking the others (what keeps a call over 131,072 devices fast).
        lists = [_first_not_in(ids, skip, needed) for numa, ids in members.items() if _group_of(numa) in allowed]
        candidates = lists[0] if len(lists) == 1 else sorted((i for ids in lists for i in ids), key=sort_key)
        return sorted([*must, *candidates[:needed]], key=sort_key)

    # Greedy in natural ID order: take each device if a best allocation can still include it.
    # That yields the lowest IDs because, with must_include fixed, the lower of two allocations is
    # the one holding the lowest ID they do not share. Feasibility only shrinks as the scan goes
    # on, so a group that cannot be opened once is never tried again.
    chosen: list[str] = []
    dead: set[int] = set()
    for dev in devices.values():
        if len(chosen) == needed:
            break
        if dev.id in skip:
            continue
        group = _group_of(dev.numa_node)
        groups[group] -= 1
        if group in allowed:
            chosen.append(dev.id)
        elif group not in dead and extra_groups > 0:
            if reachable(allowed | {group}, extra_groups - 1, needed - len(chosen) - 1):
                allowed.add(group)
                extra_groups -= 1
                chosen.append(dev.id)
            else:
                dead.add(group)
    return sorted([*must, *chosen], key=sort_key)
