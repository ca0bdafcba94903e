"""Client for the workload hook (see ``shardkeeper.api.hook`` for the contract)."""

from __future__ import annotations

import json

import aiohttp
from pydantic import BaseModel, ValidationError

from shardkeeper.api.hook import (
    HeldWrites,
    HookFileList,
    HookPrepare,
    HookRelease,
    HookRestored,
    HookResume,
)
from shardkeeper.errors import ShardkeeperError


class HookError(ShardkeeperError):
    """The workload did not do what the hook asked."""


class WorkloadHook:
    def __init__(self, base_url: str, *, timeout: float) -> None:
        self._base = base_url.rstrip("/")
        self._timeout = aiohttp.ClientTimeout(total=timeout)

    async def _post(self, name: str, body: BaseModel) -> bytes:
        """The answer's body if it is JSON, else b"" (checked by the caller). Raises ``HookError``."""
        url = f"{self._base}/{name}"
        try:
            async with (
                aiohttp.ClientSession(timeout=self._timeout) as session,
                session.post(url, json=body.model_dump(mode="json", by_alias=True)) as resp,
            ):
                if resp.status >= 300:
                    text = (await resp.text(errors="replace"))[:500]
                    raise HookError(f"workload hook {name} answered {resp.status}: {text}")
                return await resp.read() if resp.content_type == "application/json" else b""
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise HookError(f"workload hook {name} at {url} failed: {exc!r}") from exc

    async def prepare(
        self,
        op_id: str,
        collections: list[str],
        *,
        hold_timeout: float,
        resume_writes: bool = False,
        defer_listing: bool = False,
    ) -> HookFileList:
        """The file list (None only if ``defer_listing`` was asked and the workload deferred it) and,
        if the workload says, when it held writes. Raises ``HookError``."""
        request = HookPrepare(
            id=op_id,
            collections=collections,
            hold_timeout_seconds=hold_timeout,
            resume_writes_after_listing=resume_writes,
            defer_listing=defer_listing,
        )
        listed = self._file_list("prepare", await self._post("prepare", request))
        if listed.files is None and not defer_listing:
            raise HookError("workload hook prepare answered no files")
        return listed

    async def resume(self, op_id: str) -> HookFileList:
        """Resumes writes after a deferred listing (compaction stays paused until ``release``): the
        files as they were at the hold, and when writes were held. Raises ``HookError``."""
        listed = self._file_list("resume", await self._post("resume", HookResume(id=op_id)))
        if listed.files is None:
            raise HookError("workload hook resume answered no files")
        return listed

    @staticmethod
    def _file_list(name: str, raw: bytes) -> HookFileList:
        """Parsed straight from the bytes: a million listed files never exist as dicts too. JSON the
        fast parser refuses is parsed as ``json`` does: a workload written in Python lists a name
        that is not UTF-8 as a lone surrogate escape (``"\\udcff"``), which ``json`` accepts (PEP 383:
        the agent's paths carry the same surrogates)."""
        try:
            try:
                return HookFileList.model_validate_json(raw if raw.strip() else b"{}")
            except ValidationError as exc:
                if exc.errors()[0]["type"] != "json_invalid":
                    raise
            return HookFileList.model_validate(json.loads(raw))
        except ValueError as exc:  # not JSON, or a ValidationError
            raise HookError(f"workload hook {name} answered an invalid file list: {exc}") from exc

    async def release(self, op_id: str) -> HeldWrites:
        """Ends the hold; what the workload says about it (all fields None if it says nothing)."""
        raw = await self._post("release", HookRelease(id=op_id))
        try:
            data = json.loads(raw) if raw.strip() else None
            return HeldWrites.model_validate(data) if data else HeldWrites()
        except ValueError as exc:  # not JSON, or a ValidationError
            raise HookError(f"workload hook release answered an invalid body: {exc}") from exc

    async def restored(self, op_id: str, collections: list[str]) -> None:
        await self._post("restored", HookRestored(id=op_id, collections=collections))
