"""The agent's protocol, against a real agent app on a real data directory and filesystem backend.

No workload hook here: the agent freezes files itself (hookless mode), which also covers that path.
"""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from pydantic import SecretStr

from shardkeeper.agent import staging
from shardkeeper.agent.app import REGISTRY, create_app
from shardkeeper.agent.backup import RESTORE_BASE_BYTES, worker_count
from shardkeeper.agent.settings import AgentSettings
from shardkeeper.api.agent import PrepareRestore

TOKEN = "t0ken-for-tests"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
async def agent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[TestClient[Any, Any], Path, Path]]:
    data, store = tmp_path / "data", tmp_path / "store"
    for collection in ("articles", "users"):
        (data / collection).mkdir(parents=True)
        (data / collection / "000001.sst").write_bytes(collection.encode() * 10_000)
        (data / collection / "MANIFEST-000001").write_bytes(b"manifest")
    store.mkdir()
    monkeypatch.setenv("BACKUP_FILESYSTEM_PATH", str(store))
    settings = AgentSettings(node="db-0", data_root=data, token=SecretStr(TOKEN))
    client = TestClient(TestServer(create_app(settings)))
    await client.start_server()
    yield client, data, store
    await client.close()


def _prepare(op_id: str = "b1", **overrides: Any) -> dict[str, Any]:
    return {
        "kind": "backup",
        "id": op_id,
        "uid": "uid-1",
        "node": "db-0",
        "backend": "filesystem",
        "collections": ["articles", "users", "absent"],
        **overrides,
    }


async def _wait_phase(
    client: TestClient[Any, Any], op_id: str, *phases: str, timeout: float = 10
) -> dict[str, Any]:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        body: dict[str, Any] = await (await client.get(f"/v1/operations/{op_id}", headers=AUTH)).json()
        if body.get("phase") in phases:
            return body
        assert asyncio.get_running_loop().time() < deadline, body
        await asyncio.sleep(0.05)


async def test_every_endpoint_but_healthz_requires_the_token(agent) -> None:  # type: ignore[no-untyped-def]
    client, _, _ = agent
    assert (await client.get("/healthz")).status == 200
    assert (await client.get("/v1/node")).status == 401
    assert (await client.get("/v1/node", headers={"Authorization": "Bearer wrong"})).status == 401
    assert (await client.put("/v1/operations/b1", json=_prepare())).status == 401
    node = await (await client.get("/v1/node", headers=AUTH)).json()
    assert node["node"] == "db-0" and node["collections"] == ["articles", "users"]


async def test_backup_prepare_commit_success(agent) -> None:  # type: ignore[no-untyped-def]
    client, data, store = agent
    resp = await client.put("/v1/operations/b1", json=_prepare(), headers=AUTH)
    assert resp.status == 202
    prepared = await _wait_phase(client, "b1", "PREPARED")
    assert prepared["collections"] == ["articles", "users"]  # "absent" is not on this node
    assert prepared["filesTotal"] == 6  # per collection: its directory, a table and a manifest
    # A retry of the same request is a no-op, not a second operation.
    again = await client.put("/v1/operations/b1", json=_prepare(), headers=AUTH)
    assert again.status == 200
    assert (await client.post("/v1/operations/b1/commit", headers=AUTH)).status == 200
    done = await _wait_phase(client, "b1", "SUCCESS", "FAILED")
    assert done["phase"] == "SUCCESS" and done["bytesDone"] == done["bytesTotal"]
    descriptor = json.loads((store / "b1" / "db-0" / "backup.json").read_text())
    assert [c["name"] for c in descriptor["collections"]] == ["articles", "users"]
    assert (store / "b1" / "db-0" / "chunk-1").exists() and (store / "b1" / "db-0" / "chunk-2").exists()
    assert not any((data / ".shardkeeper" / "staging").iterdir())
    assert "operation" not in await (await client.get("/v1/node", headers=AUTH)).json()


async def test_a_backup_whose_restore_would_not_fit_succeeds_with_a_warning(tmp_path: Path) -> None:
    data, store = tmp_path / "data", tmp_path / "store"
    (data / "articles").mkdir(parents=True)
    (data / "articles" / "000001.sst").write_bytes(b"table")
    store.mkdir()
    settings = AgentSettings(
        node="db-0", data_root=data, token=SecretStr(TOKEN), memory_limit_bytes=RESTORE_BASE_BYTES
    )
    with pytest.MonkeyPatch.context() as env:
        env.setenv("BACKUP_FILESYSTEM_PATH", str(store))
        client = TestClient(TestServer(create_app(settings)))
        await client.start_server()
        try:
            request = _prepare(collections=["articles"])
            assert (await client.put("/v1/operations/b1", json=request, headers=AUTH)).status == 202
            await _wait_phase(client, "b1", "PREPARED")
            assert (await client.post("/v1/operations/b1/commit", headers=AUTH)).status == 200
            done = await _wait_phase(client, "b1", "SUCCESS", "FAILED")
        finally:
            await client.close()
    assert done["phase"] == "SUCCESS"
    [warning] = done["warnings"]
    assert "a restore of this node needs about 101 MiB" in warning and "(2 entries" in warning
    assert "limit of 100 MiB" in warning and "agent.resources.limits.memory" in warning


