"""The agent and a workload hook: the hold always ends, and never before the prepare that began it."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from pydantic import SecretStr

from shardkeeper.agent import hook as hook_module
from shardkeeper.agent.app import create_app
from shardkeeper.agent.hook import HookError, WorkloadHook
from shardkeeper.agent.settings import AgentSettings
from shardkeeper.agent.snapshot import freeze
from shardkeeper.agent.staging import SnapshotError
from shardkeeper.api.hook import HeldWrites, HookFile

AUTH = {"Authorization": "Bearer tok"}


class SlowHook:
    """A workload whose prepare takes a while; it logs the order of what it is asked."""

    def __init__(self, data: Path, delay: float) -> None:
        self.data, self.delay = data, delay
        self.calls: list[str] = []
        self.holding = False

    def app(self) -> web.Application:
        async def prepare(request: web.Request) -> web.Response:
            body = await request.json()
            self.calls.append("prepare-start")
            await asyncio.sleep(self.delay)
            self.holding = True
            self.calls.append("prepare-done")
            files = [
                {"path": p.relative_to(self.data).as_posix(), "immutable": True}
                for c in body["collections"]
                for p in sorted((self.data / c).iterdir())
            ]
            return web.json_response({"files": files})

        async def release(_: web.Request) -> web.Response:
            self.calls.append("release")
            self.holding = False
            return web.json_response({})

        app = web.Application()
        app.router.add_post("/prepare", prepare)
        app.router.add_post("/release", release)
        return app


@pytest.fixture
async def setup(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[TestClient[Any, Any], SlowHook]]:
    data = _data(tmp_path, monkeypatch)
    hook = SlowHook(data, delay=0.5)
    async with _agent_with_hook(hook.app(), data) as client:
        yield client, hook


def _data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A data root with one collection holding one table, and a filesystem store beside it."""
    data = tmp_path / "data"
    (data / "col").mkdir(parents=True)
    (data / "col" / "1.sst").write_bytes(b"x" * 1000)
    monkeypatch.setenv("BACKUP_FILESYSTEM_PATH", str(tmp_path / "store"))
    (tmp_path / "store").mkdir()
    return data


@contextlib.asynccontextmanager
async def _agent_with_hook(hook_app: web.Application, data: Path) -> AsyncIterator[TestClient[Any, Any]]:
    """A real agent app on ``data`` whose workload hook is ``hook_app``, both served on loopback."""
    hook_server = TestServer(hook_app)
    await hook_server.start_server()
    settings = AgentSettings(
        node="n0", data_root=data, token=SecretStr("tok"), hook_url=str(hook_server.make_url(""))
    )
    client = TestClient(TestServer(create_app(settings)))
    await client.start_server()
    try:
        yield client
    finally:
        await client.close()
        await hook_server.close()


def _prepare(**extra: Any) -> dict[str, Any]:
    return {
        "kind": "backup",
        "id": "b1",
        "uid": "u",
        "node": "n0",
        "backend": "filesystem",
        "collections": ["col"],
        **extra,
    }


async def test_abort_during_a_slow_prepare_releases_after_it(setup) -> None:  # type: ignore[no-untyped-def]
    client, hook = setup
    await client.put("/v1/operations/b1", json=_prepare(), headers=AUTH)
    await asyncio.sleep(0.1)  # the workload is in the middle of its prepare
    aborted = await (await client.post("/v1/operations/b1/abort", json={"reason": "no"}, headers=AUTH)).json()
    assert aborted["phase"] == "CANCELED"
    assert hook.calls == ["prepare-start", "prepare-done", "release"]
    assert not hook.holding


async def test_cluster_consistency_holds_until_release(setup) -> None:  # type: ignore[no-untyped-def]
    client, hook = setup
    await client.put("/v1/operations/b1", json=_prepare(consistency="cluster"), headers=AUTH)
    for _ in range(100):
        status = await (await client.get("/v1/operations/b1", headers=AUTH)).json()
        if status["phase"] == "PREPARED":
            break
        await asyncio.sleep(0.02)
    assert status["held"] is True and hook.holding
    released = await (await client.post("/v1/operations/b1/release", headers=AUTH)).json()
    assert released["held"] is False and released["pauseMs"] >= 500
    assert not hook.holding and hook.calls[-1] == "release"
    await client.post("/v1/operations/b1/abort", json={}, headers=AUTH)
    assert hook.calls.count("release") == 1  # the hold ended once


