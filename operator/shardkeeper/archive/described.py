"""A node descriptor's entries as a restore or an incremental backup holds them: in columns.

A node may hold a million entries, and its restore needs them all, from its first check to its last
directory's mtime. As models they took ~0.5 KB each (plus ~1 KB while the whole descriptor was
parsed); a ``DescribedTree`` holds ~90 bytes of fixed-width fields per entry (typed arrays, the
sha256 as 32 bytes) and its path in one buffer (``archive.source.Names``), and makes each
``DescribedEntry`` (a named tuple) only when it is read (``benchmarks/README.md``, goal 4).
``DescribedNode`` collects them from the repository's streamed read
(``BackupRepository.node_entries``).
"""

from __future__ import annotations

from array import array
from collections.abc import Container, Iterator, Sequence
from typing import NamedTuple, overload

from shardkeeper.api.descriptors import CollectionEntry, Entry, EntryType, NodeDescriptor
from shardkeeper.archive.source import Names

_TYPES = tuple(EntryType)
_CODES = {t: i for i, t in enumerate(_TYPES)}
_NS = 1_000_000_000
# Which of the optional fields an entry has (``flags``).
_MTIME, _UID, _GID, _INO, _GEN, _CHUNK, _SHA256 = (1 << i for i in range(7))
_OPTIONAL = (_MTIME, _UID, _GID, _INO, _GEN, _CHUNK)


class DescribedEntry(NamedTuple):
    """One entry of a node descriptor, as ``api.descriptors.Entry`` has it (names decoded)."""

    name: str
    type: EntryType
    mode: int
    mtime_ns: int | None = None
    uid: int | None = None
    gid: int | None = None
    ino: int | None = None
    gen: int | None = None
    size: int = 0
    sha256: str | None = None
    chunk: int | None = None
    link: str | None = None
    data: list[tuple[int, int]] | None = None


