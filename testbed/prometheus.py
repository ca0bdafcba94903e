"""A real Prometheus on loopback (built by hack/build-prometheus.sh), scraping given targets and
evaluating given rule files; asked through its HTTP API like any user would."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
import yaml

from testbed.binaries import _build
from testbed.cluster import spawn, stop_process
from testbed.controlplane import free_port


@dataclass
class PrometheusServer:
    workdir: Path
    targets: dict[str, list[str]]
    """job name -> host:port targets, scraped every second."""
    rule_files: list[Path] = field(default_factory=list)
    proc: object | None = None
    port: int = 0

    def start(self, timeout: float = 60) -> PrometheusServer:
        binary = _build("build-prometheus.sh") / "prometheus"
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s", "scrape_timeout": "1s"},
            "rule_files": [str(p) for p in self.rule_files],
            "scrape_configs": [
                {"job_name": job, "static_configs": [{"targets": targets}]}
                for job, targets in self.targets.items()
            ],
        }
        (self.workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.port = free_port()
        self.proc = spawn(
            [
                str(binary),
                f"--config.file={self.workdir / 'prometheus.yml'}",
                f"--storage.tsdb.path={self.workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
            ],
            self.workdir / "prometheus.log",
            {},
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if requests.get(f"{self.url}/-/ready", timeout=1).status_code == 200:
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"prometheus not ready after {timeout}s; see {self.workdir / 'prometheus.log'}")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def query(self, expr: str) -> list[dict[str, Any]]:
        """The instant vector ``expr`` evaluates to now: [{"metric": {...}, "value": [t, "v"]}]."""
        body = requests.get(f"{self.url}/api/v1/query", params={"query": expr}, timeout=10).json()
        assert body["status"] == "success", body
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def alerts(self) -> list[dict[str, Any]]:
        """Active alerts (pending and firing) with their labels and state."""
        body = requests.get(f"{self.url}/api/v1/alerts", timeout=10).json()
        alerts: list[dict[str, Any]] = body["data"]["alerts"]
        return alerts

    def stop(self) -> None:
        stop_process(self.proc)  # type: ignore[arg-type]
