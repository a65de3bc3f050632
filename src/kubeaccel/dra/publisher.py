"""Publish the node's pools as ResourceSlices and keep them current.

On start: every slice of this driver on this node that is not one we publish now is deleted (a
resource removed from the config, a previous run's naming), and pool generations continue above
the highest one found. Then, on every inventory change, each pool is re-applied with the
generation bumped — at most one write pass per ``MIN_INTERVAL_S`` (0.2 s): changes that arrive
sooner (a flapping device) are folded into the next pass, which always publishes the inventory as
it is then, so the API server ends in the latest state. The generation moves only when a pass has
been written: a failed one (an outage) is retried with the same generation. After ``RESYNC_S``
of quiet the API server's copies are compared with ours and republished if someone deleted or
edited them. Taints mark unhealthy devices; if the API server
drops them (``DRADeviceTaints`` off), unhealthy devices are left out instead. An unreachable API
server is retried with backoff while the DRA service keeps answering from the checkpoint.
``withdraw`` deletes our slices.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping
from typing import Any

from kubeaccel.dra.inventory import Inventory
from kubeaccel.dra.metrics import Metrics
from kubeaccel.dra.model import resource_slices
from kubeaccel.errors import KubeaccelError

log = logging.getLogger(__name__)

BACKOFF_MIN_S = 0.2
BACKOFF_MAX_S = 10.0
MIN_INTERVAL_S = 0.2  # the floor between two write passes (documented in docs/dra.md; at least 0.1 s)
RESYNC_S = 60.0  # how often the slices are compared with the API server's (someone deleted or edited one)


class SliceApi:
    """What the publisher needs from the API server (``kube.dra`` in production, bound to a client)."""

    def __init__(
        self,
        list_slices: Callable[[], list[dict[str, Any]]],
        apply_slice: Callable[[Mapping[str, Any]], dict[str, Any]],
        delete_slice: Callable[[str], None],
    ) -> None:
        self.list = list_slices
        self.apply = apply_slice
        self.delete = delete_slice


def _summary(spec: Mapping[str, Any]) -> tuple[Any, ...]:
    """What must match between our slice and the stored one (the API server may add defaulted fields)."""
    devices = spec.get("devices") or []
    return (
        (spec.get("pool") or {}).get("name"),
        (spec.get("pool") or {}).get("generation"),
        tuple(d.get("name") for d in devices),
        tuple(bool(d.get("taints")) for d in devices),
    )


def _has_dropped_taints(sent: Mapping[str, Any], stored: Mapping[str, Any]) -> bool:
    wanted = any(d.get("taints") for d in sent["spec"]["devices"])
    kept = any(d.get("taints") for d in ((stored.get("spec") or {}).get("devices") or []))
    return wanted and not kept


class Publisher:
    def __init__(self, driver: str, inventory: Inventory, api: SliceApi, metrics: Metrics | None = None) -> None:
        self.driver = driver
        self.metrics = metrics or Metrics()
        self.inventory = inventory
        self.api = api
        self.generation = 0
        self.taints = True
        self.published_version = 0  # the inventory version now in the API server
        self.published = asyncio.Event()  # set while the API server has the current version
        self.errors = 0
        self.resync_s = RESYNC_S
        self.min_interval_s = MIN_INTERVAL_S
        self.passes = 0  # write passes attempted (each applies every pool once)

    def _desired(self, generation: int | None = None) -> dict[str, dict[str, Any]]:
        generation = self.generation if generation is None else generation
        return {
            m["metadata"]["name"]: m
            for pool in self.inventory.pools.values()
            for m in resource_slices(self.inventory.node, self.driver, pool, generation, taints=self.taints)
        }

    def _drifted(self) -> bool:
        """True when the API server's slices differ from ours (a slice deleted, edited or added)."""
        stored = {s["metadata"]["name"]: _summary(s["spec"]) for s in self.api.list()}
        desired = {name: _summary(m["spec"]) for name, m in self._desired().items()}
        return stored != desired

    def _sync(self, first: bool) -> None:
        """One blocking pass (run in a thread): clean up on the first, then apply every pool."""
        if first:
            existing = self.api.list()
            generations = [int(((s.get("spec") or {}).get("pool") or {}).get("generation") or 0) for s in existing]
            self.generation = max([self.generation, *generations])
            wanted = set(self._desired())
            for stale in existing:
                name = stale["metadata"]["name"]
                if name not in wanted:
                    log.info("deleting stale ResourceSlice %s", name)
                    self.api.delete(name)
        following = self.generation + 1  # taken only once every pool is written
        for manifest in self._desired(following).values():
            stored = self.api.apply(manifest)
            if self.taints and _has_dropped_taints(manifest, stored):
                log.warning("the API server dropped device taints (DRADeviceTaints off): unhealthy devices are "
                            "left out of the ResourceSlices instead")
                self.taints = False
                following += 1
                for again in self._desired(following).values():
                    self.api.apply(again)
                break
        self.generation = following

    async def run(self, stop: asyncio.Event) -> None:
        backoff = BACKOFF_MIN_S
        first = True
        warned = False
        loop = asyncio.get_running_loop()
        last_pass = -float("inf")
        written = 0  # the inventory version last written
        while not stop.is_set():
            floor = last_pass + self.min_interval_s - loop.time()
            if floor > 0:
                await _sleep_or_stop(stop, floor)
                if stop.is_set():
                    break
            version = self.inventory.version
            if written and version - written > 1:
                self.metrics.publish_skipped.inc(version - written - 1)
            last_pass = loop.time()
            self.passes += 1
            try:
                await asyncio.to_thread(self._sync, first)
            except KubeaccelError as exc:
                self.errors += 1
                self.metrics.publishes.labels("error").inc()
                self.published.clear()
                if not warned:
                    log.warning("cannot publish ResourceSlices: %s; retrying with backoff", exc.message)
                    warned = True
                await _sleep_or_stop(stop, backoff)
                backoff = min(backoff * 2, BACKOFF_MAX_S)
                continue
            self.metrics.publishes.labels("ok").inc()
            if warned:
                log.info("ResourceSlices published again")
            first, warned, backoff = False, False, BACKOFF_MIN_S
            self.published_version = written = version
            self.published.set()
            while not stop.is_set():
                waiter = asyncio.ensure_future(self.inventory.changed(version, self.resync_s))
                stopper = asyncio.ensure_future(stop.wait())
                await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
                waiter.cancel()
                stopper.cancel()
                if self.inventory.version != version or stop.is_set():
                    break
                try:  # a quiet period: compare with the API server, republish only on drift
                    if await asyncio.to_thread(self._drifted):
                        log.info("ResourceSlices differ from the API server's: publishing again")
                        first = True  # clean up whatever was added, as at start
                        break
                except KubeaccelError:
                    break  # the next sync reports it and backs off
            self.published.clear()

    def withdraw(self) -> None:
        """Delete this node's slices of this driver (blocking; on a clean shutdown for good)."""
        for found in self.api.list():
            self.api.delete(found["metadata"]["name"])


async def _sleep_or_stop(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)
