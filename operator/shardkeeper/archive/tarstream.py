"""Reading tar member headers from an untrusted byte stream, and the few headers we write by hand.

The reader is deliberately small: ustar headers (parsed and checksummed by ``tarfile.TarInfo``),
POSIX.1-2001 (PAX) extended headers, GNU long names and long links, and GNU sparse files in the PAX
format 1.0 (what ``tar --sparse --format=pax`` writes). It never trusts a length: every size is
bounded and checked against what is left, so any byte sequence either yields members or raises
``IntegrityError`` (or ``UnsafeArchiveEntry`` for a member type that is never restored), in time
linear in the input and memory bounded by ``MAX_EXTENDED_HEADER``.

We keep our own instead of ``tarfile.open(mode="r|")``, whose stream mode copies every block twice;
``benchmarks/README.md`` ("Restore: the tar reader") has the A/B row.
"""

from __future__ import annotations

import re
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

from shardkeeper.errors import IntegrityError, UnsafeArchiveEntry

BLOCK = 512
#: The largest PAX extended header or GNU long name accepted, in bytes.
MAX_EXTENDED_HEADER = 1 << 20
#: The most data segments a sparse member may declare.
MAX_SPARSE_SEGMENTS = 1 << 16
#: The largest member size accepted, in bytes (2**62: far beyond any file, safely an int64).
MAX_SIZE = 1 << 62

REGULAR = frozenset({tarfile.REGTYPE, tarfile.AREGTYPE, tarfile.CONTTYPE})
_NUMBER = re.compile(rb"^[0-9]{1,20}$")
_TIME = re.compile(rb"^(-?)([0-9]{1,20})(?:\.([0-9]{0,30}))?$")
_TYPE_NAMES = {
    tarfile.CHRTYPE: "character device",
    tarfile.BLKTYPE: "block device",
    tarfile.FIFOTYPE: "FIFO",
    tarfile.GNUTYPE_SPARSE: "old GNU sparse file",
}


class Source(Protocol):
    def read(self, n: int = -1, /) -> bytes: ...


@dataclass
class Member:
    name: str
    type: bytes
    size: int
    """Bytes of the member's data area in the stream (a sparse member's map included)."""
    mode: int
    uid: int
    gid: int
    mtime_ns: int
    linkname: str = ""
    realsize: int | None = None
    """Sparse members: the file's apparent size."""
    sparse: bool = False

    @property
    def is_regular(self) -> bool:
        return self.type in REGULAR


def read_exact(stream: Source, n: int, what: str) -> bytes:
    data = stream.read(n)
    if len(data) != n:
        raise IntegrityError(f"the archive ends inside {what}")
    return data


def number(raw: bytes, what: str) -> int:
    if not _NUMBER.match(raw):
        raise IntegrityError(f"invalid number in {what}: {raw[:40]!r}")
    return int(raw)


def pax_time(ns: int) -> str:
    """An mtime in ns as a PAX decimal ('-1.5' is 1.5 s before the epoch), exact to the ns."""
    sign, magnitude = ("-", -ns) if ns < 0 else ("", ns)
    seconds, fraction = divmod(magnitude, 1_000_000_000)
    return f"{sign}{seconds}.{fraction:09d}"


def parse_pax_time(raw: bytes) -> int:
    match = _TIME.match(raw)
    if match is None:
        raise IntegrityError(f"invalid time in a PAX header: {raw[:40]!r}")
    sign, seconds, fraction = match.groups()
    ns = int(seconds) * 1_000_000_000 + int((fraction or b"").ljust(9, b"0")[:9])
    return -ns if sign else ns


def pax_records(data: bytes) -> dict[str, bytes]:
    """'<length> <keyword>=<value>\\n' records of a PAX extended header (POSIX.1-2001, pax(1))."""
    records: dict[str, bytes] = {}
    pos = 0
    while pos < len(data) and data[pos] != 0:
        space = data.find(b" ", pos, pos + 21)
        if space < 0:
            raise IntegrityError("invalid PAX record: no length")
        length = number(data[pos:space], "a PAX record length")
        end = pos + length
        if end <= space + 1 or end > len(data) or data[end - 1] != 0x0A:
            raise IntegrityError(f"invalid PAX record length {length}")
        keyword, sep, value = data[space + 1 : end - 1].partition(b"=")
        if not sep or not keyword:
            raise IntegrityError("invalid PAX record: no keyword")
        try:
            records[keyword.decode("utf-8")] = value
        except UnicodeDecodeError:
            raise IntegrityError("invalid PAX record keyword") from None
        pos = end
    return records


def _text(raw: bytes) -> str:
    # Lossless for any bytes: valid UTF-8 as text, anything else as surrogates (hdrcharset=BINARY).
    return raw.decode("utf-8", "surrogateescape")


