"""A node's frozen entries, as packing reads them: ``SourceEntry`` one by one, held in columns.

A node may freeze a million small files, and its listing is held from the freeze until the last
chunk is packed. As one object each they took ~330 bytes (the object, its large ints, a dict slot);
a ``SourceTree`` holds ~40 bytes of fixed-width fields per entry (typed arrays) and its path in one
buffer (``Names``: the path's UTF-8 and 8 bytes, where a ``str`` took ~60 bytes and more, and
kept Python's small-object heap from handing pages back), and makes the entries (named tuples) only
when they are read, ~0.4-1 µs each (``benchmarks/README.md``, goal 4).
"""

from __future__ import annotations

from array import array
from collections.abc import Container, Iterable, Iterator, Sequence
from typing import NamedTuple, overload

from shardkeeper.api.descriptors import EntryType

_TYPES = tuple(EntryType)
_CODES = {t: i for i, t in enumerate(_TYPES)}
_NS = 1_000_000_000


class Names(Sequence[str]):
    """Paths in order, held as one buffer: each path's UTF-8 (``surrogatepass``, so that every
    ``str`` reads back as it was, the lone surrogates of PEP 383 names included) and where it ends
    (8 bytes). A path is decoded each time it is read (~0.15 µs for 40 bytes). Indexing with a
    slice gives a list."""

    __slots__ = ("_blob", "_ends")

    def __init__(self, names: Iterable[str] = ()) -> None:
        self._blob = bytearray()
        self._ends = array("Q")
        for name in names:
            self.append(name)

    def append(self, name: str) -> None:
        self._blob += name.encode("utf-8", "surrogatepass")
        self._ends.append(len(self._blob))

    def __len__(self) -> int:
        return len(self._ends)

    def _span(self, index: int) -> tuple[int, int]:
        """Where path ``index`` (0 <= index < len) is in the buffer."""
        return (self._ends[index - 1] if index else 0), self._ends[index]

    @overload
    def __getitem__(self, index: int) -> str: ...

    @overload
    def __getitem__(self, index: slice) -> list[str]: ...

    def __getitem__(self, index: int | slice) -> str | list[str]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self._ends)))]
        start, end = self._span(range(len(self._ends))[index])  # IndexError out of range
        return self._blob[start:end].decode("utf-8", "surrogatepass")

    def __setitem__(self, index: int, name: str) -> None:
        """Replaces path ``index``: in place if it is the same length in UTF-8, otherwise by moving
        every path after it (O(len): for a file re-frozen under another name, which staging never
        does). Raises ``IndexError``, and ``TypeError`` for a slice (one path at a time)."""
        if not isinstance(index, int):
            raise TypeError(f"Names: a path is replaced by its int index, not {type(index).__name__}")
        index = range(len(self._ends))[index]
        start, end = self._span(index)
        data = name.encode("utf-8", "surrogatepass")
        self._blob[start:end] = data
        if (moved := len(data) - (end - start)) != 0:
            ends = self._ends
            ends[index:] = array("Q", (at + moved for at in ends[index:]))

    def __iter__(self) -> Iterator[str]:
        blob, start = self._blob, 0
        for end in self._ends:
            yield blob[start:end].decode("utf-8", "surrogatepass")
            start = end

    def between(self, start: int, stop: int) -> Iterator[str]:
        """Paths ``start`` to ``stop`` (0 <= start <= stop <= len; ``IndexError`` otherwise, at once)."""
        if not 0 <= start <= stop <= len(self._ends):
            raise IndexError(f"Names.between({start}, {stop}) of {len(self._ends)} paths")
        return self._between(start, stop)

    def _between(self, start: int, stop: int) -> Iterator[str]:
        blob, ends = self._blob, self._ends
        at = ends[start - 1] if start else 0
        for i in range(start, stop):
            end = ends[i]
            yield blob[at:end].decode("utf-8", "surrogatepass")
            at = end


class PathIndex:
    """The rows of ``names`` by path: an open-addressing table of rows (linear probing, at most half
    full, keyed by each path's ``hash``), 8-16 bytes per path. A ``set`` or ``dict`` of the paths
    took ~100 bytes and a ``str`` per path, and sorting the paths to bisect them a ``str`` per path
    too (``benchmarks/README.md``, goal 4). Paths appended to ``names`` are found once ``add``
    has indexed them; no path may change while the index is used. Not for threads: ``add`` and
    ``row`` from one thread at a time (``add`` may rebuild the table under a concurrent ``row``)."""

    __slots__ = ("_count", "_mask", "_names", "_rows")

    def __init__(self, names: Names) -> None:
        self._names = names
        self._count = 0
        self._mask = 0
        self._rows = array("i", [-1])
        self._grow(len(names))

    def _grow(self, count: int) -> None:
        """Indexes rows ``0`` to ``count`` - 1 anew, in a table at most half full."""
        self._mask = mask = (1 << (2 * count).bit_length()) - 1
        self._rows = rows = array("i", [-1]) * (mask + 1)
        for row, name in enumerate(self._names.between(0, count)):
            slot = hash(name) & mask
            while rows[slot] != -1:
                slot = (slot + 1) & mask
            rows[slot] = row
        self._count = count

    def add(self, row: int) -> None:
        """Indexes row ``row``, appended to the names since the last row indexed (``row`` must
        be that row + 1). The table doubles (every row indexed anew) when it would be over half
        full: ~1 µs a row in all. Raises ``ValueError`` for another row."""
        if row != self._count:
            raise ValueError(f"row {row}: the next row to index is {self._count}")
        if row >= len(self._names):
            raise ValueError(f"row {row}: not appended to the names yet")
        if 2 * (row + 1) > self._mask + 1:
            self._grow(row + 1)
            return
        rows, mask = self._rows, self._mask
        slot = hash(self._names[row]) & mask
        while rows[slot] != -1:
            slot = (slot + 1) & mask
        rows[slot] = row
        self._count = row + 1

    def row(self, name: str) -> int | None:
        """Where path ``name`` is (its first row, if it is there twice); None if it is not."""
        rows, mask = self._rows, self._mask
        blob, ends = self._names._blob, self._names._ends  # the same module: its buffer
        key = name.encode("utf-8", "surrogatepass")
        slot = hash(name) & mask
        while (row := rows[slot]) != -1:
            start = ends[row - 1] if row else 0
            if ends[row] - start == len(key) and blob.startswith(key, start):
                return row
            slot = (slot + 1) & mask
        return None


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
        self.names = Names()
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
        if not isinstance(e.name, str):  # before any column changes: the tree stays as it was
            raise TypeError(f"name: {e.name!r} is not a str")
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
        columns = self._columns()
        if start != 0 or stop != len(self.names):
            columns = tuple(column[start:stop] for column in columns)
        for i, (name, type_, mode, sec, nsec, uid, gid, size, linked, ino) in enumerate(
            zip(self.names.between(start, stop), *columns, strict=True), start
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


__all__ = ["Names", "PathIndex", "SourceEntry", "SourceTree"]
