"""Reading large JSON documents as a stream of events (ijson's yajl parser): what every streamed reader
shares, so that each treats yajl's gaps alike.

yajl refuses some JSON that Python's ``json`` writes and reads (a lone surrogate escape, ``NaN``;
with ``use_float``, integers past 64 bits), and silently reads an escaped high surrogate not followed
by a low one as another character (``c/\\ud800x`` became ``c/?x``: another file). A reader checks
for ``HIGH_SURROGATE`` and reads any such document whole with ``json`` instead, as it reads one
yajl refuses.
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
#: The events that open and close a container.
OPENING = frozenset({"start_map", "start_array"})
CLOSING = frozenset({"end_map", "end_array"})


class Readable(Protocol):
    def read(self, n: int = -1, /) -> bytes: ...


class HighSurrogateFound(Exception):
    """The stream holds an escaped high surrogate: read the document with ``json`` instead."""


class SurrogateCheckedReader:
    """A binary stream, read in ``READ_BYTES`` blocks, that raises ``HighSurrogateFound`` as soon as
    the bytes read so far hold an escaped high surrogate (one split between two reads too)."""

    _TAIL = 5  # the longest start of a match a read may end with (``\\u``, ``\\uD``, ...)

    def __init__(self, source: Readable) -> None:
        self._source = source
        self._tail = b""

    def read(self, n: int = -1) -> bytes:
        block = self._source.read(n)
        if HIGH_SURROGATE.search(self._tail + block):
            raise HighSurrogateFound
        self._tail = (self._tail + block)[-self._TAIL :]
        return block


__all__ = [
    "CLOSING",
    "HIGH_SURROGATE",
    "OPENING",
    "READ_BYTES",
    "YAJL",
    "HighSurrogateFound",
    "Readable",
    "SurrogateCheckedReader",
]
