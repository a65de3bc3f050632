"""NEC SX-Aurora Vector Engine (``nec.com/ve``): the first Kubernetes device backend for VEs.

Discovery follows what VEOS users already see. Every ``/dev/veslotN`` symlink is one device:
its ID is ``veslotN`` and its index, the value the workload sees, is the slot number ``N`` (the
number ``VE_NODE_NUMBER`` and ``ve_exec -N`` take). The link points at the device node
``/dev/veM``, whose attributes live in ``/sys/class/ve/veM/``:

* health: ``os_state`` must read ``0`` (ONLINE); where the card has ``ve_state`` (VE1, VE3) it
  must read ``1`` (ONLINE / AVAILABLE). A missing or unreadable attribute, or a link whose
  ``/dev/veM`` is gone, is Unhealthy. sysfs values are ASCII text (``"0\\n"``), not raw bytes.
* NUMA: ``device/numa_node`` (the PCI attribute; negative means none).

A container gets the ``/dev/veM`` nodes and ``/dev/veslotN`` links of its slots, a bind mount of
the VEOS socket directory (``veosSocketDir``, default ``/var/opt/nec/ve/veos``, holding
``veosN.sock`` and ``ived.sock``), ``VE_NODE_NUMBER`` (its first slot) and ``_VENODELIST`` (all its
slots, space-separated). VE programs also need unlimited memlock (``IPC_LOCK``); that is the pod
spec's business, not the plugin's. The device major number is assigned at module load, so it
is read from the node (``st_rdev``) and never assumed.

``resetCommand`` (optional) makes the backend ``Resettable``: the plugin then asks the kubelet
for ``PreStartContainer`` and runs the command once per allocated VE, with ``{slot}`` and
``{device}`` (``/dev/veM``) substituted, before the container starts; a non-zero exit fails the
container start with the command's output.
"""

from __future__ import annotations

import os
import re
import stat
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, StrictFloat, field_validator

from kubeaccel.devices.backends._pci import pci_attributes
from kubeaccel.devices.backends._poll import ChangePoller, read_int, read_text, under_root
from kubeaccel.devices.model import (
    Backend,
    ContainerAllocation,
    Device,
    DeviceNode,
    Devices,
    Health,
    Mount,
    sort_key,
)
from kubeaccel.errors import KubeaccelError

OS_STATE_ONLINE = 0
VE_STATE_ONLINE = 1  # VE1 "ONLINE", VE3 "AVAILABLE"
_SLOT_LINK = re.compile(r"^veslot(\d+)$")
_VE_NODE = re.compile(r"^ve(\d+)$")
# Attributes shown by `kubeaccel plugin devices` when the driver provides them.
_INFO_ATTRIBUTES = ("model", "type", "serial", "num_of_core", "memory_size", "fw_version")


def _capacity(info: dict[str, str]) -> tuple[tuple[str, int], ...]:
    """DRA capacity from sysfs: ``cores`` (``num_of_core``) and ``memory`` (``memory_size``, in GB)."""
    out: list[tuple[str, int]] = []
    cores, memory = info.get("num_of_core", ""), info.get("memory_size", "")
    if cores.isascii() and cores.isdecimal() and len(cores) < 10:
        out.append(("cores", int(cores)))
    if memory.isascii() and memory.isdecimal() and len(memory) < 10:
        out.append(("memory", int(memory) * 10**9))
    return tuple(out)


