"""An incremental backup's base, read as a stream against this backup's listing (``archive.reuse``):
each listed path gets the base's file at that path exactly as the descriptor has it, and nothing
the base cannot vouch for (a chunk it does not list, a collection it names twice)."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shardkeeper.api.descriptors import CollectionEntry, Entry, EntryType, dump_entry
from shardkeeper.archive.reuse import Reuse
from shardkeeper.archive.source import SourceEntry, SourceTree
from shardkeeper.archive.sparse import inode_generation
from shardkeeper.storage.filesystem import FilesystemStorage
from shardkeeper.storage.repository import BackupRepository
from tests.unit.test_entry_spool import descriptor
from tests.unit.test_node_stream import KEY, _chunk, _entries, _write


def _listing(names: list[str]) -> SourceTree:
    return SourceTree(SourceEntry(n, EntryType.FILE, 0o644, 0, size=1) for n in names)


def _read(store: FilesystemStorage, trees: dict[str, SourceTree]) -> Reuse:
    found = BackupRepository(store).node_entries("b", "n0", lambda: Reuse("b", trees))
    assert found is not None
    head, reuse = found
    reuse.finish(head)
    return reuse


def _reused(reuse: Reuse, collection: str, tree: SourceTree) -> dict[str, tuple[Any, ...]]:
    out = {}
    for row, name in enumerate(tree.names):
        found = reuse.base(collection, row)
        if found is not None:
            out[name] = (found.size, found.sha256, found.gen, found.data, found.chunk.key, found.chunk.backup)
    return out


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data(), spooled=st.booleans())
def test_each_listed_path_gets_the_base_file_at_that_path(
    tmp_path_factory: pytest.TempPathFactory, data: st.DataObject, spooled: bool
) -> None:
    work = tmp_path_factory.mktemp("d")
    entries = data.draw(_entries("col"))
    chunks = sorted({e.chunk for e in entries if e.chunk is not None})
    whole = descriptor(
        [
            CollectionEntry(
                name="col", bytes=1, allocated=2, entries=entries, chunks=[_chunk(n) for n in chunks]
            )
        ]
    )
    store = FilesystemStorage(root=work / "store")
    _write(store, whole, spooled=spooled, work=work)
    # This listing: some of the base's paths (files or not), and paths the base does not have.
    listed = data.draw(st.lists(st.sampled_from([e.name for e in entries]), unique=True))
    listed += data.draw(st.lists(st.sampled_from(["col/new", "col/x/y", "other/a"]), unique=True))
    tree = _listing(data.draw(st.permutations(listed)))

    got = _reused(_read(store, {"col": tree}), "col", tree)

    files = {e.name: e for e in entries if e.type is EntryType.FILE and e.chunk is not None}
    assert got == {
        name: (e.size, e.sha256, e.gen, e.data, f"chunk-{e.chunk}", "b")
        for name, e in files.items()
        if name in tree.names
    }


def _file(name: str, chunk: int = 1, **fields: Any) -> Entry:
    fields = {"mode": 0o644, "size": 1, "sha256": "ab" * 32, **fields}
    return Entry.make(name, EntryType.FILE, chunk=chunk, **fields)


def _store(tmp_path: Path, *collections: CollectionEntry) -> FilesystemStorage:
    store = FilesystemStorage(root=tmp_path / "store")
    _write(store, descriptor(list(collections)), spooled=True, work=tmp_path)
    return store


def test_a_file_in_a_chunk_the_base_does_not_list_is_uploaded_again(tmp_path: Path) -> None:
    store = _store(
        tmp_path,
        CollectionEntry(name="col", bytes=2, entries=[_file("col/a"), _file("col/b", 2)], chunks=[_chunk(1)]),
    )
    tree = _listing(["col/a", "col/b"])
    assert list(_reused(_read(store, {"col": tree}), "col", tree)) == ["col/a"]


def test_a_collection_the_base_names_twice_is_uploaded_again(tmp_path: Path) -> None:
    twice = [
        CollectionEntry(name=n, bytes=1, entries=[_file(f"{n}/a")], chunks=[_chunk(1)])
        for n in ("col", "col", "c2")
    ]
    store = FilesystemStorage(root=tmp_path / "store")
    BackupRepository(store).write_node(descriptor(twice))
    trees = {"col": _listing(["col/a"]), "c2": _listing(["c2/a"])}
    reuse = _read(store, trees)
    assert _reused(reuse, "col", trees["col"]) == {}
    assert list(_reused(reuse, "c2", trees["c2"])) == ["c2/a"]


def test_a_value_past_a_column_is_uploaded_again(tmp_path: Path) -> None:
    """A generation past 64 bits (read whole: yajl cannot hold it) or a size past 2**63-1."""
    entries = [_file("col/gen", gen=2**64), _file("col/size", size=2**63), _file("col/ok")]
    store = _store(tmp_path, CollectionEntry(name="col", bytes=3, entries=entries, chunks=[_chunk(1)]))
    tree = _listing(["col/gen", "col/size", "col/ok"])
    assert list(_reused(_read(store, {"col": tree}), "col", tree)) == ["col/ok"]


def test_a_collection_named_after_its_entries_is_matched(tmp_path: Path) -> None:
    body: dict[str, Any] = json.loads(descriptor([]).model_dump_json(by_alias=True))
    file = json.loads(dump_entry(_file("col/a")))
    chunk = json.loads(_chunk(1).model_dump_json(by_alias=True))
    body["collections"] = [{"entries": [file], "chunks": [chunk], "bytes": 1, "name": "col"}]
    store = FilesystemStorage(root=tmp_path / "store")
    store.put_bytes(KEY, json.dumps(body).encode())
    tree = _listing(["col/a"])
    assert list(_reused(_read(store, {"col": tree}), "col", tree)) == ["col/a"]


def test_a_copied_file_is_matched_by_its_content(tmp_path: Path) -> None:
    """Not hard-linked (``linked`` False): hashed, whatever its inode and mtime say."""
    root = tmp_path / "root"
    (root / "col").mkdir(parents=True)
    (root / "col" / "same").write_bytes(b"x")
    (root / "col" / "changed").write_bytes(b"y")
    sha = "2d711642b726b04401627ca9fbac32f5c8530fb1903cc4db02258717921a4881"  # sha256(b"x")
    entries = [_file(f"col/{n}", sha256=sha, ino=7, mtime_ns=5) for n in ("same", "changed", "other-size")]
    store = _store(tmp_path, CollectionEntry(name="col", bytes=3, entries=entries, chunks=[_chunk(1)]))
    tree = SourceTree(
        [
            SourceEntry("col/same", EntryType.FILE, 0o644, 5, size=1, ino=7),
            SourceEntry("col/changed", EntryType.FILE, 0o644, 5, size=1, ino=7),
            SourceEntry("col/other-size", EntryType.FILE, 0o644, 5, size=2, ino=7),
        ]
    )
    reuse = _read(store, {"col": tree})
    cancelled = threading.Event()
    assert [reuse.match("col", i, e, root, cancelled) for i, e in enumerate(tree)] == [True, False, False]


def test_a_path_the_base_gives_twice_is_uploaded_again(tmp_path: Path) -> None:
    """Twice as a file (the old reader took the first), or as a file and a directory: a restore of
    the base refuses either, so neither is referenced."""
    entries = [
        _file("col/twice"),
        _file("col/twice", sha256="cd" * 32),
        _file("col/also-dir"),
        Entry.make("col/also-dir", EntryType.DIR, mode=0o755),
        _file("col/ok"),
    ]
    store = FilesystemStorage(root=tmp_path / "store")
    col = CollectionEntry(name="col", bytes=3, entries=entries, chunks=[_chunk(1)])
    BackupRepository(store).write_node(descriptor([col]))
    tree = _listing(["col/twice", "col/also-dir", "col/ok"])
    assert list(_reused(_read(store, {"col": tree}), "col", tree)) == ["col/ok"]


def test_a_file_matched_by_its_content_records_its_own_generation(tmp_path: Path) -> None:
    """Another inode with the base's content (or a copy): the new entry takes the live inode's
    generation (a copy: none, as packing records it), not the base's, so the next incremental can
    take it as unchanged without reading it."""
    root = tmp_path / "root"
    (root / "col").mkdir(parents=True)
    for name in ("linked", "copied"):
        (root / "col" / name).write_bytes(b"x")
    sha = "2d711642b726b04401627ca9fbac32f5c8530fb1903cc4db02258717921a4881"  # sha256(b"x")
    entries = [_file(f"col/{n}", sha256=sha, ino=1, mtime_ns=5, gen=123) for n in ("linked", "copied")]
    store = _store(tmp_path, CollectionEntry(name="col", bytes=2, entries=entries, chunks=[_chunk(1)]))
    tree = SourceTree(
        [
            SourceEntry("col/linked", EntryType.FILE, 0o644, 5, size=1, ino=2, linked=True),
            SourceEntry("col/copied", EntryType.FILE, 0o644, 5, size=1, ino=2),
        ]
    )
    reuse = _read(store, {"col": tree})
    assert all(reuse.match("col", i, e, root, threading.Event()) for i, e in enumerate(tree))
    fd = os.open(root / "col" / "linked", os.O_RDONLY)
    try:
        live = inode_generation(fd)  # None where the filesystem does not tell
    finally:
        os.close(fd)
    linked, copied = reuse.base("col", 0), reuse.base("col", 1)
    assert linked is not None and copied is not None
    assert (linked.gen, copied.gen) == (live, None)
