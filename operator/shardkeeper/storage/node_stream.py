"""A node descriptor read as a stream: its head as a model, its entries one at a time.

A node descriptor lists every entry of its node: ~250 bytes of JSON each, so a million small files
make a 250 MB object, and ~1.5 GB as one model. ``read_node`` reads it in one pass of yajl's events
from the backend's stream, in blocks of ``jsonstream.READ_BYTES``: the head (every field but the
entries, chunks included) is validated as a ``NodeDescriptor`` whose collections list no entries,
and each entry is validated on its own and handed to ``entries`` (or skipped unread when there is
none: the operator needs the head only). Memory: one block's events (~10 MB) and one entry.

It reads what ``BackupRepository`` writes: ``formatVersion`` before ``collections``. A descriptor
that does not (format 1, or one written by hand in another order), or that yajl cannot read exactly
(``jsonstream``), raises ``ReadWhole``: the caller reads it whole, by the repository's one policy.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import ijson
from pydantic import TypeAdapter, ValidationError

from shardkeeper.api.descriptors import Entry, NodeDescriptor, Versioned
from shardkeeper.errors import CorruptDescriptor
from shardkeeper.jsonstream import (
    CLOSING,
    OPENING,
    READ_BYTES,
    YAJL,
    CheckedReader,
    Readable,
    ReadWithJson,
)

#: The deepest a value of the head or an entry may nest (an entry's sparse map is two levels down).
MAX_DEPTH = 32
_VERSION_KEYS = frozenset({"formatVersion", "format_version"})
_ENTRY: TypeAdapter[Entry] = TypeAdapter(Entry)

Events = Iterator[tuple[str, Any]]
EntrySink = Callable[[int, str | None, Entry], None]
"""Called with each entry: the collection's position in ``collections``, its name if it came before
its entries (it does in what the repository writes), the entry. It may raise ``ValueError`` for an
entry it cannot hold: the descriptor is then corrupt, at that entry."""


class ReadWhole(Exception):
    """The descriptor cannot be streamed exactly: read it whole instead (see the module docstring)."""


class _Corrupt(ValueError):
    """A problem found while streaming, with where it is (``collections.0.entries.5``)."""


def read_node(source: Readable, where: str, entries: EntrySink | None) -> NodeDescriptor:
    """The descriptor in ``source``, its collections without entries; each entry, validated, handed
    to ``entries`` in order (none: entries are skipped, not validated). ``where``: the object's
    location, for messages. Raises ``CorruptDescriptor`` (naming the field, as a whole read does),
    ``UnknownFormatVersion``, ``ReadWhole``, and what ``source`` raises. Blocking: call it in a
    thread."""
    # use_float: numbers as json reads them. An integer past 64 bits (an inode number may pass
    # 2**63) is a yajl error, so read whole; without it yajl's numbers come as text, which ijson
    # 3.6 turns into a crash past 4,300 digits, and into exact Decimals json would not read alike.
    reader = CheckedReader(source)
    events: Events = YAJL.basic_parse(reader, use_float=True, buf_size=READ_BYTES)
    try:
        head = _head(events, entries)
        for _ in events:  # yajl refuses anything after the document; this reads to its end
            raise _Corrupt("content after the descriptor")
        reader.finish()
    except ReadWithJson:
        raise ReadWhole from None
    except (ijson.JSONError, UnicodeDecodeError) as exc:
        # Not JSON (or JSON yajl refuses, a lone surrogate escape): json judges, by the one policy.
        raise ReadWhole from exc
    except StopIteration:
        raise CorruptDescriptor(f"{where} is corrupt: cut short") from None
    except _Corrupt as exc:
        raise CorruptDescriptor(f"{where} is corrupt: {exc}") from None
    try:
        return NodeDescriptor.model_validate(head)
    except ValidationError as exc:
        raise CorruptDescriptor(f"{where} is corrupt: {first_error(exc)}") from None


def _head(events: Events, entries: EntrySink | None) -> dict[str, Any]:
    event, _ = next(events, ("", None))
    if event != "start_map":
        raise ReadWhole  # not a descriptor: refused by the one policy for what is not
    head: dict[str, Any] = {}
    version: int | None = None
    for event, key in events:
        if event == "end_map":
            return head
        if key in head or (key in _VERSION_KEYS and _VERSION_KEYS & head.keys()):
            raise _Corrupt(f"{key}: given twice")
        if key == "collections":
            if version is None or version == 1:
                raise ReadWhole  # format 1 (or a version given after its collections)
            head[key] = _collections(events, entries)
        else:
            head[key] = _value(events, key)
            if key in _VERSION_KEYS:
                try:
                    probe = Versioned.model_validate({"formatVersion": head[key]})
                except ValidationError as exc:
                    raise _Corrupt(first_error(exc)) from None
                probe.check_version()
                version = probe.format_version
    raise _Corrupt("cut short")


def _collections(events: Events, entries: EntrySink | None) -> Any:
    event, value = next(events)
    if event != "start_array":
        return _built(events, event, value, "collections")  # the model refuses it, naming the field
    out: list[Any] = []
    for event, value in events:
        if event == "end_array":
            return out
        where = f"collections.{len(out)}"
        if event != "start_map":
            out.append(_built(events, event, value, where))
            continue
        col: dict[str, Any] = {}
        for event, key in events:
            if event == "end_map":
                break
            if key in col:
                raise _Corrupt(f"{where}.{key}: given twice")
            if key == "entries":
                name = col.get("name") if isinstance(col.get("name"), str) else None
                col[key] = _entries(events, entries, len(out), name, f"{where}.entries")
            else:
                col[key] = _value(events, f"{where}.{key}")
        out.append(col)
    raise _Corrupt("cut short")


def _entries(events: Events, sink: EntrySink | None, index: int, name: str | None, where: str) -> Any:
    event, value = next(events)
    if event != "start_array":
        return _built(events, event, value, where)
    for read, (event, value) in enumerate(events):
        if event == "end_array":
            return []  # the model's collection lists none: they went to the sink
        if sink is None:
            _skipped(events, event)
            continue
        item = _built(events, event, value, f"{where}.{read}")
        try:
            entry = _ENTRY.validate_python(item)
        except ValidationError as exc:
            raise _Corrupt(first_error(exc, at=f"{where}.{read}")) from None
        try:
            sink(index, name, entry)
        except ValueError as exc:  # a value the sink cannot hold (``archive.described``)
            raise _Corrupt(f"{where}.{read}: {exc}") from None
    raise _Corrupt("cut short")


def _value(events: Events, where: str) -> Any:
    event, value = next(events)
    return _built(events, event, value, where)


def _built(events: Events, event: str, value: Any, where: str, depth: int = 1) -> Any:
    """The value that starts with ``event``, built as ``json`` would (a key given twice: the last)."""
    if event == "start_map":
        if depth > MAX_DEPTH:
            raise _Corrupt(f"{where}: nested deeper than {MAX_DEPTH} levels")
        out: dict[str, Any] = {}
        for event, key in events:
            if event == "end_map":
                return out
            event, value = next(events)
            out[key] = _built(events, event, value, where, depth + 1) if event in OPENING else value
    elif event == "start_array":
        if depth > MAX_DEPTH:
            raise _Corrupt(f"{where}: nested deeper than {MAX_DEPTH} levels")
        items: list[Any] = []
        for event, value in events:
            if event == "end_array":
                return items
            items.append(_built(events, event, value, where, depth + 1) if event in OPENING else value)
    else:
        return value
    raise _Corrupt("cut short")


def _skipped(events: Events, event: str) -> None:
    depth = 1 if event in OPENING else 0
    while depth:
        event, _ = next(events)
        if event in OPENING:
            depth += 1
        elif event in CLOSING:
            depth -= 1


def first_error(exc: ValidationError, *, at: str = "") -> str:
    """The first problem of ``exc`` as ``where: message`` (and how many more there are); ``where`` is
    its location in the model, after ``at`` (the model's location in the document)."""
    errors = exc.errors()
    if not errors:
        return str(exc)
    first = errors[0]
    at = ".".join([at] * bool(at) + [str(p) for p in first.get("loc", ())])
    more = f" (and {len(errors) - 1} more problems)" if len(errors) > 1 else ""
    return f"{at + ': ' if at else ''}{first.get('msg', '')}{more}"


__all__ = ["MAX_DEPTH", "EntrySink", "ReadWhole", "first_error", "read_node"]