class Config(BaseModel):
    """The VE backend's own keys."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)

    veos_socket_dir: str = Field(
        default="/var/opt/nec/ve/veos",
        alias="veosSocketDir",
        description="Host directory of the VEOS sockets, bind-mounted at the same path in containers.",
    )
    reset_command: list[str] | None = Field(
        default=None,
        alias="resetCommand",
        min_length=1,
        description="argv run per VE before a container starts; {slot} and {device} are substituted.",
    )
    reset_timeout_seconds: StrictFloat = Field(default=60.0, gt=0, le=3600, alias="resetTimeoutSeconds")
    poll_interval_seconds: StrictFloat = Field(
        default=0.1, gt=0, le=60, alias="pollIntervalSeconds", description="How often sysfs health is re-read."
    )

    @field_validator("veos_socket_dir")
    @classmethod
    def _absolute(cls, path: str) -> str:
        if not path.startswith("/"):
            raise ValueError(f"{path!r} is not an absolute path")
        return path

    @field_validator("reset_command")
    @classmethod
    def _placeholders(cls, command: list[str] | None) -> list[str] | None:
        for part in command or ():
            try:
                part.format_map({"slot": "0", "device": "/dev/ve0"})
            except (KeyError, ValueError, IndexError) as exc:
                raise ValueError(
                    f"{part!r} has a bad placeholder ({exc}); only {{slot}} and {{device}} are substituted, "
                    "write {{ and }} for literal braces"
                ) from exc
        return command


class VEBackend:
    """``Backend`` over the Vector Engines behind ``/dev/veslot*``."""

    def __init__(self, resource_name: str, config: Config, *, root: Path = Path("/")) -> None:
        self._resource_name = resource_name
        self._config = config
        self._root = root
        self._poller = ChangePoller(self._fingerprint, config.poll_interval_seconds)

    @property
    def resource_name(self) -> str:
        return self._resource_name

    def _slots(self) -> list[tuple[int, str | None]]:
        """(slot, ``veM`` name or None for a broken link) for every ``/dev/veslotN`` link."""
        dev = under_root(self._root, "/dev")
        try:
            names = os.listdir(dev)
        except OSError:
            return []
        slots = []
        for name in names:
            match = _SLOT_LINK.match(name)
            if match is None or not os.path.islink(dev / name):
                continue
            try:
                target = os.readlink(dev / name)
            except OSError:
                target = ""
            node = os.path.basename(target.rstrip("/"))
            slots.append((int(match.group(1)), node if _VE_NODE.match(node) else None))
        return sorted(slots)

    def _fingerprint(self) -> tuple[tuple[int, str | None, bool, str | None, str | None], ...]:
        state = []
        for slot, node in self._slots():
            sysfs = self._sysfs(node) if node else None
            state.append(
                (
                    slot,
                    node,
                    node is not None and os.path.exists(under_root(self._root, f"/dev/{node}")),
                    read_text(sysfs / "os_state") if sysfs else None,
                    read_text(sysfs / "ve_state") if sysfs else None,
                )
            )
        return tuple(state)

    def _sysfs(self, node: str) -> Path:
        return under_root(self._root, f"/sys/class/ve/{node}")

    def _health(self, node: str | None) -> Health:
        if node is None or not os.path.exists(under_root(self._root, f"/dev/{node}")):
            return Health.UNHEALTHY
        sysfs = self._sysfs(node)
        if read_int(sysfs / "os_state") != OS_STATE_ONLINE:
            return Health.UNHEALTHY
        if (sysfs / "ve_state").exists() and read_int(sysfs / "ve_state") != VE_STATE_ONLINE:
            return Health.UNHEALTHY
        return Health.HEALTHY

    def _device(self, slot: int, node: str | None) -> Device:
        link = f"/dev/veslot{slot}"
        nodes = [DeviceNode(str(under_root(self._root, link)), link)]
        attributes: list[tuple[str, str]] = [("slot", str(slot))]
        numa: int | None = None
        capacity: tuple[tuple[str, int], ...] = ()
        if node is not None:
            nodes.insert(0, DeviceNode(str(under_root(self._root, f"/dev/{node}")), f"/dev/{node}"))
            attributes.append(("device", f"/dev/{node}"))
            sysfs = self._sysfs(node)
            raw_numa = read_int(sysfs / "device" / "numa_node")
            numa = raw_numa if raw_numa is not None and raw_numa >= 0 else None
            rdev = _char_device_number(under_root(self._root, f"/dev/{node}"))
            if rdev:
                attributes.append(("dev", rdev))
            for attr in _INFO_ATTRIBUTES:
                value = read_text(sysfs / attr)
                if value:
                    attributes.append((attr, value))
            info = dict(attributes)
            if "fw_version" in info:
                attributes.append(("fwVersion", info["fw_version"]))
            attributes.extend(pci_attributes(self._root, f"/sys/class/ve/{node}/device"))
            capacity = _capacity(info)
        return Device(
            id=f"veslot{slot}",
            index=str(slot),
            health=self._health(node),
            numa_node=numa,
            nodes=tuple(nodes),
            attributes=tuple(attributes),
            capacity=capacity,
        )

    def scan(self) -> Devices:
        return Devices(self._device(slot, node) for slot, node in self._slots())

    def container_allocation(self, devices: Sequence[Device]) -> ContainerAllocation:
        ordered = sorted(devices, key=lambda d: sort_key(d.id))
        slots = [d.index for d in ordered]
        nodes: dict[str, DeviceNode] = {}
        for dev in ordered:
            for node in dev.nodes:
                nodes.setdefault(node.container_path, node)
        envs = {"VE_NODE_NUMBER": slots[0], "_VENODELIST": " ".join(slots)} if slots else {}
        veos = self._config.veos_socket_dir
        return ContainerAllocation(
            envs=envs,
            device_nodes=tuple(nodes.values()),
            mounts=(Mount(veos, veos, read_only=False),),
        )

    def wait_for_change(self, timeout: float) -> bool:
        return self._poller.wait(timeout)

    def close(self) -> None:
        self._poller.close()


def _char_device_number(path: Path) -> str | None:
    """``major:minor`` of a character device; the VE major is dynamic, so it is always read."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    if not stat.S_ISCHR(st.st_mode):
        return None
    return f"{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}"


