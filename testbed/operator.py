"""The real ``shardkeeper operator`` process, authenticated as its own ServiceAccount (RBAC applies)."""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import requests

from testbed.cluster import spawn, stop_process
from testbed.controlplane import REPO, ControlPlane, free_port

RBAC = REPO / "deploy" / "operator-rbac.yaml"
SA_NAMESPACE, SA_NAME = "shardkeeper-system", "shardkeeper-operator"


@dataclass
class OperatorProcess:
    cp: ControlPlane
    workdir: Path
    token_file: Path
    namespaces: list[str]
    env: dict[str, str] = field(default_factory=dict)
    tick_seconds: float = 1.0
    proc: object | None = None
    starts: int = 0

    def __post_init__(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.cp.apply(RBAC)
        self.kubeconfig = self.cp.service_account_kubeconfig(
            SA_NAMESPACE, SA_NAME, self.workdir / "operator.kubeconfig"
        )
        self.log = self.workdir / "operator.log"

    def start(self) -> OperatorProcess:
        port = free_port()
        env = {
            **os.environ,
            "PYTHONPATH": str(REPO),
            "KUBECONFIG": str(self.kubeconfig),
            "SHARDKEEPER_AGENT_TOKEN_FILE": str(self.token_file),
            "SHARDKEEPER_TICK_SECONDS": str(self.tick_seconds),
            **self.env,
        }
        argv = [
            sys.executable,
            "-m",
            "shardkeeper",
            "operator",
            "--liveness",
            f"http://127.0.0.1:{port}/healthz",
        ]
        for ns in self.namespaces:
            argv += ["--namespace", ns]
        self.proc = spawn(argv, self.log, env)
        self.starts += 1
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:  # type: ignore[attr-defined]
                raise RuntimeError(f"operator exited early; see {self.log}:\n{self.log.read_text()[-3000:]}")
            try:
                if requests.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"operator not live after 60s; see {self.log}")

    def stop(self, *, kill: bool = False) -> None:
        stop_process(self.proc, kill=kill)  # type: ignore[arg-type]

    def logs(self) -> str:
        return self.log.read_text() if self.log.exists() else ""