class DescribedTree(Sequence[DescribedEntry]):
    """A collection's entries in order, in columns. Ranges: ``mode`` 0..0o7777 (as ``Entry``),
    ``uid``, ``gid`` and ``chunk`` 0..2**32-1, ``ino`` 0..2**64-1, ``gen``, ``size`` and the mtime's
    seconds 64-bit signed; ``append`` raises ``ValueError`` naming the field out of range."""

    __slots__ = (
        "_chunk",
        "_data",
        "_flags",
        "_gen",
        "_gid",
        "_ino",
        "_links",
        "_mode",
        "_nsec",
        "_sec",
        "_sha256",
        "_size",
        "_type",
        "_uid",
        "names",
    )

    def __init__(self) -> None:
        self.names = Names()
        self._type = bytearray()
        self._flags = bytearray()
        self._mode = array("H")
        self._sec = array("q")
        self._nsec = array("I")
        self._uid = array("I")
        self._gid = array("I")
        self._ino = array("Q")
        self._gen = array("q")
        self._size = array("q")
        self._chunk = array("I")
        self._sha256 = bytearray()
        self._links: dict[int, str] = {}
        self._data: dict[int, list[tuple[int, int]]] = {}
        """Sparse files' data segments by index (few files are sparse)."""

    def _columns(self) -> tuple[tuple[str, array[int]], ...]:
        return (
            ("mode", self._mode),
            ("mtime", self._sec),
            ("mtime", self._nsec),
            ("uid", self._uid),
            ("gid", self._gid),
            ("ino", self._ino),
            ("gen", self._gen),
            ("size", self._size),
            ("chunk", self._chunk),
        )

    def append(self, e: Entry) -> None:
        """Adds ``e`` (validated as ``Entry`` is); the tree stays as it was if it raises."""
        sec, nsec = divmod(e.mtime_ns or 0, _NS)
        values = (e.mode, sec, nsec, e.uid, e.gid, e.ino, e.gen, e.size, e.chunk)
        optional = (e.mtime_ns, e.uid, e.gid, e.ino, e.gen, e.chunk)
        flags = sum(bit for bit, value in zip(_OPTIONAL, optional, strict=True) if value is not None)
        index = len(self.names)
        for (field, column), value in zip(self._columns(), values, strict=True):
            try:
                column.append(value or 0)
            except OverflowError:
                for _, added in self._columns():
                    del added[index:]
                raise ValueError(f"{field}: {value} is out of the range a restore can apply") from None
        self._type.append(_CODES[e.type])
        if e.sha256 is not None:
            flags |= _SHA256
            self._sha256 += bytes.fromhex(e.sha256)  # Entry's pattern: 64 lowercase hex digits
        else:
            self._sha256 += bytes(32)
        self._flags.append(flags)
        link = e.link
        if link is not None:
            self._links[index] = link
        if e.data is not None:
            self._data[index] = e.data
        self.names.append(e.name)

    def __len__(self) -> int:
        return len(self.names)

    def __iter__(self) -> Iterator[DescribedEntry]:
        columns = (self.names, self._type, self._flags, *(column for _, column in self._columns()))
        for i, row in enumerate(zip(*columns, strict=True)):
            yield self._made(i, *row)

    def _made(
        self,
        i: int,
        name: str,
        type_: int,
        flags: int,
        mode: int,
        sec: int,
        nsec: int,
        uid: int,
        gid: int,
        ino: int,
        gen: int,
        size: int,
        chunk: int,
    ) -> DescribedEntry:
        """Entry ``i``, from its row of the columns."""
        return DescribedEntry(
            name,
            _TYPES[type_],
            mode,
            sec * _NS + nsec if flags & _MTIME else None,
            uid if flags & _UID else None,
            gid if flags & _GID else None,
            ino if flags & _INO else None,
            gen if flags & _GEN else None,
            size,
            self._sha256[i * 32 : i * 32 + 32].hex() if flags & _SHA256 else None,
            chunk if flags & _CHUNK else None,
            self._links.get(i),
            self._data.get(i),
        )

    @overload
    def __getitem__(self, index: int) -> DescribedEntry: ...

    @overload
    def __getitem__(self, index: slice) -> list[DescribedEntry]: ...

    def __getitem__(self, index: int | slice) -> DescribedEntry | list[DescribedEntry]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self.names)))]
        i = range(len(self.names))[index]  # IndexError out of range
        row = (column[i] for _, column in self._columns())
        return self._made(i, self.names[i], self._type[i], self._flags[i], *row)

    def by_chunk(self) -> dict[int, array[int]]:
        """The indices of the entries each chunk holds, by the chunk's number."""
        out: dict[int, array[int]] = {}
        for i, (flags, chunk) in enumerate(zip(self._flags, self._chunk, strict=True)):
            if flags & _CHUNK:
                out.setdefault(chunk, array("I")).append(i)
        return out


class DescribedNode:
    """An ``EntrySink`` (``storage.node_stream``): the entries of the ``wanted`` collections (all if
    None), a tree per collection. A collection whose name came after its entries is kept until
    ``trees`` knows it."""

    def __init__(self, wanted: Container[str] | None = None) -> None:
        self._wanted = wanted
        self._trees: dict[int, DescribedTree] = {}

    def __call__(self, index: int, name: str | None, entry: Entry) -> None:
        if name is not None and self._wanted is not None and name not in self._wanted:
            return
        tree = self._trees.get(index)
        if tree is None:
            tree = self._trees[index] = DescribedTree()
        tree.append(entry)

    def trees(self, descriptor: NodeDescriptor) -> list[tuple[CollectionEntry, DescribedTree]]:
        """The wanted collections of ``descriptor`` (the head ``node_entries`` read with this sink),
        in its order, each with its entries (an empty tree if it has none)."""
        trees, self._trees = self._trees, {}
        return [
            (col, trees.get(i) or DescribedTree())
            for i, col in enumerate(descriptor.collections)
            if self._wanted is None or col.name in self._wanted
        ]


__all__ = ["DescribedEntry", "DescribedNode", "DescribedTree"]
