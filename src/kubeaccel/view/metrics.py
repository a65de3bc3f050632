"""A plugin pod's Prometheus text, parsed into devices and allocations: pure and bounded.

The body comes from a pod through the API server's proxy, so it is untrusted: it is size-bounded by the
reader (``MAX_METRICS_BYTES``), decoded strictly, parsed by prometheus-client's own text parser, and
only ``MAX_SERIES`` samples of our two families are kept. Anything else is a ``MetricsError`` the
view reports for that node.
"""

from __future__ import annotations

from kubeaccel.view.model import Allocation, PluginDevice

MAX_METRICS_BYTES = 4 << 20
MAX_SERIES = 10_000  # per family: far above a node's devices (the plugin bounds its own series too)
MAX_LABEL = 253  # a Kubernetes name at most; longer label values are not ours
HEALTH_FAMILY = "kubeaccel_device_health"
ALLOCATED_FAMILY = "kubeaccel_device_allocated"


class MetricsError(ValueError):
    """The body is not Prometheus text that a kubeaccel plugin writes."""


def _label(labels: dict[str, str], name: str) -> str:
    value = labels.get(name, "")
    if len(value) > MAX_LABEL:
        raise MetricsError(f"label {name} longer than {MAX_LABEL} characters")
    return value


def parse(body: bytes) -> tuple[tuple[PluginDevice, ...], tuple[Allocation, ...]]:
    """The devices (``kubeaccel_device_health``) and allocations (``kubeaccel_device_allocated``) a
    plugin exposes; samples whose value is not 1 are ignored (1 marks a live series)."""
    from prometheus_client.parser import text_string_to_metric_families

    if len(body) > MAX_METRICS_BYTES:
        raise MetricsError(f"larger than {MAX_METRICS_BYTES} bytes")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MetricsError(f"not UTF-8 text (byte {exc.start})") from None
    devices: list[PluginDevice] = []
    allocations: list[Allocation] = []
    ours = False
    try:
        for family in text_string_to_metric_families(text):
            ours = ours or family.name.startswith("kubeaccel_")
            if family.name not in (HEALTH_FAMILY, ALLOCATED_FAMILY):
                continue
            for sample in family.samples:
                if sample.name != family.name or sample.value != 1:
                    continue
                labels = sample.labels
                if family.name == HEALTH_FAMILY:
                    if len(devices) >= MAX_SERIES:
                        raise MetricsError(f"more than {MAX_SERIES} {HEALTH_FAMILY} series")
                    devices.append(PluginDevice(*(_label(labels, k) for k in
                                                  ("resource", "device", "index", "numa", "health"))))
                else:
                    if len(allocations) >= MAX_SERIES:
                        raise MetricsError(f"more than {MAX_SERIES} {ALLOCATED_FAMILY} series")
                    allocations.append(Allocation(*(_label(labels, k) for k in
                                                    ("resource", "device", "namespace", "pod", "container"))))
    except MetricsError:
        raise
    except (ValueError, IndexError, KeyError, TypeError, AttributeError) as exc:
        raise MetricsError(f"not Prometheus text ({str(exc)[:200]})") from None
    if not ours:
        raise MetricsError("no kubeaccel metrics in the answer")
    return tuple(devices), tuple(allocations)
