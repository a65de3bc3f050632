"""``kubeaccel.view.live``: watch events applied between full reads end where the API server's state is.

A simulated API server (objects with increasing resourceVersions) emits the events of a random history;
the full read returns its list at some point of it, while the watch delivers the events at its own pace,
before, during and after the read (a watch may lag behind the list or run ahead of it). Whatever the
interleaving, once every event is delivered the held objects are the server's final state.
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kubeaccel.errors import UnavailableError
from kubeaccel.view.live import LiveSources, apply, version
from kubeaccel.view.readers import Sources
from kubeaccel.view.server import Feed, Refresher


def pod(name: str, rv: int | str, phase: str = "Running") -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": "ns", "uid": f"uid-{name}", "resourceVersion": str(rv)},
            "status": {"phase": phase}}


def sources(pods: list[dict[str, Any]]) -> Sources:
    return Sources([], [], [], pods, [], None, [], [])


def render(s: Sources) -> dict[str, Any]:
    return {"pods": [(p["metadata"]["name"], p["status"]["phase"]) for p in s.pods]}


def test_an_event_replaces_removes_and_never_goes_back() -> None:
    held: dict[str, dict[str, Any]] = {}
    assert apply(held, "ADDED", pod("a", 5))
    assert not apply(held, "MODIFIED", pod("a", 4, "Failed"))  # older than held
    assert not apply(held, "MODIFIED", pod("a", 5))  # the same
    assert apply(held, "MODIFIED", pod("a", 6, "Succeeded"))
    assert held["uid-a"]["status"]["phase"] == "Succeeded"
    assert not apply(held, "DELETED", pod("a", 6))
    assert apply(held, "DELETED", pod("a", 7))
    assert held == {}
    assert version(pod("x", "abc")) is None and version(pod("x", "9" * 30)) is None
    # an RV that is not an integer: the event applies (it cannot be ordered), but never onto a fresh list
    held = {"uid-b": pod("b", "opaque")}
    assert not apply(held, "MODIFIED", pod("b", "other", "Failed"), replay=True)
    assert apply(held, "MODIFIED", pod("b", "other", "Failed"))


def test_events_before_the_first_read_wait_for_it_and_render_needs_one() -> None:
    live = LiveSources(lambda: sources([pod("a", 1)]), render)
    assert live.render() is None
    assert not live.event("Pod", "ADDED", pod("b", 2))  # nothing held yet: the first read will list it
    assert live.read() == {"pods": [("a", "Running")]}
    assert live.event("Pod", "ADDED", pod("b", 2))
    assert not live.event("Node", "ADDED", pod("n", 3))  # not a watched kind
    assert live.render() == {"pods": [("a", "Running"), ("b", "Running")]}


def test_a_failed_read_keeps_what_is_held() -> None:
    fail = [False]

    def read() -> Sources:
        if fail[0]:
            raise RuntimeError("down")
        return sources([pod("a", 1)])

    live = LiveSources(read, render)
    live.read()
    fail[0] = True
    with pytest.raises(RuntimeError):
        live.read()
    assert live.event("Pod", "MODIFIED", pod("a", 2, "Failed"))
    assert live.render() == {"pods": [("a", "Failed")]}


@st.composite
def histories(draw: Any) -> tuple[list[tuple[str, dict[str, Any]]], list[dict[str, dict[str, Any]]]]:
    """Events (type, object) with increasing RVs, and the server's state after each (state[0]: empty)."""
    names = ["a", "b", "c", "d"]
    state: dict[str, dict[str, Any]] = {}
    states = [dict(state)]
    events = []
    for rv in range(1, draw(st.integers(1, 25)) + 1):
        name = draw(st.sampled_from(names))
        if name in state and draw(st.booleans()):
            obj = pod(name, rv)  # a deletion carries the RV of the deletion
            del state[f"uid-{name}"]
            events.append(("DELETED", obj))
        else:
            kind = "MODIFIED" if f"uid-{name}" in state else "ADDED"
            obj = pod(name, rv, draw(st.sampled_from(["Pending", "Running", "Failed"])))
            state[f"uid-{name}"] = obj
            events.append((kind, obj))
        states.append(dict(state))
    return events, states