async def test_a_restore_onto_a_file_in_a_collections_place_is_refused_at_prepare(agent) -> None:  # type: ignore[no-untyped-def]
    """Not counted as a collection (a regular file), it would still have failed the rename into
    place, after the whole download, as "appeared during the restore"."""
    client, data, _ = agent
    assert (await client.put("/v1/operations/b1", json=_prepare(), headers=AUTH)).status == 202
    await _wait_phase(client, "b1", "PREPARED")
    assert (await client.post("/v1/operations/b1/commit", headers=AUTH)).status == 200
    assert (await _wait_phase(client, "b1", "SUCCESS", "FAILED"))["phase"] == "SUCCESS"
    for collection in ("articles", "users"):
        shutil.rmtree(data / collection)
    (data / "users").write_bytes(b"not a collection")
    restore = PrepareRestore(
        id="r1",
        uid="uid-2",
        node="db-0",
        backend="filesystem",
        backup_id="b1",
        source_node="db-0",
        collections=["articles", "users"],
    )
    assert (await client.put("/v1/operations/r1", json=restore.wire(), headers=AUTH)).status == 202
    failed = await _wait_phase(client, "r1", "FAILED")
    assert f"['{data / 'users'}'] on node \"db-0\" stand where the restored collections go" in failed["error"]
    assert (data / "users").read_bytes() == b"not a collection" and not (data / "articles").exists()


async def test_one_operation_per_node(agent) -> None:  # type: ignore[no-untyped-def]
    client, _, _ = agent
    assert (await client.put("/v1/operations/b1", json=_prepare(), headers=AUTH)).status == 202
    busy = await client.put("/v1/operations/b2", json=_prepare("b2"), headers=AUTH)
    assert busy.status == 409
    assert 'node "db-0" is busy with backup "b1"' in (await busy.json())["error"]
    await client.post("/v1/operations/b1/abort", json={"reason": "test over"}, headers=AUTH)


async def test_reservation_expires_without_commit(agent) -> None:  # type: ignore[no-untyped-def]
    client, data, _ = agent
    await client.put("/v1/operations/b1", json=_prepare(reservationSeconds=0.3), headers=AUTH)
    failed = await _wait_phase(client, "b1", "FAILED")
    assert "reservation expired" in failed["error"]
    assert not (data / ".shardkeeper" / "staging" / "b1").exists()
    # The node is free for the next operation.
    assert (await client.put("/v1/operations/b2", json=_prepare("b2"), headers=AUTH)).status == 202
    await client.post("/v1/operations/b2/abort", json={}, headers=AUTH)


async def test_abort_cancels_and_removes_staging(agent) -> None:  # type: ignore[no-untyped-def]
    client, data, store = agent
    await client.put("/v1/operations/b1", json=_prepare(), headers=AUTH)
    await _wait_phase(client, "b1", "PREPARED")
    assert (data / ".shardkeeper" / "staging" / "b1").exists()
    aborted = await (
        await client.post("/v1/operations/b1/abort", json={"reason": "user said so"}, headers=AUTH)
    ).json()
    assert aborted["phase"] == "CANCELED" and aborted["error"] == "user said so"
    assert not (data / ".shardkeeper" / "staging" / "b1").exists()
    assert not (store / "b1" / "db-0").exists()
    commit = await client.post("/v1/operations/b1/commit", headers=AUTH)
    assert commit.status == 409


async def test_a_long_poll_answers_the_moment_the_phase_moves_on(agent) -> None:  # type: ignore[no-untyped-def]
    """``waitWhile``: the request stays open while the phase is that one, and answers with the
    next phase as soon as there is one (how the operator learns at once that a node prepared)."""
    client, _, _ = agent
    await client.put("/v1/operations/b1", json=_prepare(), headers=AUTH)
    await _wait_phase(client, "b1", "PREPARED")
    waiting = asyncio.ensure_future(
        client.get("/v1/operations/b1?waitWhile=PREPARED&timeoutSeconds=10", headers=AUTH)
    )
    await asyncio.sleep(0.3)
    assert not waiting.done()  # held open: nothing moved
    assert (await client.post("/v1/operations/b1/commit", headers=AUTH)).status == 200
    answer = await asyncio.wait_for(waiting, 5)  # woken by the change, not by its 10 s timeout
    assert answer.status == 200
    assert (await answer.json())["phase"] in ("TRANSFERRING", "TRANSFERRED", "SUCCESS")
    await _wait_phase(client, "b1", "SUCCESS")
    # A phase it is not in answers at once; so does one that never ends, after its timeout.
    done = await client.get("/v1/operations/b1?waitWhile=PREPARING&timeoutSeconds=10", headers=AUTH)
    assert (await done.json())["phase"] == "SUCCESS"
    held = await client.get("/v1/operations/b1?waitWhile=SUCCESS&timeoutSeconds=0.05", headers=AUTH)
    assert held.status == 200 and (await held.json())["phase"] == "SUCCESS"


