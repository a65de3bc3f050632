"""The controller's Prometheus metrics: apps by state, submit latency, reconcile errors."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector


class _States(Collector):
    def __init__(self, states: Callable[[], dict[str, int]]) -> None:
        self._states = states

    def collect(self):  # type: ignore[no-untyped-def]
        family = GaugeMetricFamily("kubeaccel_operator_apps", "SparkApplications by state", labels=["state"])
        for state, count in sorted(self._states().items()):
            family.add_metric([state], count)
        yield family


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.submit_seconds = Histogram(
            "kubeaccel_operator_submit_seconds",
            "Time to submit one app (resolve, pre-flight, create)",
            registry=self.registry,
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )
        self.reconcile_seconds = Histogram(
            "kubeaccel_operator_reconcile_seconds", "Time of one reconcile", registry=self.registry
        )
        self.reconcile_errors = Counter(
            "kubeaccel_operator_reconcile_errors", "Reconciles that failed and were retried", registry=self.registry
        )
        self.submission_failures = Counter(
            "kubeaccel_operator_submission_failures", "Apps that ended SUBMISSION_FAILED", registry=self.registry
        )

    def track_states(self, states: Callable[[], dict[str, int]]) -> None:
        self.registry.register(_States(states))