@settings(max_examples=400, deadline=None)
@given(data=st.data(), history=histories())
def test_any_interleaving_of_list_and_watch_ends_at_the_servers_state(data: Any, history: Any) -> None:
    events, states = history
    n = len(events)
    # the watch started before the first list, so it delivers from event 0 on; a list is never older than
    # what the watch delivered before the list began, and events delivered during a read may be older or
    # newer than the list
    before = data.draw(st.integers(0, n), label="delivered before the first read")
    first = data.draw(st.integers(before, n), label="first list at")
    during = data.draw(st.integers(before, n), label="delivered by the end of the first read")
    between = data.draw(st.integers(during, n), label="delivered before the second read")
    second = data.draw(st.integers(max(between, first), n), label="second list at")
    during2 = data.draw(st.integers(between, n), label="delivered by the end of the second read")
    listed = [first, second]
    delivered = [0]

    def deliver(upto: int) -> None:
        while delivered[0] < upto:
            kind, obj = events[delivered[0]]
            live.event("Pod", kind, obj)
            delivered[0] += 1

    reads = iter([(listed[0], during), (listed[1], during2)])

    def read() -> Sources:
        at, upto = next(reads)
        deliver(upto)  # the watch runs while the list is under way
        return sources(sorted(states[at].values(), key=lambda p: p["metadata"]["name"]))

    live = LiveSources(read, render)
    deliver(before)
    live.read()
    deliver(between)
    live.read()
    deliver(n)
    want = render(sources(sorted(states[n].values(), key=lambda p: p["metadata"]["name"])))
    assert live.render() == want


def test_a_writer_and_full_reads_racing_end_at_the_servers_state() -> None:
    """Threads: a writer changes the 'server' and delivers each event after its write, as a watch does;
    the refresher lists the server meanwhile, again and again."""
    lock = threading.Lock()
    store: dict[str, dict[str, Any]] = {}

    def read() -> Sources:
        with lock:
            return sources(sorted(store.values(), key=lambda p: p["metadata"]["name"]))

    live = LiveSources(read, render)
    live.read()
    stop = threading.Event()

    def refresher() -> None:
        while not stop.is_set():
            live.read()

    t = threading.Thread(target=refresher)
    t.start()
    for rv in range(1, 3001):
        name = f"p{rv % 37}"
        with lock:
            if f"uid-{name}" in store and rv % 3 == 0:
                del store[f"uid-{name}"]
                kind, obj = "DELETED", pod(name, rv)
            else:
                kind = "MODIFIED" if f"uid-{name}" in store else "ADDED"
                obj = store[f"uid-{name}"] = pod(name, rv, ["Pending", "Running"][rv % 2])
        live.event("Pod", kind, obj)
    stop.set()
    t.join()
    assert live.render() == render(read())


def test_the_refresher_renders_events_between_reads_and_says_when_a_read_fails() -> None:
    """The server's refresher with a held view (no HTTP, no cluster): an event shows without a full read;
    a failed full read keeps what is held, says why, and events still show."""

    fail, reads = [False], [0]

    def read() -> Sources:
        reads[0] += 1
        if fail[0]:
            raise UnavailableError("cannot reach the Kubernetes API server")
        return sources([pod("a", 1)])

    live, feed = LiveSources(read, render), Feed()
    refresher = Refresher(live.update, feed, 60, live.render)
    refresher.refresh()
    refresher.render_now()
    refresher.start()
    try:
        def newest(expected: dict[str, Any]) -> None:
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                if json.loads(feed.body) == expected:
                    return
                time.sleep(0.01)
            raise AssertionError(f"{feed.body!r} never became {expected}")

        newest({"pods": [["a", "Running"]]})
        done = reads[0]
        if live.event("Pod", "ADDED", pod("b", 2)):
            refresher.changed()
        newest({"pods": [["a", "Running"], ["b", "Running"]]})
        assert reads[0] == done
        fail[0] = True
        refresher.wake()
        newest({"pods": [["a", "Running"], ["b", "Running"]], "error": "cannot reach the Kubernetes API server"})
        if live.event("Pod", "MODIFIED", pod("b", 3, "Failed")):
            refresher.changed()
        newest({"pods": [["a", "Running"], ["b", "Failed"]], "error": "cannot reach the Kubernetes API server"})
    finally:
        refresher.stop()
