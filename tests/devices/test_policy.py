"""Allocation policy: table-driven cases plus property tests against a brute-force oracle."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kubeaccel.devices.model import Device, Devices, Health, sort_key
from kubeaccel.devices.policy import AllocationError, check_allocation, preferred_allocation
from kubeaccel.errors import KubeaccelError


def devs(*spec: tuple[str, int | None], unhealthy: tuple[str, ...] = ()) -> Devices:
    return Devices(
        Device(
            id=i,
            index=str(n),
            numa_node=numa,
            health=Health.UNHEALTHY if i in unhealthy else Health.HEALTHY,
        )
        for n, (i, numa) in enumerate(spec)
    )


FOUR_ON_TWO = devs(("d0", 0), ("d1", 0), ("d2", 1), ("d3", 1))


# --- check_allocation -------------------------------------------------------------------------


def test_check_allocation_returns_the_requested_devices_in_natural_order() -> None:
    many = devs(*((f"d{i}", 0) for i in range(12)))
    got = check_allocation(many, ["d10", "d2", "d9"])
    assert list(got) == ["d2", "d9", "d10"]
    assert isinstance(got, Devices)


@pytest.mark.parametrize(
    ("ids", "fragments"),
    [
        (["nope"], ["unknown", "'nope'"]),
        (["d0", "d0"], ["duplicated", "'d0'"]),
        (["d1"], ["unhealthy", "'d1'"]),
        (["d1", "x", "y", "d0", "d0"], ["unknown", "'x'", "'y'", "duplicated", "'d0'", "unhealthy", "'d1'"]),
    ],
)
def test_check_allocation_names_every_bad_id(ids: list[str], fragments: list[str]) -> None:
    with pytest.raises(AllocationError) as err:
        check_allocation(devs(("d0", 0), ("d1", 0), unhealthy=("d1",)), ids)
    for fragment in fragments:
        assert fragment in err.value.message
    assert err.value.hint


def test_check_allocation_rejects_an_empty_request() -> None:
    with pytest.raises(AllocationError, match="empty"):
        check_allocation(FOUR_ON_TWO, [])


def test_allocation_error_is_a_kubeaccel_error() -> None:
    assert issubclass(AllocationError, KubeaccelError)


# --- preferred_allocation: table ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("available", "must", "size", "expected"),
    [
        # Lowest IDs when one NUMA node is enough.
        (FOUR_ON_TWO, [], 2, ["d0", "d1"]),
        (FOUR_ON_TWO, [], 1, ["d0"]),
        # A must-include on node 1 pulls the rest of the allocation onto node 1.
        (FOUR_ON_TWO, ["d3"], 2, ["d2", "d3"]),
        # Must-includes on both nodes: fill with the lowest remaining IDs.
        (FOUR_ON_TWO, ["d1", "d3"], 3, ["d0", "d1", "d3"]),
        (FOUR_ON_TWO, [], 4, ["d0", "d1", "d2", "d3"]),
        # The bigger group wins over lower IDs when it avoids spanning two nodes.
        (devs(("a0", 0), ("a1", 1), ("a2", 1), ("a3", 1)), [], 3, ["a1", "a2", "a3"]),
        # Natural order: d10 comes after d9.
        (devs(*((f"d{i}", 0) for i in range(11))), [], 10, [f"d{i}" for i in range(10)]),
        # numa_node=None is one group like any other.
        (devs(("u0", None), ("u1", None), ("n0", 0)), [], 2, ["u0", "u1"]),
        (devs(("u0", None), ("n0", 0), ("n1", 0)), ["n1"], 2, ["n0", "n1"]),
        # Three groups, size needs two of them: the two largest, then lowest IDs.
        (devs(("a", 0), ("b", 1), ("c", 1), ("d", 2), ("e", 2), ("f", 2)), [], 5, ["b", "c", "d", "e", "f"]),
        # Equal-size groups: the combination giving the lowest IDs.
        (devs(("a", 0), ("b", 1), ("c", 2), ("d", 0), ("e", 1)), [], 2, ["a", "d"]),
    ],
)
def test_preferred_allocation_table(available: Devices, must: list[str], size: int, expected: list[str]) -> None:
    assert preferred_allocation(available, must, size) == expected


@pytest.mark.parametrize(
    ("must", "size", "fragment"),
    [
        ([], 5, "exceeds the 4 available"),
        (["d0", "d1"], 1, "smaller than the 2 must-include"),
        (["zz"], 2, "'zz' not among the available"),
        (["d0", "d0"], 2, "duplicated must-include ID(s) 'd0'"),
        ([], 0, "less than 1"),
    ],
)
def test_preferred_allocation_rejects_bad_requests(must: list[str], size: int, fragment: str) -> None:
    with pytest.raises(AllocationError) as err:
        preferred_allocation(FOUR_ON_TWO, must, size)
    assert fragment in err.value.message
    assert err.value.hint


def test_preferred_allocation_many_groups_is_exact() -> None:
    # 40 single-device NUMA groups: choosing among C(39, 19) group sets, without enumerating them.
    many = devs(*((f"d{i}", i) for i in range(40)))
    assert preferred_allocation(many, ["d39"], 20) == [*(f"d{i}" for i in range(19)), "d39"]


def test_preferred_allocation_skips_a_low_id_whose_group_would_cost_an_extra_node() -> None:
    # d0 alone on node 0; nodes 1 and 2 hold two each. Size 4 fits in nodes 1+2 (two groups) but
    # any allocation with d0 needs three, so d0 is passed over despite being the lowest ID.
    available = devs(("d0", 0), ("d1", 1), ("d2", 1), ("d3", 2), ("d4", 2))
    assert preferred_allocation(available, [], 4) == ["d1", "d2", "d3", "d4"]


# --- preferred_allocation: properties against brute force ----------------------------------------


def groups_used(available: Devices, ids: list[str]) -> int:
    return len({available[i].numa_node for i in ids})


@st.composite
def requests(draw: st.DrawFn) -> tuple[Devices, list[str], int]:
    numa = st.one_of(st.none(), st.integers(0, 3))
    count = draw(st.integers(1, 8))
    names = draw(st.lists(st.integers(0, 30), min_size=count, max_size=count, unique=True))
    sick = tuple(f"dev{n}" for n in names if draw(st.booleans()) and n % 3 == 0)
    available = devs(*((f"dev{n}", draw(numa)) for n in names), unhealthy=sick)
    ids = list(available)
    must = draw(st.lists(st.sampled_from(ids), unique=True, max_size=len(ids)))
    size = draw(st.integers(max(1, len(must)), len(ids)))
    return available, must, size


@pytest.mark.slow  # a long property run: in `make test`, not `make unit`
@settings(max_examples=3000, deadline=None)
@given(requests())
def test_preferred_allocation_is_the_best_allocation(request: tuple[Devices, list[str], int]) -> None:
    available, must, size = request
    got = preferred_allocation(available, must, size)

    assert len(got) == size
    assert set(must) <= set(got) <= set(available)
    assert len(set(got)) == size
    assert got == sorted(got, key=sort_key)

    # Oracle: every valid allocation, ranked by (NUMA groups spanned, IDs in natural order).
    others = [i for i in available if i not in must]
    best = min(
        (sorted([*must, *extra], key=sort_key) for extra in itertools.combinations(others, size - len(must))),
        key=lambda ids: (groups_used(available, ids), [sort_key(i) for i in ids]),
    )
    assert groups_used(available, got) == groups_used(available, best)
    assert got == best


@pytest.mark.slow  # a long property run: in `make test`, not `make unit`
@settings(max_examples=2000, deadline=None)
@given(requests(), st.lists(st.sampled_from(["dev1", "dev3", "ghost", "dev30"]), max_size=5))
def test_check_allocation_accepts_exactly_the_valid_requests(
    request: tuple[Devices, list[str], int], ids: list[str]
) -> None:
    available, _, _ = request
    valid = bool(ids) and len(set(ids)) == len(ids) and all(i in available and available[i].healthy for i in ids)
    if valid:
        assert list(check_allocation(available, ids)) == sorted(ids, key=sort_key)
    else:
        with pytest.raises(AllocationError):
            check_allocation(available, ids)


# --- excluded IDs: the pool when the kubelet offers all but a few devices -------------------------


@settings(max_examples=300, deadline=None)
@given(
    spec=st.lists(st.tuples(st.sampled_from([f"d{i}" for i in range(12)]), st.sampled_from([None, 0, 1, 2])),
                  unique_by=lambda t: t[0], min_size=1, max_size=12),
    data=st.data(),
)
def test_preferred_allocation_with_excluded_ids_is_that_of_the_rest(
    spec: list[tuple[str, int | None]], data: st.DataObject
) -> None:
    # The pool as "all less a few" gives exactly the answer (or the error) of that pool itself.
    snapshot = devs(*spec)
    ids = list(snapshot)
    excluded = data.draw(st.sets(st.sampled_from(ids)))
    must = data.draw(st.lists(st.sampled_from(ids), max_size=3))
    size = data.draw(st.integers(min_value=0, max_value=len(ids) + 1))
    rest = Devices(snapshot[i] for i in ids if i not in excluded)
    try:
        expected: list[str] | str = preferred_allocation(rest, must, size)
    except AllocationError as exc:
        expected = exc.message
    try:
        got: list[str] | str = preferred_allocation(snapshot, must, size, excluded=frozenset(excluded))
    except AllocationError as exc:
        got = exc.message
    assert got == expected


def test_snapshot_id_set_is_every_id_even_with_odd_characters() -> None:
    snapshot = devs(("a\0b", 0), ("c", None), ("d::1", 1))  # an ID holding NUL takes the plain path
    assert snapshot.id_set() == frozenset({"a\0b", "c", "d::1"})
    assert devs().id_set() == frozenset()
