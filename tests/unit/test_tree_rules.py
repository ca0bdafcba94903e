"""The one rule (archive.tree.check_tree), one situation per test, and the descriptor's names."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import TypeAdapter

from shardkeeper.api.common import collection_name_problem
from shardkeeper.api.descriptors import Entry, EntryType, decode_name, dump_entry, encode_name
from shardkeeper.archive.source import SourceEntry
from shardkeeper.archive.tree import check_tree
from shardkeeper.errors import UnsafeArchiveEntry


def _e(name: str, type_: EntryType = EntryType.FILE, target: str | None = None) -> Entry:
    extra = {"sha256": "0" * 64, "chunk": 1} if type_ is EntryType.FILE else {}
    return Entry.make(name, type_, target=target, mode=0o644, **extra)


ROOT = _e("col", EntryType.DIR)


def test_a_well_formed_tree_passes() -> None:
    check_tree(
        "col",
        [
            ROOT,
            _e("col/d", EntryType.DIR),
            _e("col/d/f"),
            _e("col/d/h", EntryType.HARDLINK, "col/d/f"),
            _e("col/l", EntryType.SYMLINK, "/anywhere/../at all"),
            _e("col/odd\\name\n-x \udcff"),
        ],
    )


@pytest.mark.parametrize(
    ("entries", "message"),
    [
        ([_e("col/f")], "has no directory entry"),
        ([ROOT, _e("col/../x")], "outside the collection"),
        ([ROOT, _e("other/x")], 'outside collection "col"'),
        ([ROOT, _e("col//x")], "outside the collection"),
        ([ROOT, _e("col/f"), _e("col/f")], "appears twice"),
        ([ROOT, _e("col/l", EntryType.SYMLINK, "x"), _e("col/l/f")], "not inside a directory"),
        ([ROOT, _e("col/f"), _e("col/f/g")], "not inside a directory"),
        ([ROOT, _e("col/missing/f")], "not inside a directory"),
        ([ROOT, _e("col/h", EntryType.HARDLINK, "col/nothing")], "not a regular file of the collection"),
        ([ROOT, _e("col/h", EntryType.HARDLINK, "other/f")], 'outside collection "col"'),
        ([ROOT, _e("col/l", EntryType.SYMLINK, "")], "invalid link target"),
        ([ROOT, _e("col/" + "n" * 256)], "longer than 255 bytes"),
        ([ROOT, _e("col/" + "/".join(["d" * 200] * 16))], "longer than 3072 bytes"),
    ],
)
def test_what_a_restore_would_refuse_the_backup_refuses(entries: list[Entry], message: str) -> None:
    with pytest.raises(UnsafeArchiveEntry, match=message):
        check_tree("col", entries)


def test_format_1_lists_files_only() -> None:
    check_tree("col", [_e("col/sub/f")], dirs_listed=False)
    with pytest.raises(UnsafeArchiveEntry, match="not inside a directory"):
        check_tree("col", [_e("col/f"), _e("col/f/g")], dirs_listed=False)


@pytest.mark.parametrize("name", [".hidden", "a/b", "a\x00b", "\udcff", "x" * 256, ""])
def test_names_that_cannot_be_collections(name: str) -> None:
    assert collection_name_problem(name) is not None


@pytest.mark.parametrize("name", ["my coll", "données", "-dash", "logs[2026]", "a.b", "x" * 255])
def test_names_that_are_collections(name: str) -> None:
    assert collection_name_problem(name) is None


@given(st.binary(min_size=1, max_size=300))
def test_every_name_round_trips_through_the_descriptor(raw: bytes) -> None:
    name = raw.decode("utf-8", "surrogateescape")
    text, b64 = encode_name(name)
    assert (text is None) != (b64 is None)
    back = decode_name(text, b64, what="test")
    assert back.encode("utf-8", "surrogateescape") == raw
    entry = Entry.make("col/" + name.replace("/", "_"), EntryType.DIR, mode=0o755)
    assert TypeAdapter(Entry).validate_json(dump_entry(entry)) == entry


def test_a_tree_deeper_than_the_limit_is_refused_naming_it() -> None:
    deep = "col/" + "/".join(["d"] * 513) + "/f"
    with pytest.raises(UnsafeArchiveEntry, match="more than 512 directories deep"):
        check_tree("col", [ROOT, _e(deep)])


@pytest.mark.parametrize(
    ("name", "target", "message"),
    [
        ("col/\ud800", None, '"col/\\ud800" is not a path: a surrogate that stands for no byte'),
        ("col/\udcc3\udca9", None, '"col/\\xc3\\xa9" is not a path as the system gives it'),
        ("col/l", "\ud800", '"col/l": invalid link target'),
    ],
)
def test_a_name_no_path_decodes_to_is_refused_naming_it(name: str, target: str | None, message: str) -> None:
    """A name whose bytes are UTF-8 comes as its characters (PEP 383 escapes only the bytes that
    are not), so that one file cannot be listed under two names; a surrogate that stands for no
    byte is no path at all. Refused with the name shown, not a ``UnicodeEncodeError``."""
    type_ = EntryType.FILE if target is None else EntryType.SYMLINK
    entries = [SourceEntry("col", EntryType.DIR, 0o755, 0), SourceEntry(name, type_, 0o644, 0, link=target)]
    with pytest.raises(UnsafeArchiveEntry, match=re.escape(message)):
        check_tree("col", entries)
    check_tree("col", [entries[0], SourceEntry("col/\udcc3", EntryType.FILE, 0o644, 0)])  # a lone byte
