"""A real Prometheus on loopback scrapes the real operator and agents while a schedule runs and its
retention prunes, and evaluates the shipped missed-schedule alert: firing once the operator stops."""

from __future__ import annotations

from pathlib import Path

from testbed.controlplane import REPO
from testbed.prometheus import PrometheusServer
from tests.e2e.conftest import Env, wait_until
from tests.e2e.test_schedule import schedule_manifest

RULES = REPO / "helm" / "shardkeeper" / "files" / "prometheus-rules.yaml"
LATE = "ShardkeeperBackupScheduleLate"


def test_scraped_runs_pruning_and_the_late_alert_after_the_operator_stops(env: Env, tmp_path: Path) -> None:
    # The shipped rules, with test-sized waits for the alert under test: a 5 s margin instead of
    # 15 min and 5 s pending instead of 5 min. The expressions are the shipped ones.
    text = RULES.read_text()
    assert text.count("+ 900\n") == 1 and text.index(f"alert: {LATE}") < text.index("for: 5m")
    rules = tmp_path / "rules.yaml"
    rules.write_text(text.replace("+ 900\n", "+ 5\n").replace("for: 5m", "for: 5s", 1))

    cluster = env.make_cluster(replicas=2)
    cluster.fill({"articles": [0, 1]}, keys=200)
    # Every minute on a 6x schedule clock: a run every 10 s.
    env.apply(schedule_manifest("watched", retention={"keepLast": 2}))
    operator = env.start_operator(SHARDKEEPER_SCHEDULE_CLOCK_RATE="6")
    prometheus = PrometheusServer(
        tmp_path / "prometheus",
        {
            "shardkeeper-operator": [f"127.0.0.1:{operator.metrics_port}"],
            "shardkeeper-agents": [f"{node.ip}:8471" for node in cluster.nodes],
        },
        [rules],
    ).start()
    try:
        # Runs and pruning, as Prometheus scraped them.
        wait_until(
            lambda: bool(prometheus.query('shardkeeper_schedule_pruned_backups{schedule="watched"} >= 2')),
            timeout=120,
            what="Prometheus to see two Backups pruned",
        )
        assert {r["metric"]["job"] for r in prometheus.query("up == 1")} == {
            "shardkeeper-operator",
            "shardkeeper-agents",
        }
        assert len(prometheus.query("up == 1")) == 1 + len(cluster.nodes)
        assert prometheus.query('shardkeeper_schedule_backups{schedule="watched"}')[0]["value"][1] in {
            "2",
            "3",
        }
        per_node = prometheus.query('shardkeeper_agent_operations_total{kind="backup",result="success"} >= 3')
        assert sorted(r["metric"]["node"] for r in per_node) == [node.name for node in cluster.nodes]
        assert not [a for a in prometheus.alerts() if a["labels"]["alertname"] == LATE]

        # The operator stops: its series go stale, and the alert still fires on their absence.
        operator.stop()

        def firing() -> bool:
            return any(
                a["labels"]["alertname"] == LATE
                and a["labels"].get("schedule") == "watched"
                and a["state"] == "firing"
                for a in prometheus.alerts()
            )

        wait_until(firing, timeout=180, what=f"{LATE} to fire")
        # It fired on the threshold: 1.5 intervals (the schedule clock's 60 s) + 5 s since the last
        # success, which the operator reported before it stopped; the operator exports nothing now.
        last = 'shardkeeper_schedule_last_success_timestamp_seconds{schedule="watched"}'
        since = prometheus.query(f"time() - max(last_over_time({last}[1h]))")
        assert float(since[0]["value"][1]) > 95
        assert not prometheus.query("shardkeeper_operator_info"), "the operator's series are gone"
    finally:
        prometheus.stop()
