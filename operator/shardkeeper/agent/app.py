"""The agent's HTTP service (aiohttp): thin routes over the operation registry."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import os
import shutil
from collections.abc import Awaitable, Callable
from typing import TypeVar

import structlog
from aiohttp import web
from pydantic import BaseModel, TypeAdapter, ValidationError

from shardkeeper import conventions as c
from shardkeeper.agent import metrics
from shardkeeper.agent.backup import BackupJob
from shardkeeper.agent.hook import WorkloadHook
from shardkeeper.agent.journal import take_back_journaled
from shardkeeper.agent.operations import Job, OperationConflict, Registry
from shardkeeper.agent.restore import RestoreJob, remove_tree
from shardkeeper.agent.settings import AgentSettings
from shardkeeper.agent.snapshot import local_collections, unnamable_directories
from shardkeeper.api.agent import (
    AbortRequest,
    ErrorBody,
    NodeInfo,
    NodePhase,
    Prepare,
    PrepareRestore,
    StatusQuery,
)
from shardkeeper.api.common import error_text
from shardkeeper.errors import InvalidRequest, ShardkeeperError, UnknownOperation
from shardkeeper.storage import open_storage

log = structlog.get_logger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
SETTINGS = web.AppKey("settings", AgentSettings)
REGISTRY = web.AppKey("registry", Registry)
HOOK = web.AppKey("hook", WorkloadHook)
T = TypeVar("T")
_PREPARE: TypeAdapter[Prepare] = TypeAdapter(Prepare)
_ABORT = TypeAdapter(AbortRequest)
_STATUS_QUERY = TypeAdapter(StatusQuery)


def _json(model: BaseModel, status: int = 200) -> web.Response:
    return web.json_response(model.model_dump(mode="json", by_alias=True, exclude_none=True), status=status)


def _error(status: int, message: str) -> web.Response:
    return _json(ErrorBody(error=message), status)


@web.middleware
async def _auth(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.path == "/healthz":
        return await handler(request)
    expected = request.app[SETTINGS].token.get_secret_value()
    given = request.headers.get("Authorization", "")
    scheme, _, token = given.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(token.encode(), expected.encode()):
        return _error(401, "missing or wrong bearer token")
    return await handler(request)


@web.middleware
async def _errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Domain errors as HTTP statuses (the inverse of ``coordinator.agents.AgentClient._call``)."""
    try:
        return await handler(request)
    except InvalidRequest as exc:
        return _error(400, str(exc))
    except UnknownOperation as exc:
        return _error(404, str(exc))
    except OperationConflict as exc:
        return _json(ErrorBody(error=str(exc), holder=exc.holder), 409)


def _invalid(where: str, exc: ValidationError) -> InvalidRequest:
    problems = "; ".join(
        f"{'.'.join(str(p) for p in e['loc']) or where}: {error_text(e)}"
        for e in exc.errors(include_url=False, include_input=False)[:10]
    )
    return InvalidRequest(f"invalid request {where}: {problems}")


async def _read(request: web.Request, adapter: TypeAdapter[T]) -> T:
    """The request body as ``adapter``'s type. Empty, not JSON, not UTF-8, nested too deep, not an
    object or not the model: ``InvalidRequest`` naming the field, never a 500."""
    raw = await request.read()
    if not raw.strip():
        raise InvalidRequest("invalid request body: empty; a JSON object is expected")
    try:
        return adapter.validate_json(raw)
    except ValidationError as exc:
        raise _invalid("body", exc) from None


def _query(request: web.Request, adapter: TypeAdapter[T]) -> T:
    """The query string as ``adapter``'s type (a repeated parameter: its last value);
    ``InvalidRequest`` naming the parameter."""
    try:
        return adapter.validate_python(dict(request.query.items()))
    except ValidationError as exc:
        raise _invalid("query", exc) from None


async def _healthz(_: web.Request) -> web.Response:
    return web.json_response({"ok": True})


async def _node(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS]
    registry = request.app[REGISTRY]
    active = registry.active
    return _json(
        NodeInfo(
            node=settings.node,
            collections=local_collections(settings.data_root, c.AGENT_STATE_DIR),
            unnamed=unnamable_directories(settings.data_root),
            free_bytes=await asyncio.to_thread(settings.usable_bytes),
            operation=active.status() if active else None,
        )
    )


