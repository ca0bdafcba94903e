"""``shardkeeper backups delete|prune`` on a real filesystem backend, and ``describe backup``'s text."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest

from shardkeeper.api.common import Backend, Codec, CompressionLevel, Phase
from shardkeeper.api.descriptors import GlobalDescriptor, NodeSummary
from shardkeeper.cli import main
from shardkeeper.cli_backups import describe


@pytest.fixture
def backend(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "backups"
    root.mkdir()
    monkeypatch.setenv("BACKUP_FILESYSTEM_PATH", str(root))
    return root


def put(root: Path, backup_id: str, hours_ago: int, status: Phase = Phase.SUCCESS) -> None:
    started = dt.datetime.now(dt.UTC) - dt.timedelta(hours=hours_ago)
    descriptor = GlobalDescriptor(
        id=backup_id,
        status=status,
        backend=Backend.FILESYSTEM,
        started_at=started,
        completed_at=started + dt.timedelta(minutes=1) if status.terminal else None,
        codec=Codec.GZIP,
        compression_level=CompressionLevel.DEFAULT,
        chunk_size_mb=128,
        collections=["articles"],
        nodes={"db-0": NodeSummary(status=status, collections=["articles"], bytes=10)},
        bytes=10,
    )
    (root / backup_id / "db-0").mkdir(parents=True)
    (root / backup_id / "db-0" / "chunk-1").write_bytes(b"x" * 10)
    (root / backup_id / "backup_config.json").write_text(descriptor.model_dump_json(by_alias=True))


def ids(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir() if any(p.rglob("*")))


def test_prune_dry_run_shows_the_verdicts_and_deletes_nothing(
    backend: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for i, name in enumerate(["d", "c", "b", "a"]):
        put(backend, name, hours_ago=i + 1)
    assert main(["backups", "prune", "--backend", "filesystem", "--keep-last", "2", "--dry-run"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["ID", "STATUS", "STARTED", "SIZE", "ACTION", "WHY"]
    assert [line.split()[0] for line in out[1:]] == ["d", "c", "b", "a"]
    assert out[1].endswith("minSuccessful") and out[2].endswith("keepLast")
    assert "would prune" in out[3] and out[4].endswith("kept by no rule")
    assert ids(backend) == ["a", "b", "c", "d"]


def test_prune_deletes_what_the_policy_does_not_keep(
    backend: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    put(backend, "new", 1)
    put(backend, "running", 2, Phase.STARTED)
    put(backend, "failed-new", 3, Phase.FAILED)
    put(backend, "failed-old", 4, Phase.CANCELED)
    put(backend, "mid", 5)
    put(backend, "old", 50)
    args = [
        "backups",
        "prune",
        "--backend",
        "filesystem",
        "--max-age",
        "2d",
        "--keep-last",
        "5",
        "-o",
        "json",
    ]
    assert main(args) == 0
    rows = {r["ID"]: r for r in json.loads(capsys.readouterr().out)}
    assert {k for k, r in rows.items() if r["ACTION"] == "prune"} == {"failed-old", "old"}
    assert rows["running"]["WHY"] == "unfinished" and rows["old"]["WHY"] == "older than maxAge"
    assert ids(backend) == ["failed-new", "mid", "new", "running"]


def test_a_bad_policy_is_refused_naming_the_flag(backend: Path, capsys: pytest.CaptureFixture[str]) -> None:
    put(backend, "a", 1)
    assert main(["backups", "prune", "--backend", "filesystem", "--max-age", "1y"]) != 0
    assert "--max-age" in capsys.readouterr().err
    assert ids(backend) == ["a"]


def test_delete_removes_a_finished_backup_and_refuses_a_running_one_without_force(
    backend: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    put(backend, "done", 1)
    put(backend, "busy", 1, Phase.TRANSFERRING)
    assert main(["backups", "delete", "done", "--backend", "filesystem"]) == 0
    assert "2 objects" in capsys.readouterr().out  # the descriptor, then the chunk
    assert main(["backups", "delete", "busy", "--backend", "filesystem"]) != 0
    assert "TRANSFERRING" in capsys.readouterr().err and ids(backend) == ["busy"]
    assert main(["backups", "delete", "busy", "--backend", "filesystem", "--force"]) == 0
    assert ids(backend) == []
    assert main(["backups", "delete", "nothing", "--backend", "filesystem"]) != 0
    assert "does not exist" in capsys.readouterr().err


def test_describe_shows_a_row_per_node() -> None:
    obj = {
        "metadata": {
            "name": "nightly-20261130t013000z",
            "namespace": "demo",
            "labels": {"shardkeeper.io/schedule": "nightly"},
            "annotations": {"shardkeeper.io/scheduled-at": "2026-11-30T01:30:00Z"},
        },
        "spec": {"cluster": "db", "backend": "s3", "consistency": "cluster"},
        "status": {
            "phase": "SUCCESS",
            "consistentAt": "2026-11-30T01:30:02.125Z",
            "holdOverlapMs": 48.5,
            "cut": "every node's writes were held at once for 48.5 ms",
            "bytesTotal": 3 << 20,
            "size": "3.0 MiB",
            "nodes": {
                "db-1": {
                    "phase": "SUCCESS",
                    "bytesDone": 1 << 20,
                    "bytesTotal": 1 << 20,
                    "pauseMs": 61.2,
                    "hold": {
                        "heldFrom": "2026-11-30T01:30:02.125Z",
                        "heldUntil": "2026-11-30T01:30:02.186Z",
                        "measuredBy": "workload",
                    },
                },
                "db-0": {
                    "phase": "FAILED",
                    "bytesDone": 0,
                    "bytesTotal": 2 << 20,
                    "bytesPerSecond": 512,
                    "error": "disk full",
                },
            },
            "conditions": [{"type": "Ready", "status": "True", "reason": "Succeeded"}],
        },
    }
    text = describe(obj)
    assert "Schedule:     nightly (slot 2026-11-30T01:30:00Z)" in text
    assert "Conditions:   Ready=True (Succeeded)" in text
    table = text.split("\n\n")[1].splitlines()
    assert "Consistency:  cluster" in text
    assert "ConsistentAt: 2026-11-30T01:30:02.125Z (every hold overlapped 48.5 ms)" in text
    assert "Cut:          every node's writes were held at once for 48.5 ms" in text
    assert table[0].split() == ["NODE", "PHASE", "BYTES", "FILES", "THROUGHPUT", "PAUSE", "HELD", "ERROR"]
    assert table[1].split()[:2] == ["db-0", "FAILED"] and table[1].endswith("disk full")
    assert "512 B/s" in table[1]
    assert table[2].split()[:2] == ["db-1", "SUCCESS"] and "61.2 ms" in table[2]
    assert "01:30:02.125..01:30:02.186" in table[2]


@pytest.mark.parametrize(
    ("status", "line"),
    [
        ({"collections": ["a", "b"], "collectionCount": 2}, "Collections:  a,b\n"),
        ({"collections": ["a", "b"]}, "Collections:  a,b\n"),  # written before collectionCount
        (
            {"collections": ["a", "b"], "collectionCount": 150},
            "Collections:  a,b ... and 148 more (150 in all)\n",
        ),
        ({}, "Collections:  \n"),
    ],
)
def test_describe_says_how_many_collections_the_status_leaves_out(status: dict[str, Any], line: str) -> None:
    text = describe({"metadata": {"name": "b"}, "spec": {}, "status": status})
    assert line in text
