"""Reading large JSON documents as a stream of events (ijson's yajl parser): what every streamed reader
shares, so that each treats yajl's gaps alike.

yajl refuses some JSON that Python's ``json`` writes and reads (a lone surrogate escape, ``NaN``;
with ``use_float``, integers past 64 bits), and silently reads an escaped high surrogate not followed
by a low one as another character (``c/\\ud800x`` became ``c/?x``: another file). Such a document
is read whole with ``json`` instead, as is one yajl refuses: a workload's answer if it holds any
escaped high surrogate (``HIGH_SURROGATE``), a node descriptor if it holds one without its low one,
either if it holds a byte yajl takes for whitespace (``CheckedReader`` finds them as they are read).
"""

from __future__ import annotations

import re
from typing import Protocol

import ijson

#: ijson's C parser (yajl 2), never its slower pure-Python one (which reads some invalid JSON).
YAJL = ijson.get_backend("yajl2_c")
#: Bytes yajl is given at a time. It rescans a string it has not finished on every read, so a huge
#: string took time in the square of its length over ijson's 64 KiB reads (49 s for 100 MB); and
#: ijson builds every event of a read before it hands on the first (~10 MB for 1 MiB of entries).
READ_BYTES = 1 << 20
#: An escaped high surrogate (``\\uD800``-``\\uDBFF``), even in a valid pair (see the module docstring).
HIGH_SURROGATE = re.compile(rb"\\u[dD][89abAB]")
#: An escaped high surrogate not followed by an escaped low one: yajl reads a valid pair as json
#: does (``json.dumps`` escapes every character past U+FFFF as one), a lone one as another character.
UNPAIRED_HIGH_SURROGATE = re.compile(rb"\\u[dD][89abAB][0-9a-fA-F]{2}(?!\\u[dD][c-fC-F][0-9a-fA-F]{2})")
#: Bytes valid JSON never holds unescaped, that yajl reads as whitespace (vertical tab, form feed).
NOT_JSON = (b"\x0b", b"\x0c")
#: The events that open and close a container.
OPENING = frozenset({"start_map", "start_array"})
CLOSING = frozenset({"end_map", "end_array"})


class Readable(Protocol):
    def read(self, n: int = -1, /) -> bytes: ...


class ReadWithJson(Exception):
    """The stream holds what yajl would not read as json does: read the document with ``json``."""


class CheckedReader:
    """A binary stream that raises ``ReadWithJson`` as soon as the bytes read so far hold a match of
    ``pattern`` (one split between two reads too), or a vertical tab or form feed (which yajl takes
    for whitespace, where json refuses them). ``tail``: how many bytes at the end of a read wait for
    the next one, at least one less than the most a match spans with its look-ahead. By default the
    pattern is ``UNPAIRED_HIGH_SURROGATE`` (12 bytes with its look-ahead; the tail kept is 12): a
    literal backslash before ``ud800`` in a name reads as one too, and that document is read by
    json, as is its due."""

    def __init__(
        self, source: Readable, pattern: re.Pattern[bytes] = UNPAIRED_HIGH_SURROGATE, tail: int = 12
    ) -> None:
        self._source = source
        self._pattern = pattern
        self._keep = tail
        self._tail = b""

    def read(self, n: int = -1) -> bytes:
        block = self._source.read(n)
        if any(c in block for c in NOT_JSON):
            raise ReadWithJson
        seen = self._tail + block
        checked = len(seen) if not block else max(0, len(seen) - self._keep)  # all of it at the end
        found = self._pattern.search(seen)
        if found is not None and found.start() < checked:
            raise ReadWithJson
        self._tail = seen[checked:]
        return block

    def finish(self) -> None:
        """Checks what the last read left unchecked (the parser may stop before reading the end)."""
        if self._pattern.search(self._tail):
            raise ReadWithJson


__all__ = [
    "CLOSING",
    "HIGH_SURROGATE",
    "NOT_JSON",
    "OPENING",
    "READ_BYTES",
    "UNPAIRED_HIGH_SURROGATE",
    "YAJL",
    "CheckedReader",
    "ReadWithJson",
    "Readable",
]
