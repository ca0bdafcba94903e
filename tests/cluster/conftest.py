"""``make cluster-e2e``: the kind walkthrough on a real single-node cluster on this machine
(testbed.realnode). Needs root and the Debian packages hack/cluster-e2e.sh installs; deselected from
the default run by the ``cluster`` marker (hack/test.sh runs it as its last step)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from testbed.controlplane import REPO
from testbed.realnode.node import NodeCluster

_HERE = Path(__file__).parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.is_relative_to(_HERE):
            item.add_marker(pytest.mark.cluster)


def _images() -> list[Path]:
    out = subprocess.run(
        [str(REPO / "hack" / "build-images.sh")], capture_output=True, text=True, check=False
    )
    if out.returncode != 0:
        raise RuntimeError(f"hack/build-images.sh failed:\n{out.stderr[-4000:]}")
    d = Path(out.stdout.strip().splitlines()[-1])
    return [d / f"{name}.tar" for name in ("pause", "shardkeeper", "sampledb")]


@pytest.fixture(scope="session")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeCluster]:
    """The running node cluster; stopped at the end, and the session fails if anything it started
    (process, mount, network namespace, bridge, iptables chain, cgroup) is left behind."""
    cluster = NodeCluster(tmp_path_factory.mktemp("node"), images=_images())
    try:
        cluster.start()
        yield cluster
    finally:
        _dump(cluster)
        left = cluster.stop()
        assert left == [], f"the node left these behind: {left}"


def _dump(cluster: NodeCluster) -> None:
    """What the cluster looked like at the end, beside the components' logs (for a failed run):
    logs/cluster-state.txt; containers' own logs stay in pod-logs/."""
    out = []
    for args in (("get", "pods", "-A", "-o", "wide"), ("get", "events", "-A", "--sort-by=.lastTimestamp")):
        try:
            out.append(cluster.kubectl(*args, check=False, timeout=30).stdout)
        except Exception as exc:  # the API server may be what failed
            out.append(f"kubectl {' '.join(args)}: {exc}")
    (cluster.logs / "cluster-state.txt").write_text("\n".join(out))
    print(f"\nnode cluster logs: {cluster.logs}; container logs: {cluster.workdir / 'pod-logs'}")
