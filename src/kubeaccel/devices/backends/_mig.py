"""MIG (Multi-Instance GPU) for the nvidia backend: strategies, profile names, capability nodes. Pure.

The strategies are those of NVIDIA's device plugin (``--mig-strategy``, facts from
NVIDIA/k8s-device-plugin ``internal/rm/device_map.go`` and ``internal/lm/mig-strategy.go``):

* ``none``: every GPU is served whole under the entry's resource, MIG mode or not.
* ``single``: MIG-enabled GPUs are served as their MIG devices under the entry's resource
  (``nvidia.com/gpu``). All GPUs must agree (all MIG-enabled or none; none is the same as
  ``none``), every MIG-enabled GPU must have MIG devices, and they must all be of one profile.
* ``mixed``: full GPUs (MIG off) stay ``nvidia.com/gpu`` and MIG devices of profile P are
  ``nvidia.com/mig-P``. NVIDIA's plugin makes those resources itself; here each resource is one
  config entry (see ``selection``): an entry named ``<domain>/mig-<profile>`` serves the MIG
  devices of that profile, any other name the GPUs with MIG off.

A MIG device's container needs its parent's ``/dev/nvidia<minor>`` and two capability nodes,
``/dev/nvidia-caps/nvidia-cap<N>`` for its GPU instance and its compute instance; ``N`` is listed
in ``/proc/driver/nvidia-caps/mig-minors`` (lines ``gpu<minor>/gi<GI>/access <N>`` and
``gpu<minor>/gi<GI>/ci<CI>/access <N>``), as NVIDIA's plugin reads it.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

from kubeaccel.devices.backends._nvml import Gpu, MigDevice
from kubeaccel.devices.backends._poll import under_root
from kubeaccel.errors import ConfigError, UnavailableError

STRATEGIES = ("none", "single", "mixed")
MIG_MINORS = "/proc/driver/nvidia-caps/mig-minors"
_MINOR_LINE = re.compile(r"gpu(\d+)/gi(\d+)(?:/ci(\d+))?/access (\d+)")
_MIG_RESOURCE = re.compile(r"^[^/]+/mig-(.+)$")
_HINT = "see docs/backends.md (nvidia, MIG); `kubeaccel plugin devices --config FILE` shows what a node offers"


def profile_name(mig: MigDevice, gpu_memory_bytes: int) -> str:
    """The profile as NVIDIA names it: ``<G>g.<GB>gb``, or ``<C>c.<G>g.<GB>gb`` when the compute
    instance has fewer slices than its GPU instance. GB is the MIG memory's share of the GPU rounded
    up to eighths, times the GPU's memory in whole GiB, rounded (so 9.75 GiB of an 80 GiB A100 is
    ``10gb``). The ``+me`` (media extensions) suffix is not derived."""
    gb = round(mig.memory_bytes / 2**30)
    if gpu_memory_bytes > 0:
        share = math.ceil(mig.memory_bytes / gpu_memory_bytes * 8) / 8
        gb = math.floor(share * math.ceil(gpu_memory_bytes / 2**30) + 0.5)  # Go's math.Round
    head = f"{mig.gpu_slices}g.{gb}gb"
    return head if mig.compute_slices == mig.gpu_slices else f"{mig.compute_slices}c.{head}"


def read_mig_minors(root: Path) -> dict[tuple[int, int, int | None], int]:
    """``(gpu minor, GI, CI or None) -> nvidia-cap minor`` from ``mig-minors``; empty where there is none."""
    try:
        text = under_root(root, MIG_MINORS).read_text()
    except (OSError, UnicodeDecodeError):
        return {}
    out: dict[tuple[int, int, int | None], int] = {}
    for line in text.splitlines():
        match = _MINOR_LINE.fullmatch(line.strip())
        if match:
            gpu, gi, ci, minor = match.groups()
            out[(int(gpu), int(gi), int(ci) if ci is not None else None)] = int(minor)
    return out


def capability_nodes(gpu: Gpu, mig: MigDevice, minors: dict[tuple[int, int, int | None], int]) -> tuple[str, str]:
    """The GPU-instance and compute-instance capability nodes of one MIG device."""
    gi = minors.get((gpu.minor, mig.gpu_instance, None))
    ci = minors.get((gpu.minor, mig.gpu_instance, mig.compute_instance))
    if gi is None or ci is None:
        missing = f"gpu{gpu.minor}/gi{mig.gpu_instance}" + ("" if gi is None else f"/ci{mig.compute_instance}")
        raise UnavailableError(
            f"MIG device {mig.uuid} of GPU {gpu.index}: {MIG_MINORS} lists no capability for {missing}/access",
            hint="the nvidia-caps module must be loaded and /proc/driver/nvidia-caps visible to the plugin "
            "(mount the host's /proc/driver/nvidia-caps); `nvidia-smi mig -lgi` shows the instances",
        )
    return f"/dev/nvidia-caps/nvidia-cap{gi}", f"/dev/nvidia-caps/nvidia-cap{ci}"


@dataclass(frozen=True)
class Selection:
    """What one config entry serves: whole GPUs and MIG devices (each with its parent)."""

    gpus: tuple[Gpu, ...]
    migs: tuple[tuple[Gpu, MigDevice], ...]


def _check_populated(gpus: list[Gpu], strategy: str) -> None:
    empty = [g.index for g in gpus if g.mig_enabled and not g.migs]
    if empty:
        raise ConfigError(
            f"migStrategy: {strategy}: GPU {', '.join(map(str, empty))} has MIG mode on but no MIG devices",
            hint="create GPU and compute instances (nvidia-smi mig -cgi … -C), turn MIG mode off, "
            "or use migStrategy: none",
        )


def selection(strategy: str, resource_name: str, gpus: list[Gpu]) -> Selection:
    """The devices one entry serves under ``strategy``; ``ConfigError`` naming ``migStrategy`` where
    the node's MIG layout does not fit it."""
    if strategy == "none":
        return Selection(tuple(gpus), ())
    _check_populated(gpus, strategy)
    whole = tuple(g for g in gpus if not g.mig_enabled)
    migs = tuple((g, m) for g in gpus if g.mig_enabled for m in g.migs)
    if strategy == "single":
        if whole and migs:
            raise ConfigError(
                f"migStrategy: single: GPUs {', '.join(str(g.index) for g in whole)} have MIG mode off "
                "while others have it on",
                hint="with single every GPU must have MIG mode on (or every GPU off); use migStrategy: mixed "
                "for a node with both",
            )
        profiles = sorted({profile_name(m, g.memory_bytes) for g, m in migs})
        if len(profiles) > 1:
            raise ConfigError(
                f"migStrategy: single: more than one MIG profile on this node ({', '.join(profiles)})",
                hint="with single all MIG devices must be of one profile; use migStrategy: mixed",
            )
        return Selection(whole, migs)
    if strategy == "mixed":
        match = _MIG_RESOURCE.match(resource_name)
        if match is None:
            return Selection(whole, ())
        wanted = match.group(1)
        return Selection((), tuple((g, m) for g, m in migs if profile_name(m, g.memory_bytes) == wanted))
    raise ConfigError(f"migStrategy: {strategy!r} is not one of {', '.join(STRATEGIES)}", hint=_HINT)


def unserved_profiles(resource_name: str, gpus: list[Gpu]) -> dict[str, int]:
    """Under ``mixed``, for the entry serving whole GPUs: MIG profiles present (with counts) that it
    does not serve, so the operator can add ``<domain>/mig-<profile>`` entries."""
    if _MIG_RESOURCE.match(resource_name):
        return {}
    counts: dict[str, int] = {}
    for g in gpus:
        for m in g.migs:
            name = profile_name(m, g.memory_bytes)
            counts[name] = counts.get(name, 0) + 1
    return dict(sorted(counts.items()))
