"""Client for the workload hook (see ``shardkeeper.api.hook`` for the contract)."""

from __future__ import annotations

import asyncio
import io
import json
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

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
from shardkeeper.jsonstream import HIGH_SURROGATE, READ_BYTES, YAJL, CheckedReader, Readable, ReadWithJson

#: The deepest a workload's answer may nest (a listed file is three levels down).
MAX_DEPTH = 64
#: The most bytes a file list may take (~50 bytes per listed file: a million files take ~50 MB).
#: It is kept on the data volume while it is read (``WorkloadHook``'s ``spool_dir``).
MAX_LISTING_BYTES = 1 << 30
#: The hold's fields by either name (camelCase, or snake_case: ``populate_by_name``).
_HELD_KEYS = frozenset(
    key for name, field in HeldWrites.model_fields.items() for key in (name, field.alias or name)
)
_HOOK_FILE: TypeAdapter[HookFile] = TypeAdapter(HookFile)
#: The bytes ``HIGH_SURROGATE`` matches (one split between two reads is found too).
_ESCAPE = 4


class HookError(ShardkeeperError):
    """The workload did not do what the hook asked."""


class WorkloadHook:
    """``spool_dir``: where a file list is kept while it is read (an unnamed file, gone with the
    process), not in memory: a million listed files are ~50 MB of JSON. None: the system's temporary
    directory."""

    def __init__(self, base_url: str, *, timeout: float, spool_dir: Path | None = None) -> None:
        self._base = base_url.rstrip("/")
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._spool_dir = spool_dir

    async def _post(self, name: str, body: BaseModel, into: IO[bytes] | None = None) -> bytes:
        """The answer's body if it is JSON, else b"" (checked by the caller); with ``into``, the body
        is written there instead (nothing if it is not JSON) and b"" is returned. Raises
        ``HookError``."""
        url = f"{self._base}/{name}"
        try:
            async with (
                aiohttp.ClientSession(timeout=self._timeout) as session,
                session.post(url, json=body.model_dump(mode="json", by_alias=True)) as resp,
            ):
                if resp.status >= 300:
                    text = (await resp.text(errors="replace"))[:500]
                    raise HookError(f"workload hook {name} answered {resp.status}: {text}")
                if resp.content_type != "application/json":
                    return b""
                if into is None:
                    return await resp.read()
                written = 0
                async for block in resp.content.iter_chunked(READ_BYTES):
                    written += len(block)
                    if written > MAX_LISTING_BYTES:
                        raise HookError(
                            f"workload hook {name} answered more than {MAX_LISTING_BYTES} bytes "
                            f"(the most a file list may take)"
                        )
                    await asyncio.to_thread(into.write, block)
                return b""
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise HookError(f"workload hook {name} at {url} failed: {exc!r}") from exc

    async def _listing(self, name: str, body: BaseModel) -> Listing:
        """The answer to ``name`` (prepare or resume), spooled to a file, checked (``Listing.parse``)."""
        try:
            if self._spool_dir is not None:
                await asyncio.to_thread(self._spool_dir.mkdir, parents=True, exist_ok=True)
            spool_dir = self._spool_dir
            # Closed by the Listing that reads it, or below on failure: not one block's context.
            spool = await asyncio.to_thread(lambda: tempfile.TemporaryFile("w+b", dir=spool_dir))  # noqa: SIM115
        except OSError as exc:
            raise HookError(f"workload hook {name}: no file to keep its answer in: {exc}") from None
        try:
            await self._post(name, body, into=spool)
            await asyncio.to_thread(spool.flush)
        except OSError as exc:
            spool.close()
            raise HookError(f"workload hook {name}: its answer could not be kept: {exc}") from None
        except BaseException:
            spool.close()
            raise
        return await asyncio.to_thread(Listing.parse, name, spool)

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
        listed = await self._listing("prepare", request)
        if listed.count is None and not defer_listing:
            raise HookError("workload hook prepare answered no files")
        return listed

    async def resume(self, op_id: str) -> Listing:
        """Resumes writes after a deferred listing (compaction stays paused until ``release``): the
        files as they were at the hold, and when writes were held. Raises ``HookError``."""
        listed = await self._listing("resume", HookResume(id=op_id))
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
        source: IO[bytes] | None = None,
        items: list[Any] | None = None,
    ) -> None:
        self._name = name
        self._source, self._items = source, items
        self._read = False
        self.held = held
        """When the workload held writes, as it says (every field None if it says nothing)."""
        self.count = count
        """How many files it lists; None if the answer has no ``files`` (a deferred listing)."""

    @classmethod
    def parse(cls, name: str, answer: bytes | IO[bytes]) -> Listing:
        """The answer to ``name`` (prepare or resume: its bytes, or a file holding them from its
        start, which the listing then owns and closes), checked whole. Raises ``HookError``: not
        JSON, not an object, nested deeper than ``MAX_DEPTH``, ``files`` neither a list nor null (or
        given twice), a top-level field named "" or "files.…" (yajl's stream would read it as the
        files' own), or a field of the hold invalid. Blocking (a million files: ~1 s): call it in a
        thread.

        yajl refuses what Python's ``json`` writes and reads: a name that is not UTF-8 as a lone
        surrogate escape (``"\\udcff"``, PEP 383: the agent's paths carry the same surrogates),
        integers past 64 bits, ``NaN``; and it reads an escaped high surrogate as another character.
        Such an answer (any with an escaped high surrogate, even in a valid pair: ``json.dumps``
        escapes characters past U+FFFF so), or with a vertical tab or form feed (whitespace to yajl,
        refused by json), is read whole by ``json`` instead, as every answer was before (~0.9 KB per
        listed file while it is staged)."""
        source = io.BytesIO(answer) if isinstance(answer, bytes) else answer
        try:
            try:
                source.seek(0)
                checked = CheckedReader(source, HIGH_SURROGATE, _ESCAPE - 1)
                try:
                    held, count = _scan(checked)  # reads to the end: every byte is checked
                except (ReadWithJson, ijson.JSONError, UnicodeDecodeError):
                    # Nothing but whitespace (a vertical tab or form feed alone too): no answer.
                    # Otherwise what yajl refuses, or would read as other characters: json judges.
                    if _blank(source):
                        source.close()
                        return cls(name, HeldWrites(), None)
                    return cls._read_whole(name, source)
                if count is None:  # no files to read: nothing to keep the answer for
                    source.close()
                    return cls(name, held, None)
            except ValueError as exc:  # not an answer as the contract has it, or a ValidationError
                raise HookError(f"workload hook {name} answered an invalid file list: {exc}") from None
        except BaseException:
            source.close()
            raise
        return cls(name, held, count, source=source)

    @classmethod
    def _read_whole(cls, name: str, source: IO[bytes]) -> Listing:
        """The answer read by ``json``, held to ``_scan``'s rules (so that whether an answer is
        refused never depends on where in it yajl gave up)."""
        source.seek(0)
        repeated: set[str] = set()  # the keys given twice in the last object read: the answer

        def pairs_to_dict(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
            obj = dict(pairs)
            repeated.clear()
            if len(obj) != len(pairs):
                seen: set[str] = set()
                for key, _ in pairs:
                    if key in seen:
                        repeated.add(key)
                    seen.add(key)
            return obj

        try:
            with source:
                data = json.loads(source.read(), object_pairs_hook=pairs_to_dict)
        except (ValueError, RecursionError) as exc:  # RecursionError: nested too deep for json
            raise ValueError(str(exc)) from None
        if not isinstance(data, dict):
            raise ValueError("the answer is not a JSON object")
        for key in data:
            if key == "" or key.startswith("files."):
                raise ValueError(f'a field named "{key}" reads as the listed files\' own')
        if "files" in repeated:
            raise ValueError("files: given twice")
        _check_depth(data)
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
        spooled, items = self._source, self._items
        self._source, self._items = None, None
        if self.count is None:
            return
        if spooled is not None:
            with spooled:
                spooled.seek(0)
                yield from self._validated(
                    YAJL.items(spooled, "files.item", use_float=True, buf_size=READ_BYTES)
                )
        else:
            assert items is not None
            yield from self._validated(_popped(items))

    def _validated(self, source: Iterator[Any]) -> Iterator[HookFile]:
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


def _check_depth(answer: dict[str, Any]) -> None:
    """Raises ``ValueError`` if ``answer`` nests deeper than ``MAX_DEPTH`` containers (itself the
    first), as ``_scan`` counts them."""
    pending: list[tuple[Any, int]] = [(answer, 1)]
    while pending:
        value, depth = pending.pop()
        if depth > MAX_DEPTH:
            raise ValueError(f"nested deeper than {MAX_DEPTH} levels")
        children = value.values() if isinstance(value, dict) else value
        pending.extend((child, depth + 1) for child in children if isinstance(child, dict | list))


def _blank(source: IO[bytes]) -> bool:
    """Whether ``source`` holds only whitespace (vertical tab and form feed too), read from its start
    in blocks."""
    source.seek(0)
    while block := source.read(READ_BYTES):
        if block.strip():
            return False
    return True


def _scan(source: Readable) -> tuple[HeldWrites, int | None]:
    """The first pass of ``Listing.parse``: every event of the answer, by depth (ijson's prefixed
    events cost memory in the square of the depth: a 200 KB answer nested 100,000 deep took 24 GB),
    keeping the hold's fields and counting the files. Raises ``ReadWithJson`` (``CheckedReader``),
    ``ijson.JSONError``, ``UnicodeDecodeError``, ``ValidationError`` or ``ValueError``."""
    held: dict[str, Any] = {}
    count: int | None = None
    files_given = False
    key = ""  # the top-level field whose value is being read
    depth = 0  # of the containers the event is in
    for event, value in YAJL.basic_parse(source, use_float=True, buf_size=READ_BYTES):
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
