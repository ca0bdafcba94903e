"""The real ``shardkeeper operator`` process, authenticated as its own ServiceAccount (RBAC applies)."""

from __future__ import annotations

import functools
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import requests

from testbed.cluster import spawn, stop_process
from testbed.controlplane import REPO, ControlPlane, free_port
from testbed.helm import render


@functools.cache
def chart_identity() -> tuple[str, str, str]:
    """The operator's ServiceAccount and RBAC exactly as the Helm chart renders them by default:
    (namespace, ServiceAccount name, manifests). Every e2e operator runs under these."""
    rendered = render()
    sa = rendered.find("ServiceAccount")
    manifests = rendered.yaml(["ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"])
    return sa["metadata"]["namespace"], sa["metadata"]["name"], manifests


@dataclass
class OperatorProcess:
    cp: ControlPlane
    workdir: Path
    token_file: Path
    namespaces: list[str]
    env: dict[str, str] = field(default_factory=dict)
    tick_seconds: float = 1.0
    #: (namespace, name) of the ServiceAccount to run as; default: the chart's, with the chart's RBAC.
    identity: tuple[str, str] | None = None
    proc: object | None = None
    starts: int = 0
    metrics_port: int = 0
    """Where this process serves /metrics (a free port, chosen at each start)."""

    def __post_init__(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        if self.identity is None:
            namespace, name, manifests = chart_identity()
            self.cp.kubectl("create", "namespace", namespace, check=False)
            rbac = self.workdir / "operator-rbac.yaml"
            rbac.write_text(manifests)
            self.cp.apply(rbac)
            self.identity = (namespace, name)
        self.kubeconfig = self.cp.service_account_kubeconfig(
            *self.identity, self.workdir / "operator.kubeconfig"
        )
        self.log = self.workdir / "operator.log"

    def start(self, *, extra_args: list[str] | None = None) -> OperatorProcess:
        port = free_port()
        self.metrics_port = free_port()
        env = {
            **os.environ,
            "PYTHONPATH": str(REPO),
            "KUBECONFIG": str(self.kubeconfig),
            "SHARDKEEPER_AGENT_TOKEN_FILE": str(self.token_file),
            "SHARDKEEPER_TICK_SECONDS": str(self.tick_seconds),
            **self.env,
            # Always a free port, also under the chart's environment (8471): tests run side by side.
            "SHARDKEEPER_METRICS_PORT": str(self.metrics_port),
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
        argv += extra_args or []
        self.proc = spawn(argv, self.log, env)
        self.starts += 1
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
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
