"""A node's frozen entries, as packing reads them: ``SourceEntry`` one by one, held in columns.

A node may freeze a million small files, and its listing is held from the freeze until the last
chunk is packed. As one object each they took ~330 bytes (the object, its large ints, a dict slot);
a ``SourceTree`` holds the name and ~40 bytes of fixed-width fields per entry (typed arrays), and
makes the entries (named tuples) only when they are read, ~0.4-1 µs each (``benchmarks/README.md``,
goal 4).
"""

from __future__ import annotations

from array import array
from collections.abc import Container, Iterable, Iterator, Sequence
from typing import NamedTuple, overload

from shardkeeper.api.descriptors import EntryType

_TYPES = tuple(EntryType)
_CODES = {t: i for i, t in enumerate(_TYPES)}
_NS = 1_000_000_000


class SourceEntry(NamedTuple):
    """One frozen entry. Regular files are read from ``<staging>/<name>``; the others carry all
    they need. ``linked``: the staged file is the live file's inode (a hard link), so it is checked
    for changes after it is read. A named tuple: a tree makes one per entry each time it is read,
    and a tuple is made in ~0.6 µs where a frozen dataclass took ~3.8 µs."""

    name: str
    type: EntryType
    mode: int
    mtime_ns: int
    uid: int = 0
    gid: int = 0
    size: int = 0
    link: str | None = None
    linked: bool = False
    ino: int = 0

    @property
    def data_size(self) -> int:
        return self.size if self.type is EntryType.FILE else 0


class SourceTree(Sequence[SourceEntry]):
    """A collection's frozen entries in order, in columns. Ranges: ``mode`` 0..0o177777, ``uid`` and
    ``gid`` 0..2**32-1 (Linux's uid_t), ``size`` 0..2**63-1 bytes (regular files only: the other
    entries read back with 0), ``ino`` 0..2**64-1, ``mtime_ns`` any time a 64-bit ``time_t`` holds;
    out of range raises ``OverflowError``. Indexing with a slice gives a list of entries."""

    __slots__ = (
        "_gid",
        "_ino",
        "_linked",
        "_links",
        "_mode",
        "_nsec",
        "_sec",
        "_size",
        "_type",
        "_uid",
        "names",
    )

    def __init__(self, entries: Iterable[SourceEntry] = ()) -> None:
        self.names: list[str] = []
        self._type = bytearray()
        self._linked = bytearray()
        self._mode = array("H")
        self._uid = array("I")
        self._gid = array("I")
        self._sec = array("q")
        self._nsec = array("I")
        self._size = array("q")
        self._ino = array("Q")
        self._links: dict[int, str] = {}
        """Link targets by index: only symbolic and hard links have one."""
        for e in entries:
            self.append(e)

    def append(self, e: SourceEntry) -> None:
        sec, nsec = divmod(e.mtime_ns, _NS)
        index = len(self.names)
        try:
            self._type.append(_CODES[e.type])
            self._linked.append(1 if e.linked else 0)
            self._mode.append(e.mode)
            self._uid.append(e.uid)
            self._gid.append(e.gid)
            self._sec.append(sec)
            self._nsec.append(nsec)
            self._size.append(e.data_size)
            self._ino.append(e.ino)
        except (OverflowError, TypeError, ValueError):
            for column in self._columns():  # out of range, or not an int: the tree stays as it was
                del column[index:]
            raise
        if e.link is not None:
            self._links[index] = e.link
        self.names.append(e.name)

    def __setitem__(self, index: int, e: SourceEntry) -> None:
        """Replaces the entry at ``index`` (the same position: a file re-frozen after it changed).
        Raises ``IndexError``, or ``OverflowError`` (the tree stays as it was)."""
        index = range(len(self.names))[index]
        one = SourceTree((e,))  # every range checked before anything changes
        for column, value in zip(self._columns(), one._columns(), strict=True):
            column[index] = value[0]
        self._links.pop(index, None)
        if e.link is not None:
            self._links[index] = e.link
        self.names[index] = e.name

    def _columns(self) -> tuple[bytearray | array[int], ...]:
        """The fixed-width columns, in the order ``_entries`` reads them."""
        return (
            self._type,
            self._mode,
            self._sec,
            self._nsec,
            self._uid,
            self._gid,
            self._size,
            self._linked,
            self._ino,
        )

    def __len__(self) -> int:
        return len(self.names)

    def _entries(self, start: int, stop: int) -> Iterator[SourceEntry]:
        """The entries ``start`` to ``stop`` (0 <= start <= stop <= len), made from the columns."""
        links, types = self._links, _TYPES
        columns = (self.names, *self._columns())
        if start != 0 or stop != len(self.names):
            columns = tuple(column[start:stop] for column in columns)
        for i, (name, type_, mode, sec, nsec, uid, gid, size, linked, ino) in enumerate(
            zip(*columns, strict=True), start
        ):
            link = links.get(i)
            yield SourceEntry._make(
                (name, types[type_], mode, sec * _NS + nsec, uid, gid, size, link, linked == 1, ino)
            )

    @overload
    def __getitem__(self, index: int) -> SourceEntry: ...

    @overload
    def __getitem__(self, index: slice) -> list[SourceEntry]: ...

    def __getitem__(self, index: int | slice) -> SourceEntry | list[SourceEntry]:
        if isinstance(index, slice):
            start, stop, step = index.indices(len(self.names))
            if step == 1:
                return list(self._entries(start, max(start, stop)))
            return [self[i] for i in range(start, stop, step)]
        if not -len(self.names) <= index < len(self.names):
            raise IndexError(index)
        index %= len(self.names)
        return next(self._entries(index, index + 1))

    def __iter__(self) -> Iterator[SourceEntry]:
        return self._entries(0, len(self.names))

    @property
    def data_sizes(self) -> Sequence[int]:
        """Each entry's bytes of content, in order (0 for all but regular files)."""
        return self._size

    @property
    def data_bytes(self) -> int:
        return sum(self._size)

    @property
    def files(self) -> int:
        """How many entries are regular files."""
        return self._type.count(_CODES[EntryType.FILE])

    def without(self, names: Container[str]) -> SourceTree:
        """A copy without the entries named in ``names``."""
        return SourceTree(e for e in self if e.name not in names)

    def without_rows(self, rows: bytes | bytearray) -> SourceTree:
        """A copy without the entries whose byte in ``rows`` (one per entry) is not 0."""
        return SourceTree(e for e, drop in zip(self, rows, strict=True) if not drop)


__all__ = ["SourceEntry", "SourceTree"]
