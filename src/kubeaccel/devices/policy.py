"""Allocation policy: which device IDs a request may get, and which it should get.

Pure functions over ``Devices`` snapshots, so the plugin's ``Allocate`` and
``GetPreferredAllocation`` handlers stay thin and the rules are tested without gRPC.

Preferred allocations pack onto the fewest NUMA nodes because a job whose devices share a NUMA
node (and its memory and PCIe root) avoids cross-socket traffic. Devices whose NUMA node is
unknown (``numa_node=None``) form one group of their own.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections import Counter
from collections.abc import Iterable, Sequence

from kubeaccel.devices.model import Devices, sort_key
from kubeaccel.errors import KubeaccelError

# Above this many candidate NUMA-group combinations the exact tie-break search gives way to a
# greedy choice (largest groups first). Real nodes have at most a handful of NUMA nodes.
_MAX_GROUP_COMBINATIONS = 20_000


class AllocationError(KubeaccelError):
    """A request names devices that cannot be allocated (unknown, duplicated, unhealthy, too many)."""


def _names(ids: Iterable[str]) -> str:
    return ", ".join(repr(i) for i in sorted(set(ids), key=sort_key))


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


def _group_of(numa_node: int | None) -> int:
    # None sorts before every real NUMA node so its group is stable; -1 is never a real node.
    return -1 if numa_node is None else numa_node


def preferred_allocation(available: Devices, must_include: Sequence[str], size: int) -> list[str]:
    """Exactly ``size`` IDs from ``available``, including all of ``must_include``.

    The result spans the fewest NUMA groups possible. Among allocations spanning that few groups
    it is the one whose IDs, in natural order (``sort_key``), compare lowest — so answers are
    deterministic and favour low-numbered devices. Returned in natural order.
    """
    problems: list[str] = []
    duplicated = _duplicates(must_include)
    if duplicated:
        problems.append(f"duplicated must-include ID(s) {_names(duplicated)}")
    missing = available.unknown(must_include)
    if missing:
        problems.append(f"must-include ID(s) {_names(missing)} not among the available devices")
    if size < 1:
        problems.append(f"allocation size {size} is less than 1")
    if size > len(available):
        problems.append(f"allocation size {size} exceeds the {len(available)} available device(s)")
    if size < len(set(must_include)):
        problems.append(f"allocation size {size} is smaller than the {len(set(must_include))} must-include device(s)")
    if problems:
        raise AllocationError(
            "cannot choose a preferred allocation: " + "; ".join(problems),
            hint="the allocation size must lie between the number of must-include devices and the number "
            "of available devices, and every must-include device must be available",
        )

    must = set(must_include)
    groups: dict[int, list[str]] = {}
    for dev in available.values():  # natural order, so each group's list is sorted
        groups.setdefault(_group_of(dev.numa_node), []).append(dev.id)
    required = sorted({_group_of(available[i].numa_node) for i in must})
    optional = sorted(g for g in groups if g not in required)
    needed = size - len(must)

    def fill(chosen: Iterable[int]) -> list[str]:
        pool = heapq.merge(*(groups[g] for g in chosen), key=sort_key)
        extra = list(itertools.islice((i for i in pool if i not in must), needed))
        return sorted([*must, *extra], key=sort_key)

    def capacity(chosen: Iterable[int]) -> int:
        return sum(len(groups[g]) for g in chosen)

    # Fewest extra groups: the k largest optional groups reach the size first, if any k groups do.
    by_size = sorted(optional, key=lambda g: len(groups[g]), reverse=True)
    base = capacity(required)
    extra_groups = 0
    while base + capacity(by_size[:extra_groups]) < size:
        extra_groups += 1

    if math.comb(len(optional), extra_groups) > _MAX_GROUP_COMBINATIONS:
        return fill([*required, *by_size[:extra_groups]])
    best: list[str] | None = None
    best_key: tuple[tuple[tuple[int, int | str], ...], ...] = ()
    for combo in itertools.combinations(optional, extra_groups):
        if base + capacity(combo) < size:
            continue
        candidate = fill([*required, *combo])
        key = tuple(sort_key(i) for i in candidate)
        if best is None or key < best_key:
            best, best_key = candidate, key
    assert best is not None  # the k largest groups always qualify
    return best
