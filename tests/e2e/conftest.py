"""End-to-end fixtures: one real control plane per session; per test a namespace, a sample cluster
(real sampledb + agent processes per pod) and the real operator process running as its own
ServiceAccount, so RBAC is enforced."""

from __future__ import annotations

import json
import secrets
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from testbed.cluster import SampleCluster
from testbed.controlplane import ControlPlane
from testbed.operator import OperatorProcess


@pytest.fixture(scope="session")
def control_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    cp = ControlPlane(tmp_path_factory.mktemp("control-plane")).start()
    yield cp
    cp.stop()


@dataclass
class Env:
    """Everything one test works with."""

    cp: ControlPlane
    namespace: str
    root: Path
    token_file: Path
    backups: Path
    backend_env: dict[str, str]
    cluster: SampleCluster | None = None
    operator: OperatorProcess | None = None
    clusters: list[SampleCluster] = field(default_factory=list)
    namespaces: list[str] = field(default_factory=list)

    def make_cluster(
        self, *, replicas: int = 3, name: str = "sampledb", namespace: str | None = None, **kwargs: Any
    ) -> SampleCluster:
        """A sample cluster; the first one made is ``self.cluster``, the others are returned (and stopped
        at the end too)."""
        cluster = SampleCluster(
            self.cp,
            namespace=namespace or self.namespace,
            root=self.root / f"{namespace or self.namespace}-{name}",
            token_file=self.token_file,
            name=name,
            replicas=replicas,
            agent_env=self.backend_env,
            **kwargs,
        )
        self.clusters.append(cluster)
        cluster.create()
        if self.cluster is None:
            self.cluster = cluster
        return cluster

    def make_namespace(self) -> str:
        namespace = f"{self.namespace}-{len(self.namespaces)}"
        self.cp.kubectl("create", "namespace", namespace)
        self.namespaces.append(namespace)
        return namespace

    def start_operator(self, **env: str) -> OperatorProcess:
        """The real operator, for this namespace only. Progress is written every second here (the
        default is 5 s, which one test checks) so tests can act while a transfer is under way."""
        env = {"SHARDKEEPER_PROGRESS_INTERVAL_SECONDS": "1", **env}
        if self.operator is None:
            self.operator = OperatorProcess(
                self.cp,
                self.root / "operator",
                self.token_file,
                [self.namespace, *self.namespaces],
                env={**self.backend_env, **env},
            )
        return self.operator.start()

    def kubectl(
        self, *args: str, check: bool = True, input: str | None = None, namespace: str | None = None
    ) -> str:
        result = self.cp.kubectl(*args, "-n", namespace or self.namespace, check=check, input=input)
        return result.stdout + (result.stderr if not check else "")

    def apply(self, manifest: dict[str, Any] | str, namespace: str | None = None) -> str:
        text = manifest if isinstance(manifest, str) else yaml.safe_dump(manifest)
        return self.kubectl("apply", "-f", "-", input=text, namespace=namespace)

    def get(self, kind: str, name: str, namespace: str | None = None) -> dict[str, Any]:
        out = self.kubectl("get", kind, name, "-o", "json", namespace=namespace)
        return json.loads(out)  # type: ignore[no-any-return]

    def wait_for(
        self,
        kind: str,
        name: str,
        predicate: Callable[[dict[str, Any]], bool],
        *,
        timeout: float = 120,
        namespace: str | None = None,
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        obj: dict[str, Any] = {}
        while time.monotonic() < deadline:
            obj = self.get(kind, name, namespace)
            if predicate(obj):
                return obj
            time.sleep(0.5)
        raise AssertionError(
            f"{kind}/{name} did not reach the expected state in {timeout}s; last status:\n"
            f"{json.dumps(obj.get('status'), indent=1)}\noperator log tail:\n"
            f"{self.operator.logs()[-4000:] if self.operator else ''}"
        )

    def wait_phase(
        self, kind: str, name: str, *phases: str, timeout: float = 120, namespace: str | None = None
    ) -> dict[str, Any]:
        return self.wait_for(
            kind,
            name,
            lambda o: o.get("status", {}).get("phase") in phases,
            timeout=timeout,
            namespace=namespace,
        )

    def events(self, name: str, namespace: str | None = None) -> list[dict[str, Any]]:
        items = json.loads(self.kubectl("get", "events", "-o", "json", namespace=namespace))["items"]
        # resourceVersion grows with every write to etcd: the order in which events were posted.
        return sorted(
            (e for e in items if e["involvedObject"]["name"] == name),
            key=lambda e: int(e["metadata"]["resourceVersion"]),
        )

    def agent(
        self, i: int, method: str, path: str, cluster: SampleCluster | None = None, **kwargs: Any
    ) -> requests.Response:
        """Asks node i's agent (of the first cluster, unless another is given) directly, with the token."""
        cluster = cluster or self.cluster
        assert cluster is not None
        headers = {"Authorization": f"Bearer {self.token_file.read_text()}"}
        url = f"{cluster.nodes[i].agent_url}{path}"
        return requests.request(method, url, headers=headers, timeout=90, **kwargs)

    def agents_free(self, cluster: SampleCluster | None = None) -> bool:
        """Whether no agent of the cluster (the first, unless another is given) has an operation
        running; an agent reports its operation's end only once its staging is cleaned."""
        cluster = cluster or self.cluster
        assert cluster is not None
        return all(
            "operation" not in self.agent(i, "GET", "/v1/node", cluster=cluster).json()
            for i in range(len(cluster.nodes))
        )

    def backups_descriptor(self, backup_id: str) -> dict[str, Any]:
        """The global descriptor of a backup in the filesystem backend."""
        return json.loads((self.backups / backup_id / "backup_config.json").read_text())  # type: ignore[no-any-return]

    def stored(self, backup_id: str) -> list[str]:
        root = self.backups / backup_id
        return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())

    def condition(self, obj: dict[str, Any], type_: str) -> dict[str, Any]:
        return next(c for c in obj["status"]["conditions"] if c["type"] == type_)


@pytest.fixture
def env(control_plane: ControlPlane, tmp_path: Path) -> Iterator[Env]:
    namespace = f"t-{uuid.uuid4().hex[:8]}"
    token_file = tmp_path / "agent-token"
    token_file.write_text(secrets.token_hex(24))
    backups = tmp_path / "backups"
    backups.mkdir()
    e = Env(
        cp=control_plane,
        namespace=namespace,
        root=tmp_path,
        token_file=token_file,
        backups=backups,
        backend_env={"BACKUP_FILESYSTEM_PATH": str(backups)},
    )
    control_plane.kubectl("create", "namespace", namespace)
    yield e
    if e.operator is not None:
        e.operator.stop()
    for cluster in e.clusters:
        cluster.stop()


def wait_until(predicate: Callable[[], bool], *, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.2)


def restore_manifest(name: str, backup_id: str, cluster: str = "sampledb", **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "shardkeeper.io/v1alpha1",
        "kind": "Restore",
        "metadata": {"name": name},
        "spec": {"backupId": backup_id, "backend": "filesystem", "cluster": cluster, **spec},
    }


def backup_manifest(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "shardkeeper.io/v1alpha1",
        "kind": "Backup",
        "metadata": {"name": name},
        "spec": {"backend": "filesystem", "cluster": "sampledb", **spec},
    }