async def _poll_on_an_ended_operation(client: TestClient[Any, Any]) -> asyncio.Future[Any]:
    """Operation b1 prepared, then aborted; a long poll on it (waitWhile=CANCELED), open and waiting."""
    await client.put("/v1/operations/b1", json=_prepare(), headers=AUTH)
    await _wait_phase(client, "b1", "PREPARED")
    await client.post("/v1/operations/b1/abort", json={}, headers=AUTH)
    waiting = asyncio.ensure_future(
        client.get("/v1/operations/b1?waitWhile=CANCELED&timeoutSeconds=10", headers=AUTH)
    )
    await asyncio.sleep(0.3)
    assert not waiting.done()
    return waiting


async def test_a_long_poll_answers_for_what_the_id_names_now(agent) -> None:  # type: ignore[no-untyped-def]
    """An operation that ended can be replaced by a new one with its id (another uid): a long poll
    waiting on the old one answers at once with the new one, never with the old one's status."""
    client, _, _ = agent
    waiting = await _poll_on_an_ended_operation(client)
    assert (await client.put("/v1/operations/b1", json=_prepare(uid="uid-2"), headers=AUTH)).status == 202
    answer = await (await asyncio.wait_for(waiting, 5)).json()  # woken by the replacement
    assert answer["uid"] == "uid-2"
    await client.post("/v1/operations/b1/abort", json={}, headers=AUTH)


async def test_a_stopping_agent_answers_its_long_polls_at_once(agent) -> None:  # type: ignore[no-untyped-def]
    """The server waits for open requests before it stops: a poll on an operation that will not
    move again must not hold the shutdown for its whole timeout."""
    client, _, _ = agent
    waiting = await _poll_on_an_ended_operation(client)
    await client.server.app[REGISTRY].shutdown()
    answer = await asyncio.wait_for(waiting, 5)
    assert answer.status == 200 and (await answer.json())["phase"] == "CANCELED"


@pytest.mark.parametrize(
    ("query", "parameter", "why"),
    [
        ("waitWhile=SOON", "waitWhile", "Input should be"),
        ("waitWhile=PREPARED&timeoutSeconds=0", "timeoutSeconds", "greater than 0"),
        ("waitWhile=PREPARED&timeoutSeconds=-1", "timeoutSeconds", "greater than 0"),
        ("waitWhile=PREPARED&timeoutSeconds=11", "timeoutSeconds", "less than or equal to 10"),
        ("waitWhile=PREPARED&timeoutSeconds=nan", "timeoutSeconds", "a finite number"),
        ("waitWhile=PREPARED&timeoutSeconds=inf", "timeoutSeconds", "a finite number"),
        ("waitWhile=PREPARED&timeoutSeconds=soon", "timeoutSeconds", "a valid number"),
    ],
)
async def test_a_query_that_is_not_the_protocol_is_400_naming_the_parameter(  # type: ignore[no-untyped-def]
    agent, query: str, parameter: str, why: str
) -> None:
    client, _, _ = agent
    await client.put("/v1/operations/b1", json=_prepare(), headers=AUTH)
    resp = await client.get(f"/v1/operations/b1?{query}", headers=AUTH)
    assert resp.status == 400, await resp.text()
    error = (await resp.json())["error"]
    assert error.startswith(f"invalid request query: {parameter}: ") and why in error, error
    await client.post("/v1/operations/b1/abort", json={}, headers=AUTH)


async def test_wrong_node_is_refused(agent) -> None:  # type: ignore[no-untyped-def]
    client, _, _ = agent
    await client.put("/v1/operations/b1", json=_prepare(node="db-7"), headers=AUTH)
    failed = await _wait_phase(client, "b1", "FAILED")
    assert 'serves node "db-0", not "db-7"' in failed["error"]


async def test_unknown_operation_is_404(agent) -> None:  # type: ignore[no-untyped-def]
    client, _, _ = agent
    assert (await client.get("/v1/operations/nope", headers=AUTH)).status == 404
    assert (await client.post("/v1/operations/nope/commit", headers=AUTH)).status == 404