async def test_node_consistency_releases_right_after_freezing(  # type: ignore[no-untyped-def]
    setup, capsys: pytest.CaptureFixture[str]
) -> None:
    client, hook = setup
    await client.put("/v1/operations/b1", json=_prepare(), headers=AUTH)
    for _ in range(100):
        status = await (await client.get("/v1/operations/b1", headers=AUTH)).json()
        if status["phase"] == "PREPARED":
            break
        await asyncio.sleep(0.02)
    assert status["held"] is False and not hook.holding
    assert hook.calls == ["prepare-start", "prepare-done", "release"]
    await client.post("/v1/operations/b1/abort", json={}, headers=AUTH)
    lines = capsys.readouterr().out.splitlines()
    released = [line for line in lines if "snapshot.released" in line]
    assert released and all("node=n0" in line for line in released)
    phases = [line for line in lines if "operation.phase" in line]
    assert phases and not [line for line in phases if "error=None" in line]


async def test_a_workload_that_reports_its_hold_is_believed_and_a_prefix_is_copied(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Node consistency asks the workload to resume writes after listing; it answers when it held
    them, and lists an append-only file by the length that belongs to the snapshot."""
    data = _data(tmp_path, monkeypatch)
    (data / "col" / "MANIFEST-1").write_bytes(b"m" * 300 + b"written after the hold")
    asked: list[dict[str, Any]] = []
    held = {"heldFrom": "2026-11-30T08:00:00.001Z", "heldUntil": "2026-11-30T08:00:00.005Z", "heldMs": 3.875}

    async def prepare(request: web.Request) -> web.Response:
        asked.append(await request.json())
        files = [
            {"path": "col/1.sst", "immutable": True},
            {"path": "col/MANIFEST-1", "immutable": False, "size": 300},
        ]
        return web.json_response({"files": files, **held})

    async def release(_: web.Request) -> web.Response:
        return web.json_response(held)

    app = web.Application()
    app.router.add_post("/prepare", prepare)
    app.router.add_post("/release", release)
    async with _agent_with_hook(app, data) as client:
        await client.put("/v1/operations/b1", json=_prepare(), headers=AUTH)
        for _ in range(100):
            status = await (await client.get("/v1/operations/b1", headers=AUTH)).json()
            if status["phase"] == "PREPARED":
                break
            await asyncio.sleep(0.02)
        assert asked[0]["resumeWritesAfterListing"] is True
        assert status["pauseMs"] == 3.875 and status["held"] is False
        assert status["hold"] == {
            "heldFrom": "2026-11-30T08:00:00.001000Z",
            "heldUntil": "2026-11-30T08:00:00.005000Z",
            "measuredBy": "workload",
            "endedByItself": False,
        }
        staged = data / ".shardkeeper" / "staging" / "b1" / "col" / "MANIFEST-1"
        assert staged.read_bytes() == b"m" * 300
        assert status["bytesTotal"] == 1300
        await client.post("/v1/operations/b1/abort", json={}, headers=AUTH)


class DeferringHook:
    """A workload that defers its listing when asked (cluster consistency): its prepare only holds
    writes; resume lists the files and resumes writes; release resumes compaction."""

    HELD = {"heldFrom": "2026-11-30T08:00:00.001Z"}
    RESUMED = {**HELD, "heldUntil": "2026-11-30T08:00:00.009Z", "heldMs": 7.5}

    def __init__(self, data: Path, *, resume_status: int = 200, expired: bool = False) -> None:
        self.data, self.resume_status, self.expired = data, resume_status, expired
        self.calls: list[str] = []
        self.asked: list[dict[str, Any]] = []
        self.writes_held = self.compaction_paused = False

    def app(self) -> web.Application:
        async def prepare(request: web.Request) -> web.Response:
            self.asked.append(await request.json())
            self.calls.append("prepare")
            self.writes_held = self.compaction_paused = True
            return web.json_response(self.HELD)

        async def resume(_: web.Request) -> web.Response:
            self.calls.append("resume")
            if self.resume_status != 200:
                return web.Response(status=self.resume_status, text="the hold ended by itself")
            self.writes_held = False
            # Written after the hold: the listed size keeps it out of the snapshot.
            with (self.data / "col" / "MANIFEST-1").open("ab") as f:
                f.write(b"written after the hold")
            files = [
                {"path": "col/1.sst", "immutable": True},
                {"path": "col/MANIFEST-1", "immutable": False, "size": 300},
            ]
            return web.json_response({"files": files, **self.RESUMED})

        async def release(_: web.Request) -> web.Response:
            self.calls.append("release")
            self.writes_held = self.compaction_paused = False
            return web.json_response({**self.RESUMED, "expired": self.expired})

        app = web.Application()
        app.router.add_post("/prepare", prepare)
        app.router.add_post("/resume", resume)
        app.router.add_post("/release", release)
        return app


@pytest.fixture
async def deferring(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> AsyncIterator[tuple[TestClient[Any, Any], DeferringHook, Path]]:
    data = _data(tmp_path, monkeypatch)
    (data / "col" / "MANIFEST-1").write_bytes(b"m" * 300)
    hook = DeferringHook(data, **getattr(request, "param", {}))
    async with _agent_with_hook(hook.app(), data) as client:
        yield client, hook, data / ".shardkeeper" / "staging" / "b1"


async def _until(client: TestClient[Any, Any], *phases: str) -> dict[str, Any]:
    for _ in range(250):
        status: dict[str, Any] = await (await client.get("/v1/operations/b1", headers=AUTH)).json()
        if status["phase"] in phases:
            return status
        await asyncio.sleep(0.02)
    raise AssertionError(f"still {status['phase']}, not {phases}")


async def test_cluster_consistency_lists_and_stages_after_writes_resume(deferring) -> None:  # type: ignore[no-untyped-def]
    """The hold covers no listing and no staging: prepared = writes held, nothing staged; the
    release resumes writes (compaction stays paused); the commit stages what resume listed, then
    ends the compaction hold, then uploads."""
    client, hook, staging = deferring
    await client.put("/v1/operations/b1", json=_prepare(consistency="cluster"), headers=AUTH)
    prepared = await _until(client, "PREPARED")
    assert hook.asked[0]["deferListing"] is True and hook.asked[0]["resumeWritesAfterListing"] is False
    assert prepared["held"] is True and hook.writes_held
    assert prepared["hold"]["heldFrom"] == "2026-11-30T08:00:00.001000Z"
    assert prepared["hold"].get("heldUntil") is None
    assert not any(staging.rglob("*"))  # nothing staged while writes are held

    released = await (await client.post("/v1/operations/b1/release", headers=AUTH)).json()
    assert hook.calls == ["prepare", "resume"]
    assert not hook.writes_held and hook.compaction_paused
    assert released["held"] is False and released["pauseMs"] == 7.5
    assert released["hold"] == {
        "heldFrom": "2026-11-30T08:00:00.001000Z",
        "heldUntil": "2026-11-30T08:00:00.009000Z",
        "measuredBy": "workload",
        "endedByItself": False,
    }

    await client.post("/v1/operations/b1/commit", headers=AUTH)
    done = await _until(client, "SUCCESS", "FAILED")
    assert done["phase"] == "SUCCESS", done["error"]
    assert hook.calls == ["prepare", "resume", "release"] and not hook.compaction_paused
    # Two files and the collection's directory; the MANIFEST up to its listed length.
    assert (done["bytesTotal"], done["filesTotal"], done["pauseMs"]) == (1300, 3, 7.5)
    assert done["hold"]["heldUntil"] == "2026-11-30T08:00:00.009000Z"  # the release changed nothing


async def test_an_abort_before_the_release_ends_the_whole_hold_once(deferring) -> None:  # type: ignore[no-untyped-def]
    client, hook, staging = deferring
    await client.put("/v1/operations/b1", json=_prepare(consistency="cluster"), headers=AUTH)
    await _until(client, "PREPARED")
    aborted = await (await client.post("/v1/operations/b1/abort", json={"reason": "no"}, headers=AUTH)).json()
    assert aborted["phase"] == "CANCELED"
    assert hook.calls == ["prepare", "release"]  # never resumed: the release ends writes and compaction
    assert not hook.writes_held and not hook.compaction_paused and not staging.exists()


@pytest.mark.parametrize("deferring", [{"resume_status": 409}], indirect=True)
async def test_a_resume_the_workload_refuses_fails_the_node_even_if_committed(deferring) -> None:  # type: ignore[no-untyped-def]
    """Nothing was listed, so nothing can be backed up: a commit that comes anyway (the operator
    counts a hold it could not release as open) fails the node with the resume's reason, never
    uploads an empty tree, and ends the hold."""
    client, hook, staging = deferring
    await client.put("/v1/operations/b1", json=_prepare(consistency="cluster"), headers=AUTH)
    await _until(client, "PREPARED")
    answer = await client.post("/v1/operations/b1/release", headers=AUTH)
    assert answer.status == 502
    why = "could not resume writes and list the files: workload hook resume answered 409: the hold ended"
    assert why in (await answer.json())["error"]
    await client.post("/v1/operations/b1/commit", headers=AUTH)
    failed = await _until(client, "SUCCESS", "FAILED", "CANCELED")
    assert failed["phase"] == "FAILED" and why in failed["error"]
    assert hook.calls == ["prepare", "resume", "release"] and not hook.compaction_paused
    assert not staging.exists()
    store = staging.parents[3] / "store"
    assert [p for p in store.rglob("*") if p.is_file()] == []  # nothing uploaded


async def test_a_repeated_release_waits_for_the_same_resume_and_keeps_compaction_paused(deferring) -> None:  # type: ignore[no-untyped-def]
    """An operator that restarts between its releases and its commit releases again: the files the
    resume listed must stay as listed until they are staged, so compaction stays paused."""
    client, hook, _ = deferring
    await client.put("/v1/operations/b1", json=_prepare(consistency="cluster"), headers=AUTH)
    await _until(client, "PREPARED")
    first, again = await asyncio.gather(
        client.post("/v1/operations/b1/release", headers=AUTH),
        client.post("/v1/operations/b1/release", headers=AUTH),
    )
    assert (first.status, again.status) == (200, 200)
    third = await client.post("/v1/operations/b1/release", headers=AUTH)
    assert third.status == 200 and (await third.json())["pauseMs"] == 7.5
    assert hook.calls == ["prepare", "resume"] and hook.compaction_paused
    await client.post("/v1/operations/b1/commit", headers=AUTH)
    done = await _until(client, "SUCCESS", "FAILED")
    assert done["phase"] == "SUCCESS", done["error"]
    assert hook.calls == ["prepare", "resume", "release"]


@pytest.mark.parametrize("deferring", [{"expired": True}], indirect=True)
async def test_a_hold_that_ended_by_itself_before_staging_ended_fails_the_node(deferring) -> None:  # type: ignore[no-untyped-def]
    """The workload's hold timeout ended the compaction hold while the files were staged: a listed
    file may have changed before it was staged, so the node fails rather than upload it."""
    client, hook, staging = deferring
    await client.put("/v1/operations/b1", json=_prepare(consistency="cluster"), headers=AUTH)
    await _until(client, "PREPARED")
    await client.post("/v1/operations/b1/release", headers=AUTH)
    await client.post("/v1/operations/b1/commit", headers=AUTH)
    failed = await _until(client, "SUCCESS", "FAILED")
    assert failed["phase"] == "FAILED"
    assert "ended its hold by itself (its hold timeout) before the files were staged" in failed["error"]
    assert hook.calls == ["prepare", "resume", "release"] and not staging.exists()


async def _answering(
    routes: dict[str, tuple[int, bytes]], spool_dir: Path | None = None
) -> tuple[TestServer, WorkloadHook]:
    """A workload that answers each endpoint with a fixed status and body (JSON content type)."""

    def handler(status: int, body: bytes) -> Any:
        async def answer(_: web.Request) -> web.Response:
            return web.Response(status=status, body=body, content_type="application/json")

        return answer

    app = web.Application()
    for name, (status, body) in routes.items():
        app.router.add_post(f"/{name}", handler(status, body))
    server = TestServer(app)
    await server.start_server()
    return server, WorkloadHook(str(server.make_url("/")), timeout=10, spool_dir=spool_dir)


async def test_a_file_list_is_kept_in_an_unnamed_file_and_capped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not in memory: a million listed files are ~50 MB. Nothing is left in the spool directory (made
    if missing), and an answer past ``MAX_LISTING_BYTES`` is refused before it is all kept."""
    files = [{"path": f"c/{i:06d}.sst", "immutable": True} for i in range(40_000)]
    body = json.dumps({"files": files, "heldMs": 1}).encode()
    assert len(body) > 1 << 20  # more than one block
    spool_dir = tmp_path / "staging"
    server, hook = await _answering({"prepare": (200, body), "resume": (200, body)}, spool_dir)
    try:
        listed = await hook.prepare("b", ["c"], hold_timeout=60)
        assert (listed.count, listed.held) == (40_000, HeldWrites(held_ms=1))
        assert [f.path for f in listed.files()] == [f["path"] for f in files]
        assert list(spool_dir.iterdir()) == []
        monkeypatch.setattr(hook_module, "MAX_LISTING_BYTES", len(body) - 1)
        with pytest.raises(HookError, match=f"resume answered more than {len(body) - 1} bytes"):
            await hook.resume("b")
    finally:
        await server.close()


async def test_a_file_list_that_cannot_be_kept_is_a_hook_error(tmp_path: Path) -> None:
    (tmp_path / "not-a-dir").write_bytes(b"")
    server, hook = await _answering({"prepare": (200, b'{"files": []}')}, tmp_path / "not-a-dir")
    try:
        with pytest.raises(HookError, match="workload hook prepare: no file to keep its answer in"):
            await hook.prepare("b", ["c"], hold_timeout=60)
    finally:
        await server.close()


async def test_a_name_that_is_not_utf8_is_listed_and_staged(tmp_path: Path) -> None:
    # A workload written in Python lists os.walk's names as json.dumps writes them: an undecodable
    # byte is a lone surrogate escape, which the fast JSON parser refuses.
    data = tmp_path / "data"
    (data / "c").mkdir(parents=True)
    raw_name = b"x\xff\xfe.sst"
    (data / "c").joinpath(raw_name.decode("utf-8", "surrogateescape")).write_bytes(b"table")
    name = "c/" + raw_name.decode("utf-8", "surrogateescape")
    body = json.dumps({"files": [{"path": name, "immutable": True}]}).encode()
    assert b"\\udcff" in body
    server, hook = await _answering({"prepare": (200, body), "release": (200, b"{}")})
    try:
        frozen = await freeze(
            op_id="b",
            collections=["c"],
            data_root=data,
            staging=tmp_path / "staging",
            hook=hook,
            immutable_patterns=(),
            hold_timeout=60,
        )
    finally:
        await server.close()
    assert [e.name for e in frozen.entries["c"]] == ["c", name]
    assert (tmp_path / "staging" / name).read_bytes() == b"table"


async def test_a_blank_release_answer_says_nothing_and_a_garbled_error_is_a_hook_error() -> None:
    server, hook = await _answering({"release": (200, b" \n")})
    try:
        assert await hook.release("b") == HeldWrites()
    finally:
        await server.close()
    server, hook = await _answering({"release": (500, b"\xff\xfe oops"), "prepare": (503, b"\xff")})
    try:
        with pytest.raises(HookError, match="answered 500"):
            await hook.release("b")
        with pytest.raises(HookError, match="answered 503"):
            await hook.prepare("b", ["c"], hold_timeout=60)
    finally:
        await server.close()


async def test_a_file_list_that_is_not_json_or_not_a_list_is_a_hook_error() -> None:
    for body, why in (
        (b"{not json", "prepare answered an invalid file list"),
        (b'{"files": {"path": "c/f"}}', "prepare answered an invalid file list: files: not a list"),
    ):
        server, hook = await _answering({"prepare": (200, body)})
        try:
            with pytest.raises(HookError, match=why):
                await hook.prepare("b", ["c"], hold_timeout=60)
        finally:
            await server.close()


async def test_an_invalid_listed_file_is_a_hook_error_naming_it_when_it_is_read() -> None:
    body = b'{"files": [{"path": "c/a", "immutable": true}, {"path": 3}]}'
    server, hook = await _answering({"prepare": (200, body)})
    try:
        listed = await hook.prepare("b", ["c"], hold_timeout=60)
    finally:
        await server.close()
    assert listed.count == 2
    files = listed.files()
    assert next(files) == HookFile(path="c/a", immutable=True)
    with pytest.raises(HookError, match=r"prepare listed an invalid file \(files\[1\]\)"):
        next(files)


async def test_a_freeze_that_meets_an_invalid_listed_file_fails_naming_it_and_releases(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    (data / "c").mkdir(parents=True)
    (data / "c" / "a").write_bytes(b"table")
    released: list[bytes] = []

    async def release(request: web.Request) -> web.Response:
        released.append(await request.read())
        return web.json_response({})

    async def prepare(_: web.Request) -> web.Response:
        body = b'{"files": [{"path": "c/a", "immutable": true}, {"path": "c/b", "immutable": "often"}]}'
        return web.Response(body=body, content_type="application/json")

    app = web.Application()
    app.router.add_post("/prepare", prepare)
    app.router.add_post("/release", release)
    server = TestServer(app)
    await server.start_server()
    try:
        with pytest.raises(SnapshotError, match=r"(?s)listed an invalid file \(files\[1\]\).*immutable"):
            await freeze(
                op_id="b",
                collections=["c"],
                data_root=data,
                staging=tmp_path / "staging",
                hook=WorkloadHook(str(server.make_url("/")), timeout=10),
                immutable_patterns=(),
                hold_timeout=60,
            )
    finally:
        await server.close()
    assert [json.loads(body)["id"] for body in released] == ["b"]
