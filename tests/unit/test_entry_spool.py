"""A node descriptor streamed from its entry spool is the descriptor a whole write makes, and
``run_chunks`` hands results on in order, keeping none it handed on."""

from __future__ import annotations

import datetime as dt
import gc
import json
import threading
import time
import weakref
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shardkeeper.api.common import Codec, CompressionLevel, Phase
from shardkeeper.api.descriptors import ChunkEntry, CollectionEntry, Entry, EntryType, NodeDescriptor
from shardkeeper.archive.transfer import run_chunks
from shardkeeper.errors import CorruptDescriptor
from shardkeeper.storage.filesystem import FilesystemStorage
from shardkeeper.storage.layout import BackupLayout
from shardkeeper.storage.repository import BackupRepository, EntrySpool

# Names as a Linux filesystem may hold them: any bytes but '/' and NUL (undecodable ones as surrogates).
_component = st.binary(min_size=1, max_size=12).filter(
    lambda b: b"/" not in b and b"\0" not in b and b not in (b".", b"..")
)
_name = _component.map(lambda b: b.decode("utf-8", "surrogateescape"))


@st.composite
def _collection(draw: st.DrawFn, name: str) -> CollectionEntry:
    entries = [Entry.make(name, EntryType.DIR, mode=0o755, mtime_ns=draw(st.integers(0, 2**62)))]
    for base in draw(st.lists(_name, unique=True, max_size=8)):
        kind = draw(st.sampled_from([EntryType.FILE, EntryType.SYMLINK, EntryType.DIR]))
        path = f"{name}/{base}"
        if kind is EntryType.FILE:
            size = draw(st.integers(0, 2**40))
            entry = Entry.make(
                path, kind, mode=0o644, mtime_ns=1, size=size, sha256="ab" * 32, chunk=1, ino=7
            )
        elif kind is EntryType.SYMLINK:
            entry = Entry.make(path, kind, mode=0o777, mtime_ns=2, target=draw(_name), chunk=1)
        else:
            entry = Entry.make(path, kind, mode=0o700, mtime_ns=3, uid=1000, gid=1000)
        entries.append(entry)
    chunk = ChunkEntry(n=1, key="chunk-1", blake3="cd" * 32, size=10, raw_size=20, files=len(entries))
    return CollectionEntry(name=name, bytes=5, allocated=4096, entries=entries, chunks=[chunk])


def descriptor(collections: list[CollectionEntry]) -> NodeDescriptor:
    """A node descriptor of backup b, node n0, with ``collections`` (also for test_node_stream)."""
    return NodeDescriptor(
        id="b",
        node="n0",
        status=Phase.SUCCESS,
        started_at=dt.datetime(2026, 12, 1, tzinfo=dt.UTC),
        codec=Codec.ZSTD,
        compression_level=CompressionLevel.ZSTD_BEST_SPEED,
        collections=collections,
        bytes=5,
        stored_bytes=10,
        file_count=1,
        pause_ms=1.5,
    )


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    collections=st.lists(st.sampled_from(["a", "b", "ü-col", "d"]), unique=True, max_size=4).flatmap(
        lambda names: st.tuples(*(_collection(n) for n in names))
    )
)
def test_a_spooled_descriptor_reads_back_as_the_whole_one(
    tmp_path: Path, collections: tuple[CollectionEntry, ...]
) -> None:
    whole = descriptor(list(collections))
    store = FilesystemStorage(root=tmp_path / "store")
    repo = BackupRepository(store)
    with EntrySpool(tmp_path) as spool:
        for col in collections:
            for entry in col.entries:
                spool.add(col.name, entry)
        header = whole.model_copy(
            update={"collections": [c.model_copy(update={"entries": []}) for c in collections]}
        )
        repo.write_node_spooled(header, spool)
    raw = store.get_bytes(BackupLayout("b").node_descriptor("n0"))
    json.loads(raw)  # one JSON document
    assert repo.node_descriptor("b", "n0") == whole


def test_a_spool_refuses_a_collection_it_left(tmp_path: Path) -> None:
    entry = Entry.make("a", EntryType.DIR, mode=0o755, mtime_ns=0)
    with EntrySpool(tmp_path) as spool:
        spool.add("a", entry)
        spool.add("b", Entry.make("b", EntryType.DIR, mode=0o755, mtime_ns=0))
        with pytest.raises(ValueError, match='collection "a" was spooled already'):
            spool.add("a", entry)


def _bare(name: str) -> CollectionEntry:
    """A collection as ``write_node_spooled`` takes it: no entries (the spool's), no chunks."""
    return CollectionEntry(name=name, bytes=0, entries=[], chunks=[])


