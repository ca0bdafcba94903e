"""Client for the workload hook (see ``shardkeeper.api.hook`` for the contract)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import aiohttp
import ijson
from pydantic import BaseModel, TypeAdapter, ValidationError

from shardkeeper.api.hook import (
    HeldWrites,
    HookFile,
    HookPrepare,
    HookRelease,
    HookRestored,
    HookResume,
)
from shardkeeper.errors import ShardkeeperError
from shardkeeper.jsonstream import HIGH_SURROGATE, READ_BYTES, YAJL

#: The deepest a workload's answer may nest (a listed file is three levels down).
MAX_DEPTH = 64
#: The hold's fields by either name (camelCase, or snake_case: ``populate_by_name``).
_HELD_KEYS = frozenset(
    key for name, field in HeldWrites.model_fields.items() for key in (name, field.alias or name)
)
_HOOK_FILE: TypeAdapter[HookFile] = TypeAdapter(HookFile)


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
    ) -> Listing:
        """The file list (no files only if ``defer_listing`` was asked and the workload deferred it)
        and, if the workload says, when it held writes. Raises ``HookError``."""
        request = HookPrepare(
            id=op_id,
            collections=collections,
            hold_timeout_seconds=hold_timeout,
            resume_writes_after_listing=resume_writes,
            defer_listing=defer_listing,
        )
        raw = await self._post("prepare", request)
        listed = await asyncio.to_thread(Listing.parse, "prepare", raw)
        if listed.count is None and not defer_listing:
            raise HookError("workload hook prepare answered no files")
        return listed

    async def resume(self, op_id: str) -> Listing:
        """Resumes writes after a deferred listing (compaction stays paused until ``release``): the
        files as they were at the hold, and when writes were held. Raises ``HookError``."""
        raw = await self._post("resume", HookResume(id=op_id))
        listed = await asyncio.to_thread(Listing.parse, "resume", raw)
        if listed.count is None:
            raise HookError("workload hook resume answered no files")
        return listed

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


class Listing:
    """A workload's answer to prepare or resume (``api.hook.HookFileList``), read from its bytes in
    two passes (ijson's yajl parser): ``parse`` checks the whole answer and reads when writes were
    held and how many files it lists; ``files`` reads the files, one validated ``HookFile`` at a
    time, so a million listed files never exist as objects at once (``benchmarks/README.md``, goal
    4). An answer yajl refuses is read whole by ``json``, as before (see ``parse``)."""

    def __init__(
        self,
        name: str,
        held: HeldWrites,
        count: int | None,
        *,
        raw: bytes = b"",
        items: list[Any] | None = None,
    ) -> None:
        self._name = name
        self._raw, self._items = raw, items
        self._read = False
        self.held = held
        """When the workload held writes, as it says (every field None if it says nothing)."""
        self.count = count
        """How many files it lists; None if the answer has no ``files`` (a deferred listing)."""

    @classmethod
    def parse(cls, name: str, raw: bytes) -> Listing:
        """The answer to ``name`` (prepare or resume), checked whole. Raises ``HookError``: not
        JSON, not an object, nested deeper than ``MAX_DEPTH``, ``files`` neither a list nor null (or
        given twice), a top-level field named "" or "files.…" (yajl's stream would read it as the
        files' own), or a field of the hold invalid. Blocking (a million files: ~1 s): call it in a
        thread.

        yajl refuses what Python's ``json`` writes and reads: a name that is not UTF-8 as a lone
        surrogate escape (``"\\udcff"``, PEP 383: the agent's paths carry the same surrogates),
        integers past 64 bits, ``NaN``; and it reads an escaped high surrogate as another character.
        Such an answer (any with an escaped high surrogate, even in a valid pair: ``json.dumps``
        escapes characters past U+FFFF so) is read whole by ``json`` instead, as every answer was
        before (~0.9 KB per listed file while it is staged)."""
        if not raw.strip():
            return cls(name, HeldWrites(), None)
        try:
            if HIGH_SURROGATE.search(raw):  # yajl would read them as other characters
                return cls._read_whole(name, raw)
            try:
                held, count = _scan(raw)
            except (ijson.JSONError, UnicodeDecodeError):
                return cls._read_whole(name, raw)
        except ValueError as exc:  # not an answer as the contract has it, or a ValidationError
            raise HookError(f"workload hook {name} answered an invalid file list: {exc}") from None
        return cls(name, held, count, raw=raw)

    @classmethod
    def _read_whole(cls, name: str, raw: bytes) -> Listing:
        try:
            data = json.loads(raw)
        except (ValueError, RecursionError) as exc:  # RecursionError: nested too deep for json
            raise ValueError(str(exc)) from None
        if not isinstance(data, dict):
            raise ValueError("the answer is not a JSON object")
        files = data.get("files")
        if files is not None and not isinstance(files, list):
            raise ValueError("files: not a list")
        held = HeldWrites.model_validate({key: data[key] for key in _HELD_KEYS if key in data})
        return cls(name, held, None if files is None else len(files), items=files)

    def files(self) -> Iterator[HookFile]:
        """The listed files, in order; once only: the answer is dropped as they are read (read
        again, raises ``RuntimeError``). Raises ``HookError`` naming the first invalid one
        (``files[i]``)."""
        if self._read:
            raise RuntimeError(f"the files the workload hook's {self._name} listed were read already")
        self._read = True
        raw, items = self._raw, self._items
        self._raw, self._items = b"", None
        if self.count is None:
            return
        source = (
            YAJL.items(raw, "files.item", use_float=True, buf_size=READ_BYTES)
            if items is None
            else _popped(items)
        )
        del raw, items
        read = 0
        for item in source:
            try:
                yield _HOOK_FILE.validate_python(item)
            except ValidationError as exc:
                raise HookError(
                    f"workload hook {self._name} listed an invalid file (files[{read}]): {exc}"
                ) from None
            read += 1
        if read != self.count:  # the two passes disagree: never staged as if complete
            raise HookError(f"workload hook {self._name} listed {self.count} files, then {read}")


def _popped(items: list[Any]) -> Iterator[Any]:
    """``items`` in order, each dropped from the list as it is taken."""
    items.reverse()
    while items:
        yield items.pop()


def _scan(raw: bytes) -> tuple[HeldWrites, int | None]:
    """The first pass of ``Listing.parse``: every event of the answer, by depth (ijson's prefixed
    events cost memory in the square of the depth: a 200 KB answer nested 100,000 deep took 24 GB),
    keeping the hold's fields and counting the files. Raises ``ijson.JSONError``,
    ``UnicodeDecodeError``, ``ValidationError`` or ``ValueError``."""
    held: dict[str, Any] = {}
    count: int | None = None
    files_given = False
    key = ""  # the top-level field whose value is being read
    depth = 0  # of the containers the event is in
    for event, value in YAJL.basic_parse(raw, use_float=True, buf_size=READ_BYTES):
        if event in ("end_map", "end_array"):
            depth -= 1
            continue
        if depth == 0 and event != "start_map":
            raise ValueError("the answer is not a JSON object")
        if event == "map_key":
            if depth == 1:
                key = value
                if key == "" or key.startswith("files."):  # ijson's prefix of the files' items
                    raise ValueError(f'a field named "{key}" reads as the listed files\' own')
                if key == "files" and files_given:
                    raise ValueError("files: given twice")
                files_given = files_given or key == "files"
            continue
        if depth == 1 and key == "files":
            if event == "start_array":
                count = 0
            elif event != "null":
                raise ValueError("files: not a list")
        elif depth == 1 and key in _HELD_KEYS:  # a list or object is refused as such
            held[key] = {} if event == "start_map" else [] if event == "start_array" else value
        elif depth == 2 and key == "files" and count is not None:
            count += 1
        if event in ("start_map", "start_array"):
            depth += 1
            if depth > MAX_DEPTH:
                raise ValueError(f"nested deeper than {MAX_DEPTH} levels")
    return HeldWrites.model_validate(held), count
