"""A sample database cluster on the local control plane, with a kubelet stand-in.

For each replica the testbed creates the Pod through the API (owned by the StatefulSet, as the
StatefulSet controller would), starts the real processes a kubelet would run for it (the sample
database and a ``shardkeeper agent``, both bound to the pod's own 127.x.y.z address and sharing its
data directory), and writes the Pod status (Running, Ready, podIP) as a kubelet would. The operator
then discovers the nodes from the API exactly as in a real cluster.
"""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import requests
from kubernetes import client

from testbed.controlplane import REPO, ControlPlane, api_client

AGENT_PORT = 8470
DB_PORT = 8480
_blocks = itertools.count(1)


def _ip_block() -> int:
    """A /24 of 127.0.0.0/8 for one cluster, distinct across clusters and concurrent test processes."""
    return next(_blocks) % 250


def wait_http(url: str, *, timeout: float = 30.0, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{proc.args!r} exited with {proc.returncode} before {url} answered")
        try:
            if requests.get(url, timeout=1).status_code < 500:
                return
        except requests.RequestException:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"{url} did not answer within {timeout}s")


def spawn(argv: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    log.parent.mkdir(parents=True, exist_ok=True)
    out = log.open("ab")
    return subprocess.Popen(
        argv, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=REPO, start_new_session=True
    )


def stop_process(proc: subprocess.Popen[bytes] | None, *, kill: bool = False, timeout: float = 20) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@dataclass
class Node:
    index: int
    name: str
    ip: str
    data: Path
    logs: Path
    agent: subprocess.Popen[bytes] | None = None
    db: subprocess.Popen[bytes] | None = None
    pod_uid: str = ""

    @property
    def agent_url(self) -> str:
        return f"http://{self.ip}:{AGENT_PORT}"

    @property
    def db_url(self) -> str:
        return f"http://{self.ip}:{DB_PORT}"


@dataclass
class SampleCluster:
    cp: ControlPlane
    namespace: str
    root: Path
    token_file: Path
    name: str = "sampledb"
    replicas: int = 3
    agent_env: dict[str, str] = field(default_factory=dict)
    #: Per node (by index): overrides of agent_env, e.g. a backend path only that node sees.
    node_env: dict[int, dict[str, str]] = field(default_factory=dict)
    value_size: int = 256
    #: False: the agents run without a workload hook (hookless mode: they walk the data themselves).
    hook: bool = True
    nodes: list[Node] = field(default_factory=list)
    block: int = field(default_factory=_ip_block)

    def __post_init__(self) -> None:
        self.api = api_client(self.cp.kubeconfig)
        self.core = client.CoreV1Api(self.api)
        self.apps = client.AppsV1Api(self.api)
        self.sts_uid = ""

    # --- lifecycle -----------------------------------------------------------------------------

    def create(self) -> SampleCluster:
        self.ensure_namespace(self.namespace)
        sts = self.apps.create_namespaced_stateful_set(self.namespace, cast("Any", self._statefulset()))
        assert sts.metadata is not None
        self.sts_uid = str(sts.metadata.uid)
        octet = 20 + os.getpid() % 200
        for i in range(self.replicas):
            pod = f"{self.name}-{i}"
            node = Node(
                index=i,
                name=pod,
                ip=f"127.{octet}.{self.block}.{i + 1}",
                data=self.root / pod / "data",
                logs=self.root / pod / "logs",
            )
            node.data.mkdir(parents=True, exist_ok=True)
            self.nodes.append(node)
            self.start_db(i)
            self.start_agent(i)
            node.pod_uid = self._create_pod(node)
            self.mark_ready(i, ready=True)
        self.apps.patch_namespaced_stateful_set_status(
            self.name,
            self.namespace,
            {
                "status": {
                    "replicas": self.replicas,
                    "readyReplicas": self.replicas,
                    "availableReplicas": self.replicas,
                }
            },
        )
        return self

    def ensure_namespace(self, name: str) -> None:
        try:
            self.core.create_namespace(cast("Any", {"metadata": {"name": name}}))
        except client.ApiException as exc:
            if exc.status != 409:
                raise

    def _statefulset(self) -> dict[str, Any]:
        labels = {"app": self.name}
        return {
            "apiVersion": "apps/v1",
            "kind": "StatefulSet",
            "metadata": {"name": self.name, "labels": labels},
            "spec": {
                "replicas": self.replicas,
                "serviceName": self.name,
                "selector": {"matchLabels": labels},
                "template": {"metadata": {"labels": labels}, "spec": self._pod_spec()},
            },
        }

    def _pod_spec(self) -> dict[str, Any]:
        return {
            "automountServiceAccountToken": False,
            "containers": [
                {
                    "name": "sampledb",
                    "image": "testbed/sampledb:local",
                    "ports": [{"name": "db", "containerPort": DB_PORT}],
                },
                {
                    "name": "shardkeeper-agent",
                    "image": "shardkeeper:local",
                    "args": ["agent"],
                    "ports": [{"name": "shardkeeper", "containerPort": AGENT_PORT}],
                },
            ],
        }

    def _create_pod(self, node: Node) -> str:
        manifest: Any = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": node.name,
                "labels": {"app": self.name, "statefulset.kubernetes.io/pod-name": node.name},
                "ownerReferences": [
                    {
                        "apiVersion": "apps/v1",
                        "kind": "StatefulSet",
                        "name": self.name,
                        "uid": self.sts_uid,
                        "controller": True,
                        "blockOwnerDeletion": True,
                    }
                ],
            },
            "spec": self._pod_spec(),
        }
        pod = self.core.create_namespaced_pod(self.namespace, manifest)
        assert pod.metadata is not None
        return str(pod.metadata.uid)

    def mark_ready(self, i: int, *, ready: bool) -> None:
        """What a kubelet reports: the pod runs on its IP, and its containers are (not) ready."""
        node = self.nodes[i]
        flag = "True" if ready else "False"
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        containers = [
            {
                "name": name,
                "ready": ready,
                "restartCount": 0,
                "image": image,
                "imageID": "",
                "started": True,
                "state": {"running": {"startedAt": now}},
            }
            for name, image in (
                ("sampledb", "testbed/sampledb:local"),
                ("shardkeeper-agent", "shardkeeper:local"),
            )
        ]
        self.core.patch_namespaced_pod_status(
            node.name,
            self.namespace,
            {
                "status": {
                    "phase": "Running",
                    "hostIP": "127.0.0.1",
                    "podIP": node.ip,
                    "podIPs": [{"ip": node.ip}],
                    "startTime": now,
                    "conditions": [
                        {"type": "PodScheduled", "status": "True", "lastTransitionTime": now},
                        {"type": "Initialized", "status": "True", "lastTransitionTime": now},
                        {"type": "ContainersReady", "status": flag, "lastTransitionTime": now},
                        {"type": "Ready", "status": flag, "lastTransitionTime": now},
                    ],
                    "containerStatuses": containers,
                }
            },
        )

    # --- processes -----------------------------------------------------------------------------

    def start_db(self, i: int) -> None:
        node = self.nodes[i]
        node.db = spawn(
            [
                sys.executable,
                "-m",
                "testbed.sampledb",
                "--node",
                node.name,
                "--data-root",
                str(node.data),
                "--listen",
                f"{node.ip}:{DB_PORT}",
                "--value-size",
                str(self.value_size),
            ],
            node.logs / "sampledb.log",
            {**os.environ, "PYTHONPATH": str(REPO)},
        )
        wait_http(f"{node.db_url}/healthz", proc=node.db)

    def start_agent(self, i: int) -> None:
        node = self.nodes[i]
        env = {
            **os.environ,
            "PYTHONPATH": str(REPO),
            "POD_NAME": node.name,
            "SHARDKEEPER_AGENT_TOKEN_FILE": str(self.token_file),
            **self.agent_env,
            **self.node_env.get(i, {}),
        }
        node.agent = spawn(
            [
                sys.executable,
                "-m",
                "shardkeeper",
                "agent",
                "--data-root",
                str(node.data),
                "--listen",
                f"{node.ip}:{AGENT_PORT}",
                *(["--hook-url", f"{node.db_url}/hook"] if self.hook else []),
            ],
            node.logs / "agent.log",
            env,
        )
        wait_http(f"{node.agent_url}/healthz", proc=node.agent)

    def kill_agent(self, i: int) -> None:
        stop_process(self.nodes[i].agent, kill=True)

    def pause_agent(self, i: int) -> None:
        """SIGSTOP: a hung agent. The kernel still accepts connections; nothing answers."""
        agent = self.nodes[i].agent
        assert agent is not None and agent.poll() is None
        agent.send_signal(signal.SIGSTOP)

    def resume_agent(self, i: int) -> None:
        agent = self.nodes[i].agent
        if agent is not None and agent.poll() is None:
            agent.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        for i, node in enumerate(self.nodes):
            self.resume_agent(i)  # a stopped process cannot act on SIGTERM
            stop_process(node.agent)
            stop_process(node.db)

    # --- the database, as a client sees it ----------------------------------------------------

    def db(self, i: int, method: str, path: str, **kwargs: Any) -> Any:
        resp = requests.request(method, f"{self.nodes[i].db_url}{path}", timeout=60, **kwargs)
        resp.raise_for_status()
        return resp.json()

    def fill(self, layout: dict[str, list[int]], *, keys: int) -> None:
        """Creates collections on the given nodes, with ``keys`` records each."""
        for collection, indexes in layout.items():
            for i in indexes:
                self.db(i, "POST", f"/collections/{collection}", json={"count": keys})

    def start_writers(self, interval: float = 0.001) -> None:
        for i, _node in enumerate(self.nodes):
            names = self.db(i, "GET", "/collections")
            self.db(i, "POST", "/writers", json={"collections": names, "interval": interval})

    def stop_writers(self) -> dict[str, dict[str, int]]:
        return {node.name: self.db(i, "DELETE", "/writers")["acked"] for i, node in enumerate(self.nodes)}

    def summary(self, i: int, collection: str) -> dict[str, Any]:
        result: dict[str, Any] = self.db(i, "GET", f"/collections/{collection}/summary")
        return result
