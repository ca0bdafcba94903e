"""Writing a chunk's tar stream: byte for byte what ``tarfile`` writes, faster for plain files.

``TarWriter`` writes what CPython's ``tarfile.TarFile(mode="w", format=PAX_FORMAT,
encoding="utf-8", errors="surrogateescape")`` writes for the same ``TarInfo`` members and data (a
test compares the two on the running Python; where another version differs, any tar reader still
reads either): each member's header, its data padded to 512 bytes, and at the end two zero blocks
and zeros up to a record of 10,240 bytes. Every header is ``TarInfo.tobuf``'s, except the one
header most members get: a regular file whose ustar header needs no PAX record (an ASCII name of
at most 100 characters, no PAX records of its own, uid and gid below 8**7, size and mtime from 0
to below 8**11, no user or group name). That one is formatted here in one step
(``ustar_file_header``); ``tarfile`` built it field by field, with a copy of the member and a PAX
check of every field. The chunk of the benchmarks' 5,000 small files packed in 0.33-0.39 s this
way, in 0.45-0.50 s through ``tarfile`` (``benchmarks/README.md``, 2026-12-02).

Rules from POSIX.1-1988 (ustar: octal fields, NUL-terminated; the checksum is the sum of the
header's bytes with its own field read as eight spaces, written as six octal digits, a NUL and a
space) and CPython's ``tarfile`` (the record size, the zero blocks, the empty device fields).
"""

from __future__ import annotations

import tarfile
from collections.abc import Callable

BLOCK = 512
RECORD = 20 * BLOCK
_LIMIT_8 = 8**7  # an 8-byte octal field: 7 digits
_LIMIT_12 = 8**11  # a 12-byte octal field: 11 digits
# Everything after the checksum field of a regular file's ustar header without names: the type,
# an empty link name, the magic and version ("ustar\0" "00"), empty user and group names and
# device numbers, an empty prefix, the block's padding.
_FILE_TAIL = tarfile.REGTYPE + bytes(100) + tarfile.POSIX_MAGIC + bytes(32 + 32 + 8 + 8 + 155 + 12)
_TAIL_SUM = sum(_FILE_TAIL) + 8 * ord(" ")  # with the checksum field as eight spaces


def ustar_file_header(name: str, mode: int, uid: int, gid: int, size: int, mtime: int) -> bytes | None:
    """The 512-byte ustar header ``tarfile`` writes for a regular file with no user or group
    name, or None if that header needs a PAX record (see the module docstring) or ``name`` is
    not ASCII: then ``TarInfo.tobuf`` writes it."""
    if (
        len(name) > 100
        or not name.isascii()
        or not (0 <= uid < _LIMIT_8 and 0 <= gid < _LIMIT_8)
        or not (0 <= size < _LIMIT_12 and 0 <= mtime < _LIMIT_12)
    ):
        return None
    head = b"%s%07o\0%07o\0%07o\0%011o\0%011o\0" % (
        name.encode("ascii").ljust(100, b"\0"),
        mode & 0o7777,
        uid,
        gid,
        size,
        mtime,
    )
    return head + b"%06o\0 " % (sum(head) + _TAIL_SUM) + _FILE_TAIL


class TarWriter:
    """Writes members to ``write`` (see the module docstring): ``add`` a member's header, then
    its data with ``data`` (exactly ``info.size`` bytes, for a regular file), ``end_member``
    once it is all written; ``close`` at the end. Raises ``ValueError`` if a member's data is
    not its declared size."""

    def __init__(self, write: Callable[[bytes | memoryview], object]) -> None:
        self._write = write
        self._offset = 0
        self._left = 0
        self._padding = 0

    def add(self, info: tarfile.TarInfo) -> None:
        header = None
        mtime = info.mtime  # a float needs a PAX record
        plain = info.type == tarfile.REGTYPE and not (info.pax_headers or info.uname or info.gname)
        if plain and isinstance(mtime, int):
            header = ustar_file_header(info.name, info.mode, info.uid, info.gid, info.size, mtime)
        if header is None:
            header = info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")
        self._write(header)
        self._offset += len(header)
        self._left = info.size if info.isreg() else 0
        self._padding = -self._left % BLOCK

    def data(self, block: bytes | memoryview) -> None:
        if len(block) > self._left:
            raise ValueError(f"{len(block) - self._left} bytes more than the member's size")
        self._write(block)
        self._left -= len(block)
        self._offset += len(block)

    def end_member(self) -> None:
        if self._left:
            raise ValueError(f"{self._left} bytes of the member's data missing")
        if self._padding:
            self._write(bytes(self._padding))
            self._offset += self._padding
            self._padding = 0

    def close(self) -> None:
        end = 2 * BLOCK
        end += -(self._offset + end) % RECORD
        self._write(bytes(end))
        self._offset += end


__all__ = ["TarWriter", "ustar_file_header"]