def sparse_map(stream: Source, data_size: int) -> tuple[list[tuple[int, int]], int]:
    """Reads a GNU sparse 1.0 map from the start of a member's data area: decimal numbers, one per
    line (the count, then offset and length pairs), padded to whole blocks. Returns the segments and
    the bytes the map took."""
    buf = b""
    used = 0
    numbers: list[int] = []
    wanted: int | None = None
    while wanted is None or len(numbers) < 1 + 2 * wanted:
        if b"\n" not in buf:
            if used + BLOCK > data_size or used >= MAX_SPARSE_SEGMENTS * 42:
                raise IntegrityError("the sparse map is longer than its member")
            buf += read_exact(stream, BLOCK, "a sparse map")
            used += BLOCK
            continue
        line, buf = buf.split(b"\n", 1)
        numbers.append(number(line, "a sparse map"))
        if wanted is None:
            wanted = numbers[0]
            if wanted > MAX_SPARSE_SEGMENTS:
                raise IntegrityError(f"a sparse map of {wanted} segments is more than {MAX_SPARSE_SEGMENTS}")
    pairs = numbers[1:]
    return list(zip(pairs[::2], pairs[1::2], strict=True)), used


def members(stream: Source) -> Iterator[Member]:
    """The members of a tar stream. The caller consumes each member's data area (``size`` bytes,
    padded to a block) before asking for the next."""
    overrides: dict[str, bytes] = {}
    long_name: bytes | None = None
    long_link: bytes | None = None
    while True:
        header = stream.read(BLOCK)
        if len(header) < BLOCK or header == bytes(BLOCK):
            if header and len(header) < BLOCK:
                raise IntegrityError("the archive ends inside a header")
            return
        try:
            info = tarfile.TarInfo.frombuf(header, "utf-8", "surrogateescape")
        except (tarfile.HeaderError, ValueError, OverflowError) as exc:
            raise IntegrityError(f"not a valid archive header: {exc}") from exc
        size = info.size
        if not 0 <= size <= MAX_SIZE:
            raise IntegrityError(f"invalid member size {size}")
        padded = -(-size // BLOCK) * BLOCK
        if info.type in (
            tarfile.XHDTYPE,
            tarfile.XGLTYPE,
            tarfile.GNUTYPE_LONGNAME,
            tarfile.GNUTYPE_LONGLINK,
        ):
            if size > MAX_EXTENDED_HEADER:
                raise IntegrityError(f"an extended header of {size} bytes is more than {MAX_EXTENDED_HEADER}")
            data = read_exact(stream, padded, "an extended header")[:size]
            if info.type == tarfile.XHDTYPE:
                overrides = pax_records(data)
            elif info.type == tarfile.GNUTYPE_LONGNAME:
                long_name = data.rstrip(b"\0")
            elif info.type == tarfile.GNUTYPE_LONGLINK:
                long_link = data.rstrip(b"\0")
            # A global header ('g') sets nothing we use: its records are read and ignored.
            continue
        yield _member(info, size, overrides, long_name, long_link)
        overrides, long_name, long_link = {}, None, None


def _member(
    info: tarfile.TarInfo,
    size: int,
    pax: dict[str, bytes],
    long_name: bytes | None,
    long_link: bytes | None,
) -> Member:
    name = _text(pax["path"]) if "path" in pax else _text(long_name) if long_name is not None else info.name
    if "GNU.sparse.name" in pax:
        name = _text(pax["GNU.sparse.name"])
    linkname = (
        _text(pax["linkpath"]) if "linkpath" in pax else _text(long_link) if long_link else info.linkname
    )
    if "size" in pax:
        size = number(pax["size"], "a PAX size")
        if size > MAX_SIZE:
            raise IntegrityError(f"invalid member size {size}")
    mtime_ns = parse_pax_time(pax["mtime"]) if "mtime" in pax else int(info.mtime) * 1_000_000_000
    member = Member(
        name=name.rstrip("/") if info.type == tarfile.DIRTYPE else name,
        type=info.type,
        size=size,
        mode=info.mode,
        uid=number(pax["uid"], "a PAX uid") if "uid" in pax else info.uid,
        gid=number(pax["gid"], "a PAX gid") if "gid" in pax else info.gid,
        mtime_ns=mtime_ns,
        linkname=linkname,
    )
    sparse_keys = [k for k in pax if k.startswith("GNU.sparse.")]
    if sparse_keys:
        if (pax.get("GNU.sparse.major"), pax.get("GNU.sparse.minor")) != (b"1", b"0"):
            raise UnsafeArchiveEntry(f'"{name}" is a sparse file in a format other than GNU 1.0')
        if "GNU.sparse.realsize" not in pax:
            raise IntegrityError(f'"{name}": sparse member without GNU.sparse.realsize')
        member.sparse = True
        member.realsize = number(pax["GNU.sparse.realsize"], "GNU.sparse.realsize")
    if member.type not in REGULAR | {tarfile.DIRTYPE, tarfile.SYMTYPE, tarfile.LNKTYPE}:
        what = _TYPE_NAMES.get(member.type, f"member of type {member.type!r}")
        raise UnsafeArchiveEntry(f'"{name}" is a {what}: never restored')
    if not member.is_regular and (member.size or member.sparse):
        raise IntegrityError(f'"{name}": a {what_type(member.type)} carries no data')
    return member


def what_type(type_: bytes) -> str:
    return {tarfile.DIRTYPE: "directory", tarfile.SYMTYPE: "symbolic link", tarfile.LNKTYPE: "hard link"}.get(
        type_, "regular file"
    )


__all__ = ["Member", "members", "parse_pax_time", "pax_records", "pax_time", "read_exact", "sparse_map"]
