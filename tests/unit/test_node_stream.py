"""A node descriptor read as a stream (``BackupRepository.node_head`` and ``node_entries``) reads as
the whole descriptor does: the same head, the same entries in the same order, the same refusals,
however it was written; what yajl cannot read exactly is read whole. Its entries, held in columns
(``DescribedTree``), read back as the models they came from."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shardkeeper.api.descriptors import ChunkEntry, CollectionEntry, Entry, EntryType, NodeDescriptor
from shardkeeper.archive.described import DescribedEntry, DescribedNode, DescribedTree
from shardkeeper.errors import CorruptDescriptor, UnknownFormatVersion
from shardkeeper.storage.filesystem import FilesystemStorage
from shardkeeper.storage.layout import BackupLayout
from shardkeeper.storage.repository import BackupRepository, EntrySpool
from tests.unit.test_entry_spool import descriptor

KEY = BackupLayout("b").node_descriptor("n0")

# Names as a Linux filesystem may hold them: any bytes but '/' and NUL (undecodable ones as
# surrogates), and characters past U+FFFF (json escapes them as a surrogate pair).
_component = st.one_of(
    st.binary(min_size=1, max_size=8)
    .filter(lambda b: b"/" not in b and b"\0" not in b and b not in (b".", b".."))
    .map(lambda b: b.decode("utf-8", "surrogateescape")),
    st.sampled_from(["a", "ü", "\U0001f600", "x y", '"q"', "back\\slash"]),
)


@st.composite
def _entries(draw: st.DrawFn, name: str) -> list[Entry]:
    entries = [Entry.make(name, EntryType.DIR, mode=0o755, mtime_ns=draw(st.integers(-(2**62), 2**62)))]
    for base in draw(st.lists(_component, unique=True, max_size=6)):
        path = f"{name}/{base}"
        kind = draw(st.sampled_from(list(EntryType)))
        common: dict[str, Any] = {
            "mode": draw(st.integers(0, 0o7777)),
            "mtime_ns": draw(st.none() | st.integers(-(2**62), 2**62)),
            "uid": draw(st.none() | st.integers(0, 2**32 - 1)),
            "gid": draw(st.none() | st.integers(0, 2**32 - 1)),
            "chunk": draw(st.none() | st.integers(1, 2**32 - 1)),
        }
        if kind is EntryType.FILE:
            size = draw(st.integers(0, 2**62))
            data = draw(st.none() | st.just([(0, 1)] if size >= 1 else None))
            entry = Entry.make(
                path,
                kind,
                size=size,
                sha256=draw(st.binary(min_size=32, max_size=32)).hex(),
                ino=draw(st.none() | st.integers(0, 2**64 - 1)),
                gen=draw(st.none() | st.integers(-(2**63), 2**63 - 1)),
                data=data,
                **common,
            )
        elif kind in (EntryType.SYMLINK, EntryType.HARDLINK):
            entry = Entry.make(path, kind, target=f"{name}/{draw(_component)}", **common)
        else:
            entry = Entry.make(path, kind, **common)
        entries.append(entry)
    return entries


def _chunk(n: int) -> ChunkEntry:
    return ChunkEntry(n=n, key=f"chunk-{n}", blake3="cd" * 32, size=10, raw_size=20, files=1)


def described(e: Entry) -> DescribedEntry:
    return DescribedEntry(
        e.name,
        e.type,
        e.mode,
        e.mtime_ns,
        e.uid,
        e.gid,
        e.ino,
        e.gen,
        e.size,
        e.sha256,
        e.chunk,
        e.link,
        e.data,
    )


def _headless(whole: NodeDescriptor) -> NodeDescriptor:
    return whole.model_copy(
        update={"collections": [c.model_copy(update={"entries": []}) for c in whole.collections]}
    )


class _CountingStore(FilesystemStorage):
    """A store that counts ``get_bytes``: a read that calls it read an object whole."""

    whole_reads = 0

    def get_bytes(self, key: str) -> bytes:
        self.whole_reads += 1
        return super().get_bytes(key)


def _write(store: FilesystemStorage, whole: NodeDescriptor, *, spooled: bool, work: Path) -> None:
    repo = BackupRepository(store)
    if not spooled:
        repo.write_node(whole)
        return
    with EntrySpool(work) as spool:
        for col in whole.collections:
            for entry in col.entries:
                spool.add(col.name, entry)
        repo.write_node_spooled(_headless(whole), spool)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    names=st.lists(st.sampled_from(["a", "b", "ü-col", "\U0001f600"]), unique=True, max_size=3),
    data=st.data(),
    spooled=st.booleans(),
)
def test_a_streamed_descriptor_reads_as_the_whole_one(
    tmp_path_factory: pytest.TempPathFactory, names: list[str], data: st.DataObject, spooled: bool
) -> None:
    work = tmp_path_factory.mktemp("d")
    collections = [
        CollectionEntry(name=n, bytes=1, allocated=2, entries=data.draw(_entries(n)), chunks=[_chunk(1)])
        for n in names
    ]
    whole = descriptor(collections)
    store = _CountingStore(root=work / "store")
    _write(store, whole, spooled=spooled, work=work)
    repo = BackupRepository(store)
    assert repo.node_descriptor("b", "n0") == whole
    store.whole_reads = 0

    assert repo.node_head("b", "n0") == _headless(whole)
    found = repo.node_entries("b", "n0", DescribedNode)
    assert found is not None
    head, sink = found
    assert head == _headless(whole)
    trees = sink.trees(head)
    assert [(col.name, list(tree)) for col, tree in trees] == [
        (col.name, [described(e) for e in col.entries]) for col in whole.collections
    ]
    # Streamed, surrogate pairs (names past U+FFFF) included; an integer yajl cannot hold (64-bit
    # signed, without its lowest: it negates the magnitude) is read whole.
    big = any(
        not -(2**63) < value < 2**63
        for col in whole.collections
        for e in col.entries
        for value in (e.ino or 0, e.gen or 0)
    )
    assert store.whole_reads == (2 if big else 0)


def test_only_the_wanted_collections_are_kept(tmp_path: Path) -> None:
    collections = [
        CollectionEntry(name=n, bytes=0, entries=[Entry.make(n, EntryType.DIR, mode=0o700)], chunks=[])
        for n in ("a", "b", "c")
    ]
    store = FilesystemStorage(root=tmp_path / "store")
    _write(store, descriptor(collections), spooled=True, work=tmp_path)
    found = BackupRepository(store).node_entries("b", "n0", lambda: DescribedNode({"c", "a"}))
    assert found is not None
    assert [(col.name, [e.name for e in tree]) for col, tree in found[1].trees(found[0])] == [
        ("a", ["a"]),
        ("c", ["c"]),
    ]


def _many(n: int) -> list[Entry]:
    return [Entry.make("col", EntryType.DIR, mode=0o755, mtime_ns=0)] + [
        Entry.make(f"col/file-{i:06d}", EntryType.FILE, mode=0o644, size=1, sha256="ab" * 32, chunk=1)
        for i in range(n)
    ]


def test_a_descriptor_read_whole_midway_hands_each_entry_once(tmp_path: Path) -> None:
    """An integer past 2**63 (yajl refuses it) past the first block: the entries before it went to a
    sink already; the whole read hands them all to a new one."""
    entries = [*_many(20_000), Entry.make("col/big", EntryType.DIR, mode=0o755, ino=2**63)]
    whole = descriptor([CollectionEntry(name="col", bytes=0, entries=entries, chunks=[])])
    store = FilesystemStorage(root=tmp_path / "store")
    _write(store, whole, spooled=False, work=tmp_path)
    raw = store.get_bytes(KEY)
    assert len(raw) > 2 << 20 and raw.index(str(2**63).encode()) > 2 << 20
    made: list[DescribedNode] = []

    def sink() -> DescribedNode:
        made.append(DescribedNode())
        return made[-1]

    found = BackupRepository(store).node_entries("b", "n0", sink)
    assert found is not None and len(made) == 2 and found[1] is made[1]
    ((_, tree),) = found[1].trees(found[0])
    assert list(tree) == [described(e) for e in entries]


def _raw(body: dict[str, Any], tmp_path: Path) -> FilesystemStorage:
    store = FilesystemStorage(root=tmp_path / "store")
    store.put_bytes(KEY, json.dumps(body).encode())
    return store


def _body(*entries: dict[str, Any]) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(descriptor([]).model_dump_json(by_alias=True))
    body["collections"] = [{"name": "col", "bytes": 0, "chunks": [], "entries": list(entries)}]
    return body


_DIR = {"path": "col", "type": "dir", "mode": 493}


def test_a_version_given_after_the_collections_or_format_1_is_read_whole(tmp_path: Path) -> None:
    body = _body(_DIR)
    version = body.pop("formatVersion")
    body["formatVersion"] = version  # last
    store = _raw(body, tmp_path)
    found = BackupRepository(store).node_entries("b", "n0", DescribedNode)
    assert found is not None and [e.name for _, t in found[1].trees(found[0]) for e in t] == ["col"]

    v1 = json.loads(descriptor([]).model_dump_json(by_alias=True))
    v1["formatVersion"] = 1
    v1["collections"] = [
        {
            "name": "col",
            "bytes": 3,
            "files": [{"path": "col/f", "size": 3, "sha256": "ab" * 32, "mode": 0o100644, "chunk": 1}],
            "chunks": [
                {"n": 1, "key": "col/chunk-1", "sha256": "cd" * 32, "size": 9, "rawSize": 9, "files": 1}
            ],
        }
    ]
    store.put_bytes(KEY, json.dumps(v1).encode())
    found = BackupRepository(store).node_entries("b", "n0", DescribedNode)
    assert found is not None
    ((col, tree),) = found[1].trees(found[0])
    assert col.chunks[0].key == "col/chunk-1"
    assert list(tree) == [DescribedEntry("col/f", EntryType.FILE, 0o644, size=3, sha256="ab" * 32, chunk=1)]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            _body({"path": "col", "type": "fil", "mode": -1}),
            r"collections\.0\.entries\.0\.type: Input should be",
        ),
        (
            _body(_DIR, {"path": "col/f", "type": "file", "mode": 420}),
            r"collections\.0\.entries\.1: Value error, file col/f has no sha256",
        ),
        (_body({**_DIR, "uid": 2**32}), r"collections\.0\.entries\.0: uid: 4294967296 is out of the range"),
        (_body({**_DIR, "size": 2**64}), r"collections\.0\.entries\.0: size: 18446744073709551616 is out"),
        (_body({**_DIR, "x": json.loads("[" * 40 + "]" * 40)}), r"entries\.0: nested deeper than 32 levels"),
        ({**_body(_DIR), "status": "NOPE"}, r"status: Input should be"),
    ],
)
def test_a_corrupt_descriptor_is_refused_naming_the_field(
    tmp_path: Path, body: dict[str, Any], message: str
) -> None:
    repo = BackupRepository(_raw(body, tmp_path))
    with pytest.raises(CorruptDescriptor, match=message):
        repo.node_entries("b", "n0", DescribedNode)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"", "is not a shardkeeper descriptor"),
        (b"[]", "is not a shardkeeper descriptor"),
        (b'{"formatVersion": 4, "collections": [', "is not a shardkeeper descriptor"),
        (b'{"formatVersion": 4, "collections": [], "collections": []}', "collections: given twice"),
        (json.dumps(_body(_DIR)).encode() + b" {}", "is not a shardkeeper descriptor"),
    ],
)
def test_what_is_not_one_descriptor_is_refused(tmp_path: Path, raw: bytes, message: str) -> None:
    store = FilesystemStorage(root=tmp_path / "store")
    store.put_bytes(KEY, raw)
    for read in (
        lambda: BackupRepository(store).node_head("b", "n0"),
        lambda: BackupRepository(store).node_entries("b", "n0", DescribedNode),
    ):
        with pytest.raises(CorruptDescriptor, match=message):
            read()


def test_an_unknown_version_is_refused_before_anything_else(tmp_path: Path) -> None:
    body = {"formatVersion": 99, "collections": "anything"}
    with pytest.raises(UnknownFormatVersion, match="format version 99"):
        BackupRepository(_raw(body, tmp_path)).node_head("b", "n0")


def test_a_head_read_skips_the_entries_unless_asked_to_check_them(tmp_path: Path) -> None:
    store = _raw(_body(_DIR, {"path": "col/f", "type": "file", "mode": 420}), tmp_path)
    repo = BackupRepository(store)
    head = repo.node_head("b", "n0")
    assert head is not None and head.collections[0].entries == []
    with pytest.raises(CorruptDescriptor, match=r"entries\.1: Value error, file col/f has no sha256"):
        repo.node_head("b", "n0", validate_entries=True)
    assert repo.node_head("none", "n0") is None
    assert repo.node_entries("none", "n0", DescribedNode) is None


def test_a_descriptor_of_another_node_is_refused(tmp_path: Path) -> None:
    store = _raw({**_body(_DIR), "node": "n1"}, tmp_path)
    with pytest.raises(CorruptDescriptor, match="describes b/n1, not b/n0"):
        BackupRepository(store).node_entries("b", "n0", DescribedNode)


@settings(max_examples=60, deadline=None)
@given(entries=_entries("col"))
def test_a_tree_reads_back_its_entries(entries: list[Entry]) -> None:
    tree = DescribedTree()
    for e in entries:
        tree.append(e)
    assert list(tree) == [described(e) for e in entries]
    assert len(tree) == len(entries) and tree[-1] == described(entries[-1])
    assert tree[1:3] == [described(e) for e in entries[1:3]]
    chunks: dict[int, list[int]] = {}
    for i, e in enumerate(entries):
        if e.chunk is not None:
            chunks.setdefault(e.chunk, []).append(i)
    assert {n: list(indices) for n, indices in tree.by_chunk().items()} == chunks


def test_a_value_out_of_range_leaves_the_tree_as_it_was() -> None:
    tree = DescribedTree()
    good = Entry.make("col", EntryType.DIR, mode=0o755, mtime_ns=5, uid=1)
    tree.append(good)
    for field, value in (("uid", 2**32), ("gid", 2**32), ("chunk", 2**32), ("ino", 2**64), ("gen", 2**63)):
        with pytest.raises(ValueError, match=f"{field}: {value} is out of the range"):
            tree.append(Entry.make("col/x", EntryType.DIR, mode=0o755, **{field: value}))
        assert list(tree) == [described(good)]
    with pytest.raises(IndexError):
        tree[1]


def test_numbers_are_read_as_json_reads_them(tmp_path: Path) -> None:
    """ijson hands yajl's numbers on as text without ``use_float``: past 4,300 digits that crashed
    the process, and a Decimal differs from json's float. Read as json does, or refused as it does."""
    store = FilesystemStorage(root=tmp_path / "store")
    repo = BackupRepository(store)
    body = _body({**_DIR, "mtimeNs": 1700000000123456789.0, "ino": 2**63})
    store.put_bytes(KEY, json.dumps(body).encode())
    whole = repo.node_descriptor("b", "n0")
    assert whole is not None
    found = repo.node_entries("b", "n0", DescribedNode)
    assert found is not None
    assert list(found[1].trees(found[0])[0][1]) == [described(e) for e in whole.collections[0].entries]
    for raw in (b'"bytes": 1' + b"0" * 4300 + b', "pauseMs": 1.5', b'"bytes": 1e99999999'):
        store.put_bytes(KEY, json.dumps(_body(_DIR)).encode().replace(b'"bytes": 5', raw))
        for read in (repo.node_head, lambda b, n: repo.node_entries(b, n, DescribedNode)):
            with pytest.raises(CorruptDescriptor):
                read("b", "n0")


def test_what_yajl_reads_otherwise_is_read_by_json(tmp_path: Path) -> None:
    store = FilesystemStorage(root=tmp_path / "store")
    repo = BackupRepository(store)
    # A form feed is whitespace to yajl, not to json.
    store.put_bytes(KEY, json.dumps(_body(_DIR)).encode() + b"\x0c")
    with pytest.raises(CorruptDescriptor, match="is not a shardkeeper descriptor"):
        repo.node_head("b", "n0")
    # A lone high surrogate, in the last bytes of the document too: yajl would read another
    # character (another name); the whole read refuses it.
    for body in (
        _body({**_DIR, "path": "col", "target": "x\ud800y"}),
        {**_body(_DIR), "skipped": [{"reason": "gone", "path": "x\ud800"}]},
    ):
        store.put_bytes(KEY, json.dumps(body).encode())
        with pytest.raises(CorruptDescriptor, match="hex escape"):
            repo.node_head("b", "n0")