@pytest.mark.parametrize(
    ("cores", "pct", "workers"), [(2, 50, 1), (2, 80, 1), (8, 50, 4), (16, 80, 12), (1, 1, 1)]
)
def test_worker_pool_follows_cpu_percentage(cores: int, pct: int, workers: int) -> None:
    assert worker_count(cores, pct) == workers


async def test_a_file_gone_between_listing_and_freezing_is_left_out_with_a_warning(  # type: ignore[no-untyped-def]
    agent, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Hookless: the walk lists a file, which is deleted before it is copied into staging."""
    client, data, store = agent
    (data / "users" / "LOG.old.vanishing").write_bytes(b"rotated away")
    copy_file = staging.copy_file

    def deleted_first(src: str, dst: str, st: Any) -> None:
        if src.endswith("vanishing"):
            Path(src).unlink()
        copy_file(src, dst, st)

    monkeypatch.setattr(staging, "copy_file", deleted_first)
    assert (await client.put("/v1/operations/b1", json=_prepare(), headers=AUTH)).status == 202
    prepared = await _wait_phase(client, "b1", "PREPARED", "FAILED")
    assert prepared["phase"] == "PREPARED", prepared.get("error")
    assert prepared["warnings"] == [
        "users/LOG.old.vanishing: removed between the listing and its freezing: left out"
    ]
    await client.post("/v1/operations/b1/commit", headers=AUTH)
    done = await _wait_phase(client, "b1", "SUCCESS", "FAILED")
    assert done["phase"] == "SUCCESS", done.get("error")
    descriptor = json.loads((store / "b1" / "db-0" / "backup.json").read_text())
    assert descriptor["skippedCount"] == 1 and descriptor["skipped"][0]["path"] == "users/LOG.old.vanishing"
    paths = [e.get("path") for c in descriptor["collections"] for e in c["entries"]]
    assert "users/LOG.old.vanishing" not in paths and "users/MANIFEST-000001" in paths


_BAD_BODIES = {
    "malformed JSON": b'{"kind": "backup", ',
    "not an object": b'["backup"]',
    "empty": b"",
    "invalid UTF-8": b'{"kind": "backup", "id": "\xff\xfe"}',
    "deeply nested": b'{"kind": "backup", "x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
    "unknown kind": b'{"kind": "ftp"}',
}


_BAD_ABORT_BODIES = {k: v for k, v in _BAD_BODIES.items() if k not in ("empty", "unknown kind")}


@pytest.mark.parametrize(
    ("method", "path", "what"),
    [
        *(("PUT", "/v1/operations/b1", what) for what in sorted(_BAD_BODIES)),
        # abort's body is optional (empty keeps the default reason) and carries no kind
        *(("POST", "/v1/operations/b1/abort", what) for what in sorted(_BAD_ABORT_BODIES)),
    ],
)
async def test_a_body_that_is_not_the_protocol_is_400_with_a_message(  # type: ignore[no-untyped-def]
    agent, method: str, path: str, what: str
) -> None:
    """Every route that reads a body (prepare and abort) answers 400 with a message, never 500."""
    client, _, _ = agent
    if method == "POST":  # abort needs an operation to get as far as its body
        assert (await client.put("/v1/operations/b1", json=_prepare(), headers=AUTH)).status == 202
    resp = await client.request(
        method, path, data=_BAD_BODIES[what], headers={**AUTH, "Content-Type": "application/json"}
    )
    assert resp.status == 400, await resp.text()
    assert (await resp.json())["error"].startswith("invalid request body: ")
    assert (await client.post("/v1/operations/b1/abort", headers=AUTH)).status in (200, 404)


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"path": "../escaped"}, "path"),
        ({"path": "/etc/x"}, "path"),
        ({"cpuPercentage": 500}, "cpuPercentage"),
        ({"chunkSizeMb": 0}, "chunkSizeMb"),
        ({"collections": ["../etc"]}, "collections.0"),
    ],
)
async def test_prepare_carries_the_crd_bounds(  # type: ignore[no-untyped-def]
    agent, overrides: dict[str, Any], field: str
) -> None:
    client, _, store = agent
    resp = await client.put("/v1/operations/b1", json=_prepare(**overrides), headers=AUTH)
    assert resp.status == 400, await resp.text()
    assert f"backup.{field}:" in (await resp.json())["error"]
    assert (await client.get("/v1/operations/b1", headers=AUTH)).status == 404
    assert not any(store.parent.glob("escaped*"))


def test_a_storage_prefix_never_leaves_the_root(tmp_path: Path) -> None:
    from shardkeeper.errors import StorageError
    from shardkeeper.storage.filesystem import FilesystemStorage

    for prefix in ("../escaped", "a/../../b", "a//b"):
        with pytest.raises(StorageError, match="invalid storage key"):
            FilesystemStorage(root=tmp_path, prefix=prefix)
    assert FilesystemStorage(root=tmp_path, prefix="/team-a/").prefix == "team-a"