def test_a_descriptor_that_is_not_the_spools_is_refused(tmp_path: Path) -> None:
    repo = BackupRepository(FilesystemStorage(root=tmp_path / "store"))
    entry = Entry.make("a", EntryType.DIR, mode=0o755, mtime_ns=0)
    with EntrySpool(tmp_path) as spool:
        spool.add("a", entry)
        with pytest.raises(ValueError, match="not the spool's"):
            repo.write_node_spooled(descriptor([_bare("b")]), spool)
        carrying = CollectionEntry(name="a", bytes=0, entries=[entry], chunks=[])
        with pytest.raises(ValueError, match="carry entries"):
            repo.write_node_spooled(descriptor([carrying]), spool)


class _Result:
    def __init__(self, n: int) -> None:
        self.n = n


def test_results_are_consumed_in_job_order_and_not_kept() -> None:
    def job(n: int) -> _Result:
        time.sleep(0.001 * ((n * 7) % 5))  # finish out of order
        return _Result(n)

    seen: list[int] = []
    refs: list[weakref.ref[_Result]] = []
    kept: list[int] = []

    def consume(r: _Result) -> None:
        gc.collect()  # every result consumed before this one is gone already, not only at the end
        kept.extend(ref().n for ref in refs if ref() is not None)  # type: ignore[union-attr]
        seen.append(r.n)
        refs.append(weakref.ref(r))

    jobs = [lambda n=n: job(n) for n in range(40)]
    assert run_chunks(4, jobs, threading.Event(), consume) == []
    assert seen == list(range(40))
    assert kept == []


def test_a_slow_job_holds_back_at_most_a_window_of_jobs_after_it() -> None:
    lock = threading.Lock()
    started: list[int] = []
    consumed: list[int] = []
    ahead: list[int] = []  # at each start: jobs started and not consumed, this one included

    def job(n: int) -> int:
        with lock:
            started.append(n)
            ahead.append(len(started) - len(consumed))
        time.sleep(0.2 if n == 0 else 0.001)  # the first is slow: the others end before it
        return n

    def consume(n: int) -> None:
        with lock:
            consumed.append(n)

    assert run_chunks(2, [lambda n=n: job(n) for n in range(30)], threading.Event(), consume, window=5) == []
    assert consumed == list(range(30))
    assert max(ahead) == 5  # reached while the first job ran, never passed


def test_without_a_window_every_job_may_start_at_once() -> None:
    gate = threading.Event()
    started: list[int] = []

    def job(n: int) -> int:
        started.append(n)
        if n == 0:
            gate.wait(5)  # the first job waits until the last one has run
        elif n == 9:
            gate.set()
        return n

    assert run_chunks(2, [lambda n=n: job(n) for n in range(10)], threading.Event()) == list(range(10))
    assert sorted(started) == list(range(10)) and gate.is_set()


def test_a_failing_consumer_stops_the_jobs_and_is_raised() -> None:
    cancelled = threading.Event()
    started: list[int] = []

    def job(n: int) -> int:
        started.append(n)
        time.sleep(0.01)
        return n

    def consume(n: int) -> None:
        if n == 2:
            raise RuntimeError("consumer failed at 2")

    with pytest.raises(RuntimeError, match="consumer failed at 2"):
        run_chunks(1, [lambda n=n: job(n) for n in range(200)], cancelled, consume)
    assert cancelled.is_set()
    assert len(started) < 200


def test_a_failing_job_is_raised_with_or_without_a_consumer() -> None:
    def job(n: int) -> int:
        if n == 5:
            raise OSError("job 5 failed")
        return n

    for consume in (None, lambda _n: None):
        cancelled = threading.Event()
        with pytest.raises(OSError, match="job 5 failed"):
            run_chunks(2, [lambda n=n: job(n) for n in range(20)], cancelled, consume)
        assert cancelled.is_set()


def test_a_collection_the_spool_lacks_is_written_without_entries(tmp_path: Path) -> None:
    repo = BackupRepository(FilesystemStorage(root=tmp_path / "store"))
    root = Entry.make("a", EntryType.DIR, mode=0o755, mtime_ns=0)
    with EntrySpool(tmp_path) as spool:
        spool.add("a", root)
        repo.write_node_spooled(descriptor([_bare("a"), _bare("e")]), spool)
    read = repo.node_descriptor("b", "n0")
    assert read is not None and [(c.name, c.entries) for c in read.collections] == [("a", [root]), ("e", [])]


def test_a_corrupt_entry_is_named_by_its_first_field_in_declared_order(tmp_path: Path) -> None:
    store = FilesystemStorage(root=tmp_path / "store")
    body = json.loads(descriptor([]).model_dump_json(by_alias=True))
    body["collections"] = [
        {"name": "col", "bytes": 0, "chunks": [], "entries": [{"path": "col/x", "type": "fil", "mode": -1}]}
    ]
    store.put_bytes(BackupLayout("b").node_descriptor("n0"), json.dumps(body).encode())
    with pytest.raises(
        CorruptDescriptor, match=r"entries\.0\.type: Input should be .* \(and 1 more problems\)"
    ):
        BackupRepository(store).node_descriptor("b", "n0")