class ResettableVEBackend(VEBackend):
    """A ``VEBackend`` with ``resetCommand`` set: the plugin offers ``PreStartContainer``."""

    def reset(self, devices: Sequence[Device]) -> None:
        command = self._config.reset_command
        assert command is not None  # create() builds this class only when it is set
        for dev in sorted(devices, key=lambda d: sort_key(d.id)):
            attrs = dict(dev.attributes)
            values = {"slot": dev.index, "device": attrs.get("device", "")}
            argv = [part.format_map(values) for part in command]
            code, output = _run_reset(argv, self._config.reset_timeout_seconds, dev.index)
            if code != 0:
                raise KubeaccelError(
                    f"resetting VE slot {dev.index} failed: {argv[0][:200]} exited with {code}: {output}",
                    hint="run the resetCommand by hand on the node to see why it fails",
                )


def _run_reset(argv: list[str], timeout: float, slot: str) -> tuple[int, str]:
    """Run one reset command; (exit code, the tail of its output decoded leniently).

    Output goes to a temporary file, not a pipe: a background child the command leaves behind
    (a daemon it restarts) may hold its stdout open, and waiting for the pipe's end would then
    time out a reset that succeeded. Only the command's own exit is waited for.
    """
    with tempfile.TemporaryFile() as out:
        try:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
        except OSError as exc:
            raise KubeaccelError(
                f"resetting VE slot {slot} failed: cannot run {argv[0][:200]!r}: {exc.strerror or exc}",
                hint="check resetCommand in the plugin config (the program must exist and be executable)",
            ) from None
        try:
            code = proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise KubeaccelError(
                f"resetting VE slot {slot} failed: {argv[0][:200]} did not finish within {timeout:g} s",
                hint="raise resetTimeoutSeconds in the plugin config, or check why the reset hangs",
            ) from None
        size = out.seek(0, os.SEEK_END)
        out.seek(max(0, size - 2000))
        text = out.read().decode("utf-8", errors="replace").strip()[-500:]
    return code, text


def create(resource_name: str, config: Config, *, root: Path = Path("/")) -> Backend:
    if config.reset_command is not None:
        return ResettableVEBackend(resource_name, config, root=root)
    return VEBackend(resource_name, config, root=root)
