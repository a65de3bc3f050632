"""PCI facts from sysfs, as the standard DRA attributes of Kubernetes 1.37 name them.

``k8s.io/dynamic-resource-allocation`` v0.37 (package ``deviceattribute``) defines
``resource.kubernetes.io/pciBusID`` (the extended BDF, ``0000:3b:00.0``) and
``resource.kubernetes.io/pcieRoot`` (``pci<domain>:<bus>``, the first directory under
``/sys/devices`` on the path ``/sys/bus/pci/devices/<BDF>`` links to): devices under one root
complex share it, so a claim can ask for a GPU and a NIC on the same root. ``numaNode`` comes from
the device model's ``numa_node`` (the DRA model publishes it). Pure reads under ``root``.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from kubeaccel.devices.backends._poll import under_root

PCI_BUS_ID = "resource.kubernetes.io/pciBusID"
PCIE_ROOT = "resource.kubernetes.io/pcieRoot"
_BDF = re.compile(r"[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-9a-f]")
_ROOT = re.compile(r"pci[0-9a-f]{4}:[0-9a-f]{2}")


def pci_attributes(root: Path, device_link: str, bus_id: str | None = None) -> tuple[tuple[str, str], ...]:
    """``(pciBusID, pcieRoot)`` attributes for the PCI device ``device_link`` resolves to (a sysfs path
    such as ``/sys/bus/pci/devices/0000:3b:00.0`` or ``/sys/class/ve/ve0/device``); those it cannot tell
    are left out (no sysfs entry, not a PCI function, a virtual device). ``bus_id``, where the driver
    already knows it (NVML), is published even without sysfs."""
    known = [(PCI_BUS_ID, bus_id)] if bus_id is not None and _BDF.fullmatch(bus_id) else []
    try:
        target = Path(os.path.realpath(under_root(root, device_link), strict=True))
        devices = Path(os.path.realpath(under_root(root, "/sys/devices")))
    except OSError:
        return tuple(known)
    bdf = target.name
    if not _BDF.fullmatch(bdf):
        return tuple(known)
    out: list[tuple[str, str]] = [(PCI_BUS_ID, bdf)]
    try:
        first = target.relative_to(devices).parts[0]
    except (ValueError, IndexError):
        return tuple(out)
    if _ROOT.fullmatch(first):
        out.append((PCIE_ROOT, first))
    return tuple(out)
