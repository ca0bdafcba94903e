"""The shipped alerts: each has a promtool test and a runbook section in the README."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "helm" / "shardkeeper" / "files" / "prometheus-rules.yaml"
TESTS = REPO / "tests" / "rules" / "prometheus-rules.test.yaml"


def alerts() -> list[dict]:  # type: ignore[type-arg]
    return [r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"] if "alert" in r]


def test_every_alert_fires_in_a_promtool_test_and_has_a_runbook() -> None:
    tested = yaml.safe_load(TESTS.read_text())["tests"]
    firing = {
        case["alertname"] for t in tested for case in t.get("alert_rule_test", []) if case.get("exp_alerts")
    }
    headings = set(re.findall(r"^#### (\w+)$", (REPO / "README.md").read_text(), flags=re.MULTILINE))
    names = {a["alert"] for a in alerts()}
    assert len(names) == 6
    assert names <= firing, names - firing
    assert names <= headings, names - headings
    for alert in alerts():
        assert alert["annotations"]["runbook"] == f"README.md#{alert['alert'].lower()}"
        assert alert["labels"]["severity"] in {"warning", "critical"}
