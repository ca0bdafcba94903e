"""The chart's metrics switches: Service, ServiceMonitor and PrometheusRule, rendered by real helm."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from testbed.controlplane import REPO
from testbed.helm import HelmError, render

RULES = REPO / "helm" / "shardkeeper" / "files" / "prometheus-rules.yaml"


def test_off_by_default_but_the_operator_always_declares_its_metrics_port(tmp_path: Path) -> None:
    rendered = render(workdir=tmp_path)
    assert not rendered.all("ServiceMonitor") and not rendered.all("PrometheusRule")
    container = rendered.find("Deployment")["spec"]["template"]["spec"]["containers"][0]
    assert {"name": "metrics", "containerPort": 8471, "protocol": "TCP"} in container["ports"]
    assert {"name": "SHARDKEEPER_METRICS_PORT", "value": "8471"} in container["env"]


def test_service_monitor_and_rules_select_the_operator_and_ship_the_tested_rules(tmp_path: Path) -> None:
    values = {
        "metrics": {
            "serviceMonitor": {"enabled": True, "labels": {"release": "kube-prometheus"}},
            "prometheusRule": {"enabled": True, "labels": {"role": "alerts"}},
        }
    }
    rendered = render(values, workdir=tmp_path)
    pod_labels = rendered.find("Deployment")["spec"]["template"]["metadata"]["labels"]
    service = rendered.find("Service")
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert service["spec"]["ports"][0]["targetPort"] == "metrics"
    monitor = rendered.find("ServiceMonitor")
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus"
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["endpoints"] == [{"port": "metrics", "path": "/metrics", "interval": "30s"}]
    rule = rendered.find("PrometheusRule")
    assert rule["metadata"]["labels"]["role"] == "alerts"
    assert rule["spec"] == yaml.safe_load(RULES.read_text())


@pytest.mark.parametrize(
    ("values", "field"),
    [
        ({"metrics": {"port": 70000}}, "port"),
        ({"metrics": {"serviceMonitor": {"interval": "often"}}}, "interval"),
        ({"metrics": {"prometheusRule": {"enabled": True}, "port": 0}}, "metrics.port"),
        ({"metrics": {"alerts": True}}, "alerts"),
    ],
)
def test_bad_metrics_values_are_refused_naming_the_field(tmp_path: Path, values: dict, field: str) -> None:  # type: ignore[type-arg]
    with pytest.raises(HelmError) as refused:
        render(values, workdir=tmp_path)
    assert field in str(refused.value)


def test_a_pod_monitor_scrapes_the_agents_in_every_agent_namespace(tmp_path: Path) -> None:
    values = {
        "agent": {"namespaces": ["db1"]},
        "metrics": {"podMonitor": {"enabled": True, "selector": {"app": "sampledb"}}},
    }
    monitor = render(values, workdir=tmp_path).find("PodMonitor")
    assert monitor["spec"]["selector"] == {"matchLabels": {"app": "sampledb"}}
    assert monitor["spec"]["namespaceSelector"]["matchNames"] == ["shardkeeper-system", "db1"]
    assert monitor["spec"]["podMetricsEndpoints"][0]["port"] == "sk-metrics"
    with pytest.raises(HelmError) as refused:
        render({"metrics": {"podMonitor": {"enabled": True}}}, workdir=tmp_path)
    assert "metrics.podMonitor.selector" in str(refused.value)
