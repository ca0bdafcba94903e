"""Selection and configuration that really acts: include/exclude, cpuPercentage, chunkSize,
compressionLevel and path, each checked in what the agents did and what the backend holds."""

from __future__ import annotations

import json
from typing import Any

from tests.backup_reader import read_backup
from tests.e2e.conftest import Env, backup_manifest

LAYOUT = {"articles": [0, 1, 2], "authors": [0], "users": [0, 1], "vectors_a": [2], "vectors_b": [1, 2]}
AVAILABLE = sorted(LAYOUT)


def _run(env: Env, name: str, **spec: Any) -> dict[str, Any]:
    env.apply(backup_manifest(name, **spec))
    return env.wait_phase("backup", name, "SUCCESS", "FAILED", timeout=90)


def test_include_exclude_with_wildcards_and_their_mistakes(env: Env) -> None:
    env.make_cluster().fill(LAYOUT, keys=100)
    env.start_operator()

    included = _run(env, "inc", include=["vectors_*", "a?thors"])
    assert included["status"]["phase"] == "SUCCESS"
    assert included["status"]["collections"] == ["authors", "vectors_a", "vectors_b"]
    descriptor, nodes = read_backup(env.backups / "inc")
    assert descriptor["collections"] == ["authors", "vectors_a", "vectors_b"]
    assert {n: [c["name"] for c in b.descriptor["collections"]] for n, b in nodes.items()} == {
        "sampledb-0": ["authors"],
        "sampledb-1": ["vectors_b"],
        "sampledb-2": ["vectors_a", "vectors_b"],
    }

    excluded = _run(env, "exc", exclude=["a*"])
    assert excluded["status"]["collections"] == ["users", "vectors_a", "vectors_b"]

    everything = _run(env, "all")
    assert everything["status"]["collections"] == AVAILABLE

    for name, spec, message in (
        (
            "unknown",
            {"include": ["articles", "nope"]},
            'spec.include: collection "nope" matches no collection',
        ),
        ("dup", {"include": ["users", "users"]}, "spec.include contains a duplicate: users"),
        ("empty", {"exclude": ["*"]}, "nothing left to back up"),
    ):
        failed = _run(env, name, **spec)
        assert failed["status"]["phase"] == "FAILED"
        assert message in failed["status"]["error"]
        if name != "dup":
            assert str(AVAILABLE) in failed["status"]["error"]
        assert env.condition(failed, "Failed")["reason"] == "InvalidSpec"
        assert not (env.backups / name).exists()  # refused before anything was written
    assert env.agents_free()


def test_cpu_percentage_sizes_the_worker_pool(env: Env) -> None:
    # Agents believe they have 8 cores (as a container limit would tell them).
    env.backend_env["SHARDKEEPER_CPU_CORES"] = "8"
    env.make_cluster(replicas=1).fill({"articles": [0]}, keys=100)
    env.start_operator()
    for name, pct, workers in (("p1", 1, 1), ("p50", 50, 4), ("p80", 80, 6)):
        done = _run(env, name, config={"cpuPercentage": pct})
        assert done["status"]["phase"] == "SUCCESS"
        assert done["status"]["nodes"]["sampledb-0"]["workers"] == workers


def test_chunk_size_bounds_chunks_and_big_files_get_their_own(env: Env) -> None:
    cluster = env.make_cluster(replicas=1, value_size=4096)
    cluster.fill({"articles": [0]}, keys=3000)  # ~12 MB of SSTs of ~4 MB each (write buffer)
    env.start_operator()
    done = _run(env, "chunks", config={"chunkSize": 2})
    assert done["status"]["phase"] == "SUCCESS"
    _, nodes = read_backup(env.backups / "chunks")
    collection = nodes["sampledb-0"].descriptor["collections"][0]
    files = {f["path"]: f for f in collection["entries"] if f["type"] == "file"}
    chunks = collection["chunks"]
    assert len(chunks) > 2
    for chunk in chunks:
        members = [f for f in files.values() if f["chunk"] == chunk["n"]]
        if len(members) > 1:  # several small files: together at most the target
            assert sum(f["size"] for f in members) <= 2_000_000
        else:  # a big file alone (the directory entry may go with it)
            assert len(members) == 1 and chunk["files"] <= 2
    assert any(f["size"] > 2_000_000 for f in files.values()), "the test needs a file bigger than a chunk"


CODECS = {
    "DefaultCompression": "gzip",
    "BestSpeed": "gzip",
    "BestCompression": "gzip",
    "ZstdDefaultCompression": "zstd",
    "ZstdBestSpeed": "zstd",
    "ZstdBestCompression": "zstd",
    "NoCompression": "none",
}


def test_compression_level_selects_the_codec(env: Env) -> None:
    env.make_cluster(replicas=1).fill({"articles": [0]}, keys=500)
    env.start_operator()
    for level, codec in CODECS.items():
        name = level.lower()
        done = _run(env, name, config={"compressionLevel": level})
        assert done["status"]["phase"] == "SUCCESS", level
        descriptor, nodes = read_backup(env.backups / name)  # verifies every checksum with stdlib readers
        assert descriptor["codec"] == codec and descriptor["compressionLevel"] == level
        chunk = nodes["sampledb-0"].descriptor["collections"][0]["chunks"][0]
        assert (chunk["size"] < chunk["rawSize"]) == (codec != "none"), level


def test_path_overrides_where_the_backup_is_stored(env: Env) -> None:
    env.make_cluster(replicas=1).fill({"articles": [0]}, keys=100)
    env.start_operator()
    done = _run(env, "elsewhere", config={"path": "team-a/nightly"})
    assert done["status"]["phase"] == "SUCCESS"
    where = env.backups / "team-a" / "nightly" / "elsewhere"
    assert done["status"]["path"] == str(where)
    assert json.loads((where / "backup_config.json").read_text())["status"] == "SUCCESS"
    assert not (env.backups / "elsewhere").exists()


def test_cluster_that_is_not_a_statefulset_names_the_field_and_what_exists(env: Env) -> None:
    """spec.cluster naming a Deployment, or nothing: FAILED InvalidSpec naming spec.cluster and
    listing the namespace's StatefulSets (the operator runs under the chart's RBAC here)."""
    env.make_cluster(replicas=1)
    env.kubectl("create", "deployment", "web", "--image=registry.invalid/web:1")
    env.start_operator()
    for name, cluster in (("deployment", "web"), ("nothing", "nosuch")):
        failed = _run(env, name, cluster=cluster)
        assert failed["status"]["phase"] == "FAILED"
        error = failed["status"]["error"]
        assert error.startswith(f'spec.cluster: no StatefulSet "{cluster}" in namespace'), error
        assert 'its StatefulSets: "sampledb"' in error, error
        assert env.condition(failed, "Failed")["reason"] == "InvalidSpec"