async def _prepare(request: web.Request) -> web.Response:
    op_id = request.match_info["id"]
    settings, registry = request.app[SETTINGS], request.app[REGISTRY]
    req = await _read(request, _PREPARE)
    if req.id != op_id:
        return _error(400, f"operation id in the path ({op_id}) and body ({req.id}) differ")
    try:
        storage = open_storage(req.backend, path=req.path)
    except ShardkeeperError as exc:
        return _error(422, str(exc))
    reservation = registry.reservation(req.reservation_seconds)
    hook = request.app.get(HOOK)

    def job() -> Job:
        if isinstance(req, PrepareRestore):
            return RestoreJob(settings, req, storage, hook, reservation=reservation)
        return BackupJob(settings, req, storage, hook, reservation=reservation)

    op, created = await registry.start(
        op_id=op_id,
        uid=req.uid,
        kind=req.kind,
        reservation_seconds=req.reservation_seconds,
        job_factory=job,
    )
    return _json(op.status(), 202 if created else 200)


async def _status(request: web.Request) -> web.Response:
    query = _query(request, _STATUS_QUERY)
    registry, op_id = request.app[REGISTRY], request.match_info["id"]
    op = registry.get(op_id)
    if op is not None and query.wait_while is not None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(query.timeout_seconds):
                await op.wait_while(query.wait_while)
        op = registry.get(op_id)  # what the id names now: a new operation may have taken it
    if op is None:
        return _error(404, f'node "{request.app[SETTINGS].node}" has no operation "{op_id}"')
    return _json(op.status())


async def _release(request: web.Request) -> web.Response:
    try:
        op = await request.app[REGISTRY].release(request.match_info["id"])
    except (UnknownOperation, OperationConflict):
        raise
    except ShardkeeperError as exc:  # the workload hook did not take the release
        return _error(502, str(exc))
    return _json(op.status())


async def _commit(request: web.Request) -> web.Response:
    op = await request.app[REGISTRY].commit(request.match_info["id"])
    return _json(op.status())


def _step(name: str, waiting_in: NodePhase) -> Handler:
    async def handler(request: web.Request) -> web.Response:
        op = await request.app[REGISTRY].signal(request.match_info["id"], name, waiting_in=waiting_in)
        return _json(op.status())

    return handler


async def _abort(request: web.Request) -> web.Response:
    """The body is optional (an empty one keeps the default reason)."""
    raw = await request.read()
    reason = await _read(request, _ABORT) if raw.strip() else AbortRequest()
    op = await request.app[REGISTRY].abort(request.match_info["id"], reason.reason)
    return _json(op.status())


async def _cleanup_orphans(app: web.Application) -> None:
    """A restarted agent owns no operation: collections a restore had moved into place are taken
    back (the restore can no longer complete; ``agent.journal``), and staging is garbage."""
    settings = app[SETTINGS]
    taken = await asyncio.to_thread(
        take_back_journaled, settings.journal_dir, settings.data_root, remove_tree
    )
    if taken:
        log.warning("agent.restore_taken_back", collections=taken)
    for leftover in (settings.staging_dir, settings.restore_dir):
        if leftover.exists():
            shutil.rmtree(leftover, ignore_errors=True)
            log.info("agent.staging_cleaned", path=str(leftover))


async def _shutdown(app: web.Application) -> None:
    await app[REGISTRY].shutdown()


def create_app(settings: AgentSettings) -> web.Application:
    app = web.Application(middlewares=[_auth, _errors], client_max_size=4 << 20)
    app[SETTINGS] = settings
    app[REGISTRY] = Registry(settings.node, reservation_limit=settings.max_reservation_seconds)
    if settings.hook_url:
        app[HOOK] = WorkloadHook(
            settings.hook_url, timeout=settings.hook_timeout_seconds, spool_dir=settings.staging_dir
        )
    app.on_startup.append(_cleanup_orphans)
    app.on_shutdown.append(_shutdown)
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/v1/node", _node)
    app.router.add_put("/v1/operations/{id}", _prepare)
    app.router.add_get("/v1/operations/{id}", _status)
    app.router.add_post("/v1/operations/{id}/release", _release)
    app.router.add_post("/v1/operations/{id}/commit", _commit)
    app.router.add_post("/v1/operations/{id}/finalize", _step("finalize", NodePhase.TRANSFERRED))
    app.router.add_post("/v1/operations/{id}/complete", _step("complete", NodePhase.FINALIZING))
    app.router.add_post("/v1/operations/{id}/abort", _abort)
    return app


def run(settings: AgentSettings) -> None:
    log.info(
        "agent.start",
        node=settings.node,
        listen=f"{settings.host}:{settings.port}",
        data_root=str(settings.data_root),
        hook=settings.hook_url,
        cores=settings.cores,
    )
    metrics_port = int(os.environ.get("SHARDKEEPER_METRICS_PORT", metrics.DEFAULT_PORT))
    if metrics_port:
        metrics.serve(settings.host, metrics_port)
    web.run_app(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        print=None,
        access_log=None,
        handle_signals=True,
    )
