"""Client for the workload hook (see ``shardkeeper.api.hook`` for the contract)."""

from __future__ import annotations

import aiohttp
from pydantic import BaseModel, ValidationError

from shardkeeper.api.hook import HeldWrites, HookFileList, HookPrepare, HookRelease, HookRestored
from shardkeeper.errors import ShardkeeperError


class HookError(ShardkeeperError):
    """The workload did not do what the hook asked."""


class WorkloadHook:
    def __init__(self, base_url: str, *, timeout: float) -> None:
        self._base = base_url.rstrip("/")
        self._timeout = aiohttp.ClientTimeout(total=timeout)

    async def _post(self, name: str, body: BaseModel) -> dict[str, object]:
        url = f"{self._base}/{name}"
        try:
            async with (
                aiohttp.ClientSession(timeout=self._timeout) as session,
                session.post(url, json=body.model_dump(mode="json", by_alias=True)) as resp,
            ):
                if resp.status >= 300:
                    text = (await resp.text())[:500]
                    raise HookError(f"workload hook {name} answered {resp.status}: {text}")
                if resp.content_type == "application/json":
                    data: dict[str, object] = await resp.json()
                    return data
                return {}
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise HookError(f"workload hook {name} at {url} failed: {exc!r}") from exc

    async def prepare(
        self, op_id: str, collections: list[str], *, hold_timeout: float, resume_writes: bool = False
    ) -> HookFileList:
        """The file list and, if the workload says, when it held writes. Raises ``HookError``."""
        request = HookPrepare(
            id=op_id,
            collections=collections,
            hold_timeout_seconds=hold_timeout,
            resume_writes_after_listing=resume_writes,
        )
        data = await self._post("prepare", request)
        try:
            return HookFileList.model_validate(data)
        except ValidationError as exc:
            raise HookError(f"workload hook prepare answered an invalid file list: {exc}") from exc

    async def release(self, op_id: str) -> HeldWrites:
        """Ends the hold; what the workload says about it (all fields None if it says nothing)."""
        data = await self._post("release", HookRelease(id=op_id))
        try:
            return HeldWrites.model_validate(data) if data else HeldWrites()
        except ValidationError as exc:
            raise HookError(f"workload hook release answered an invalid body: {exc}") from exc

    async def restored(self, op_id: str, collections: list[str]) -> None:
        await self._post("restored", HookRestored(id=op_id, collections=collections))
