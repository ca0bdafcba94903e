"""Cloud backends end to end: S3 (versitygw), GCS (fake-gcs-server) and Azure (Azurite), each a real
server on loopback, with the real operator and agents; copying between providers with the CLI; a
server that goes away for a while; failures that retrying cannot fix; secrets that never show."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from testbed.cluster import SampleCluster
from testbed.controlplane import REPO
from testbed.servers import StorageServer
from tests.e2e.conftest import Env, backup_manifest, restore_manifest, wait_until

LAYOUT = {"articles": [0, 1, 2], "users": [0, 1], "vectors": [2]}


def _enable(env: Env, servers: dict[str, StorageServer], *backends: str) -> None:
    for name in backends:
        env.backend_env.update(servers[name].env())


def _digests(cluster: SampleCluster) -> dict[str, dict[str, str]]:
    return {
        node.name: {c: cluster.summary(i, c)["digest"] for c in cluster.db(i, "GET", "/collections")}
        for i, node in enumerate(cluster.nodes)
    }


def _cli(env: Env, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "shardkeeper", *args],
        env={**os.environ, "PYTHONPATH": str(REPO), **env.backend_env},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def _no_secret_anywhere(env: Env, secret: str, *names: str) -> None:
    """The value never reached the operator's or agents' logs, any status, or any Event."""
    logs = [env.operator.log] if env.operator else []
    logs += [node.logs / "agent.log" for cluster in env.clusters for node in cluster.nodes]
    for log in logs:
        assert secret not in log.read_text(), log
    for ns in [env.namespace, *env.namespaces]:
        everything = env.kubectl("get", "backups,restores,events", "-o", "json", namespace=ns)
        assert secret not in everything


@pytest.mark.parametrize("backend", ["s3", "gcs", "azure"])
def test_backup_and_restore_through_a_cloud_backend(
    env: Env, storage_servers: dict[str, StorageServer], backend: str
) -> None:
    _enable(env, storage_servers, backend)
    source = env.make_cluster()
    source.fill(LAYOUT, keys=1500)
    ns = env.make_namespace()
    target = env.make_cluster(namespace=ns)
    env.start_operator()

    env.apply(backup_manifest("to-cloud", backend=backend, id=f"e2e-{env.namespace}"))
    done = env.wait_phase("backup", "to-cloud", "SUCCESS", "FAILED", timeout=120)
    assert done["status"]["phase"] == "SUCCESS", done["status"].get("error")
    bucket = storage_servers[backend].bucket
    assert done["status"]["path"].endswith(f"e2e-{env.namespace}") and bucket in done["status"]["path"]

    listed = _cli(env, "backups", "list", "--backend", backend, "-o", "json")
    assert listed.returncode == 0, listed.stderr
    mine = next(d for d in json.loads(listed.stdout) if d["id"] == f"e2e-{env.namespace}")
    assert mine["status"] == "SUCCESS" and mine["collections"] == sorted(LAYOUT)

    env.apply(restore_manifest("from-cloud", f"e2e-{env.namespace}", backend=backend), namespace=ns)
    restored = env.wait_phase("restore", "from-cloud", "SUCCESS", "FAILED", namespace=ns, timeout=120)
    assert restored["status"]["phase"] == "SUCCESS", restored["status"].get("error")
    assert _digests(target) == _digests(source)
    secrets = [v for k, v in storage_servers[backend].env().items() if k in ("AWS_SECRET_ACCESS_KEY",)]
    for secret in secrets:
        _no_secret_anywhere(env, secret)


def test_two_backends_at_once_and_a_copy_from_s3_to_gcs(
    env: Env, storage_servers: dict[str, StorageServer]
) -> None:
    _enable(env, storage_servers, "s3", "gcs")
    source = env.make_cluster()
    source.fill(LAYOUT, keys=800)
    ns = env.make_namespace()
    target = env.make_cluster(namespace=ns)
    env.start_operator()
    backup_id = f"copied-{env.namespace}"

    env.apply(backup_manifest("to-s3", backend="s3", id=backup_id))
    assert env.wait_phase("backup", "to-s3", "SUCCESS", "FAILED", timeout=120)["status"]["phase"] == "SUCCESS"
    env.apply(backup_manifest("to-gcs", backend="gcs", id=f"direct-{env.namespace}"))
    assert (
        env.wait_phase("backup", "to-gcs", "SUCCESS", "FAILED", timeout=120)["status"]["phase"] == "SUCCESS"
    )
    env.apply(backup_manifest("to-azure", backend="azure"))
    refused = env.wait_phase("backup", "to-azure", "SUCCESS", "FAILED", timeout=60)["status"]
    assert refused["error"] == (
        'backend "azure" is not enabled: set BACKUP_AZURE_CONTAINER, AZURE_STORAGE_CONNECTION_STRING or '
        "AZURE_STORAGE_ACCOUNT (Helm: backups.azure.enabled and backups.azure.envconfig)"
    )

    copied = _cli(env, "backups", "copy", backup_id, "--from", "s3", "--to", "gcs")
    assert copied.returncode == 0, copied.stderr
    assert "every chunk verified" in copied.stdout
    again = _cli(env, "backups", "copy", backup_id, "--from", "s3", "--to", "gcs")
    assert again.returncode == 1 and f'backup "{backup_id}" already exists' in again.stderr

    env.apply(restore_manifest("from-gcs", backup_id, backend="gcs"), namespace=ns)
    restored = env.wait_phase("restore", "from-gcs", "SUCCESS", "FAILED", namespace=ns, timeout=120)
    assert restored["status"]["phase"] == "SUCCESS", restored["status"].get("error")
    assert _digests(target) == _digests(source)


def test_a_server_away_for_a_few_seconds_is_ridden_out(
    env: Env, storage_servers: dict[str, StorageServer], tmp_path: Path
) -> None:
    from testbed.servers import S3Server

    server = S3Server(tmp_path / "s3").start()  # a server of its own, to restart
    server.create_bucket()
    env.backend_env.update(server.env())
    env.backend_env["SHARDKEEPER_MAX_BYTES_PER_SECOND"] = str(1_000_000)
    try:
        env.make_cluster(value_size=4096).fill({"articles": [0, 1, 2]}, keys=1200)
        env.start_operator()
        env.apply(backup_manifest("through-outage", backend="s3"))
        env.wait_for(
            "backup",
            "through-outage",
            lambda o: o.get("status", {}).get("phase") == "TRANSFERRING" and o["status"]["bytesDone"] > 0,
            timeout=60,
        )
        server.stop()
        time.sleep(4)
        server.start()
        done = env.wait_phase("backup", "through-outage", "SUCCESS", "FAILED", timeout=180)
        assert done["status"]["phase"] == "SUCCESS", done["status"].get("error")
        retried = sum("storage.retry" in (n.logs / "agent.log").read_text() for n in env.cluster.nodes)  # type: ignore[union-attr]
        assert retried > 0, "the outage was expected to cause retries"
    finally:
        server.stop()


def test_bad_credentials_and_a_missing_bucket_fail_clearly(
    env: Env, storage_servers: dict[str, StorageServer]
) -> None:
    server = storage_servers["s3"]
    wrong = "wrong-" + server.secret_key[::-1]  # type: ignore[attr-defined]
    env.backend_env.update({**server.env(), "AWS_SECRET_ACCESS_KEY": wrong})
    env.make_cluster().fill(LAYOUT, keys=50)
    env.start_operator()
    env.apply(backup_manifest("denied", backend="s3"))
    failed = env.wait_phase("backup", "denied", "FAILED", "SUCCESS", timeout=60)
    assert env.condition(failed, "Failed")["reason"] == "BackendError"
    assert failed["status"]["error"].startswith('backend "s3": ')
    assert "SignatureDoesNotMatch" in failed["status"]["error"]
    _no_secret_anywhere(env, wrong)

    env.operator.stop()  # type: ignore[union-attr]
    env.operator = None
    env.backend_env.update({**server.env(), "BACKUP_S3_BUCKET": "no-such-bucket"})
    env.start_operator()
    env.apply(backup_manifest("no-bucket", backend="s3"))
    failed = env.wait_phase("backup", "no-bucket", "FAILED", "SUCCESS", timeout=60)
    assert 'bucket "no-such-bucket" does not exist' in failed["status"]["error"]


def test_a_filesystem_backend_not_shared_by_every_node_is_refused(env: Env, tmp_path: Path) -> None:
    # Each node's agent sees a directory of its own: the operator's probe is not there.
    env.make_cluster(
        node_env={i: {"BACKUP_FILESYSTEM_PATH": str(tmp_path / f"node-{i}-disk")} for i in range(3)}
    ).fill(LAYOUT, keys=50)
    for i in range(3):
        (tmp_path / f"node-{i}-disk").mkdir()
    env.start_operator()
    env.apply(backup_manifest("not-shared"))
    failed = env.wait_phase("backup", "not-shared", "FAILED", "SUCCESS", timeout=60)["status"]
    assert "cannot read the operator's probe" in failed["error"]
    assert "must see the same filesystem store" in failed["error"]
    wait_until(env.agents_free, timeout=30, what="every agent free again")
