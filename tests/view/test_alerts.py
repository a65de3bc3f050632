"""The chart's alert rules and Grafana dashboard, checked by the real promtool (built from Prometheus' Go
module by scripts/bootstrap.d/47-promtool.sh) and rendered by the real Helm.

Matrix: `promtool check rules` on the rules file and on every dashboard expression (as recording rules);
`promtool test rules` (tests/view/alerts_test.yaml: fires after its `for`, not on a blip, DRA and plugin
errors); the PrometheusRule is rendered only where its CRD is served and carries the file's groups; the
dashboard ConfigMap carries the grafana_dashboard label and the dashboard JSON; the metric names the
rules use are the ones the daemons export.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from deploy.chart import CHART, find, rendered

HERE = Path(__file__).resolve().parent
FILES = CHART / "files"
PROMTOOL = Path("~/.cache/kubeaccel/promtool/v0.316.0/bin/promtool").expanduser()


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    if not PROMTOOL.exists():
        raise AssertionError(f"{PROMTOOL} is missing: run scripts/bootstrap.d/47-promtool.sh (make bootstrap)")
    return subprocess.run([str(PROMTOOL), *args], capture_output=True, text=True, timeout=120, check=False)


def _dashboard() -> dict[str, Any]:
    return json.loads((FILES / "dashboard.json").read_text())  # type: ignore[no-any-return]


def test_the_rules_pass_promtool_check() -> None:
    done = promtool("check", "rules", str(FILES / "alerts.yaml"))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS: 3 rules found" in done.stdout


def test_the_alerts_pass_their_unit_tests() -> None:
    done = promtool("test", "rules", str(HERE / "alerts_test.yaml"))
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_dashboard_expression_is_valid_promql(tmp_path: Path) -> None:
    exprs = [t["expr"] for p in _dashboard()["panels"] for t in p["targets"]]
    assert len(exprs) >= 7
    rules = {"groups": [{"name": "dashboard", "rules": [
        {"record": f"kubeaccel:dashboard_expr_{i}", "expr": e} for i, e in enumerate(exprs)]}]}
    path = tmp_path / "dashboard-rules.yaml"
    path.write_text(yaml.safe_dump(rules))
    done = promtool("check", "rules", str(path))
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_rules_and_dashboard_use_the_metrics_the_daemons_export() -> None:
    from prometheus_client import generate_latest

    from kubeaccel.dra.metrics import Metrics as DraMetrics
    from kubeaccel.plugin.metrics import Metrics

    plugin, dra = Metrics(), DraMetrics()
    plugin.allocations.labels("r/x", "error").inc()
    plugin.registrations.labels("r/x", "ok").inc()
    plugin.allocate_seconds.labels("r/x").observe(0.001)
    dra.claims.labels("prepare", "error").inc()
    exported = (generate_latest(plugin.registry) + generate_latest(dra.registry)).decode()
    text = (FILES / "alerts.yaml").read_text() + (FILES / "dashboard.json").read_text()
    for name in ("kubeaccel_device_health", "kubeaccel_device_allocated", "kubeaccel_plugin_allocations_total",
                 "kubeaccel_plugin_registrations_total", "kubeaccel_dra_claims_total",
                 "kubeaccel_plugin_allocate_duration_seconds_bucket"):
        assert name in text
        assert f"\n# TYPE {name.removesuffix('_total').removesuffix('_bucket')}" in exported or name in exported, name


def test_the_prometheus_rule_only_where_its_crd_is_served() -> None:
    assert not [d for d in rendered({}) if d["kind"] == "PrometheusRule"]
    docs = rendered({}, "--api-versions", "monitoring.coreos.com/v1/PrometheusRule")
    rule = find(docs, "PrometheusRule")
    assert rule["spec"] == yaml.safe_load((FILES / "alerts.yaml").read_text())
    off = rendered({"prometheusRule": {"enabled": False}}, "--api-versions", "monitoring.coreos.com/v1/PrometheusRule")
    assert not [d for d in off if d["kind"] == "PrometheusRule"]


@pytest.mark.parametrize("namespace", ["", "monitoring"])
def test_the_dashboard_configmap_carries_the_sidecars_label(namespace: str) -> None:
    docs = rendered({"grafanaDashboard": {"enabled": True, "namespace": namespace}})
    (cm,) = [d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"].endswith("-dashboard")]
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert cm["metadata"]["namespace"] == (namespace or "kube-system")
    assert json.loads(cm["data"]["kubeaccel-devices.json"]) == _dashboard()
    assert not [d for d in rendered({}) if d["metadata"]["name"].endswith("-dashboard")]  # off by default


def test_the_device_plugin_and_dra_export_one_allocated_family() -> None:
    """The dashboard reads `kubeaccel_device_allocated` from both alike: the DRA driver's labels are the
    plugin's plus `app` (empty from the plugin, which Prometheus treats as absent)."""
    import re

    from kubeaccel.dra.metrics import Metrics as DraMetrics
    from kubeaccel.plugin.metrics import Metrics

    plugin, dra = Metrics().allocated._labelnames, DraMetrics().allocated._labelnames
    assert dra[: len(plugin)] == plugin and dra[len(plugin):] == ("app",)
    holders = next(p for p in _dashboard()["panels"] if p["title"] == "Who holds each device")
    (grouped,) = re.findall(r"by \(([^)]*)\)", holders["targets"][0]["expr"])
    assert {g.strip() for g in grouped.split(",")} == {"node", *dra}
