"""The global descriptor made from a Backup's status and its nodes' descriptors: one test per case."""

from __future__ import annotations

import datetime as dt

from shardkeeper.api.backup import BackupSpec, BackupStatus
from shardkeeper.api.common import Codec, CompressionLevel, Phase
from shardkeeper.api.descriptors import NodeDescriptor, Owner
from shardkeeper.api.status import NodeStatus
from shardkeeper.conventions import DESCRIPTOR_FORMAT_VERSION
from shardkeeper.coordinator.backup_record import global_descriptor

T0 = dt.datetime(2026, 11, 30, 8, 0, tzinfo=dt.UTC)
OWNER = Owner(namespace="db", name="nightly", uid="u-1")
SPEC = BackupSpec.model_validate({"backend": "filesystem", "cluster": "sampledb"})


def _node(name: str, nbytes: int) -> NodeDescriptor:
    return NodeDescriptor(
        id="nightly",
        node=name,
        status=Phase.SUCCESS,
        started_at=T0,
        codec=Codec.ZSTD,
        compression_level=CompressionLevel.ZSTD_BEST_SPEED,
        collections=[],
        bytes=nbytes,
        stored_bytes=nbytes // 2,
        file_count=3,
    )


def test_a_success_sums_its_nodes_descriptors_and_keeps_every_collection() -> None:
    status = BackupStatus(
        started_at=T0, nodes={"n-0": NodeStatus(phase="SUCCESS"), "n-1": NodeStatus(phase="SUCCESS")}
    )
    names = [f"c{i}" for i in range(150)]  # more than the status lists
    status.list_collections(names)
    done = global_descriptor(
        "nightly",
        SPEC,
        status,
        Phase.SUCCESS,
        owner=OWNER,
        collections=names,
        nodes=[_node("n-0", 100), _node("n-1", 40)],
        now=T0 + dt.timedelta(seconds=5),
    )
    assert done.collections == names and (done.bytes, done.stored_bytes, done.files) == (140, 70, 6)
    assert done.completed_at == T0 + dt.timedelta(seconds=5) and done.owner == OWNER
    assert done.format_version == DESCRIPTOR_FORMAT_VERSION and done.references == []


def test_a_failure_takes_each_node_from_the_status_and_names_its_error() -> None:
    status = BackupStatus(
        started_at=T0,
        error="node n-1 failed",
        nodes={
            "n-0": NodeStatus(phase="SUCCESS"),
            "n-1": NodeStatus(phase="PREPARED", error="disk full"),
        },
    )
    failed = global_descriptor(
        "nightly",
        SPEC,
        status,
        Phase.FAILED,
        owner=OWNER,
        collections=["a"],
        nodes=[_node("n-0", 100)],
        now=T0,
    )
    assert failed.nodes["n-0"].status is Phase.SUCCESS and failed.nodes["n-0"].bytes == 100
    # A node phase that is no backup phase (PREPARED) reads as FAILED, with the node's reason.
    assert (failed.nodes["n-1"].status, failed.nodes["n-1"].error, failed.nodes["n-1"].bytes) == (
        Phase.FAILED,
        "disk full",
        0,
    )
    assert failed.error == "node n-1 failed" and failed.bytes == 100


def test_a_started_backup_has_no_completion_time() -> None:
    status = BackupStatus(nodes={"n-0": NodeStatus(phase="PREPARING")})
    started = global_descriptor(
        "nightly", SPEC, status, Phase.STARTED, owner=OWNER, collections=["a"], nodes=[], now=T0
    )
    assert (started.started_at, started.completed_at, started.nodes["n-0"].status) == (T0, None, Phase.FAILED)
