"""``SourceTree``: a collection's frozen entries in columns read back exactly as they were added."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shardkeeper.api.descriptors import EntryType
from shardkeeper.archive.source import Names, PathIndex, SourceEntry, SourceTree

NS = 1_000_000_000


#: The first text a process draws builds Hypothesis's table of characters (over a second, on a fresh
#: checkout without .hypothesis/): not slow generation, which the health check is for.
SLOW_START = settings(suppress_health_check=[HealthCheck.too_slow])


@st.composite
def entries(draw: st.DrawFn) -> SourceEntry:
    type_ = draw(st.sampled_from(EntryType))
    return SourceEntry(
        name=draw(st.text(min_size=1, max_size=12)),
        type=type_,
        mode=draw(st.integers(0, 0o777)),
        # Any 64-bit time_t in nanoseconds: before 1970, and past 2262 (more than 2**63 ns).
        mtime_ns=draw(st.integers(-(2**63) * NS, (2**63 - 1) * NS + NS - 1)),
        uid=draw(st.integers(0, 2**32 - 1)),
        gid=draw(st.integers(0, 2**32 - 1)),
        size=draw(st.integers(0, 2**63 - 1)) if type_ is EntryType.FILE else 0,
        link=draw(st.none() | st.text(min_size=1, max_size=8)),
        linked=draw(st.booleans()),
        ino=draw(st.integers(0, 2**64 - 1)),
    )


@SLOW_START
@given(st.lists(entries(), max_size=20))
def test_entries_read_back_as_they_were_added(added: list[SourceEntry]) -> None:
    tree = SourceTree(added)
    assert len(tree) == len(added)
    assert list(tree) == added
    assert [tree[i] for i in range(-len(added), len(added))] == added + added
    assert tree[1:-1] == added[1:-1]
    assert list(tree.data_sizes) == [e.data_size for e in added]
    assert tree.data_bytes == sum(e.data_size for e in added)
    assert tree.files == sum(e.type is EntryType.FILE for e in added)


@SLOW_START
@given(st.lists(entries(), min_size=1, max_size=20), st.data())
def test_an_entry_replaced_or_left_out_leaves_the_others_as_they_were(
    added: list[SourceEntry], data: st.DataObject
) -> None:
    tree = SourceTree(added)
    index = data.draw(st.integers(0, len(added) - 1))
    other = data.draw(entries())
    tree[index] = other
    expected = [*added[:index], other, *added[index + 1 :]]
    assert list(tree) == expected
    assert list(tree.without({other.name})) == [e for e in expected if e.name != other.name]
    assert list(tree) == expected  # without() copies


def test_a_value_out_of_range_is_refused_and_leaves_the_tree_as_it_was() -> None:
    first = SourceEntry(name="c", type=EntryType.DIR, mode=0o755, mtime_ns=5, link=None)
    tree = SourceTree([first])
    for bad in ({"uid": 2**32}, {"size": 2**63}, {"ino": 2**64}, {"mtime_ns": 2**63 * NS}, {"gid": -1}):
        fields: dict[str, int] = {"mtime_ns": 0, **bad}
        entry = SourceEntry(name="c/f", type=EntryType.FILE, mode=0o644, **fields)  # type: ignore[arg-type]
        with pytest.raises(OverflowError):
            tree.append(entry)
        with pytest.raises(OverflowError):
            tree[0] = entry
        assert list(tree) == [first]


def test_sizes_are_kept_for_regular_files_only() -> None:
    link = SourceEntry(name="c/l", type=EntryType.SYMLINK, mode=0o777, mtime_ns=0, size=12, link="x")
    assert SourceTree([link])[0].size == 0


def test_indexing_past_either_end_raises() -> None:
    tree = SourceTree([SourceEntry(name="c", type=EntryType.DIR, mode=0o755, mtime_ns=0)])
    entry = tree[0]
    for index in (1, -2):
        with pytest.raises(IndexError):
            tree[index]
        with pytest.raises(IndexError):
            tree[index] = entry
    link = SourceEntry(name="c/l", type=EntryType.SYMLINK, mode=0o777, mtime_ns=0, link="x")
    tree[-1] = link  # a negative index is the same entry as its positive one, link included
    assert list(tree) == [link]
    tree[0] = entry
    assert list(tree) == [entry]


def test_a_value_of_another_type_is_refused_and_leaves_the_tree_as_it_was() -> None:
    first = SourceEntry(name="c", type=EntryType.DIR, mode=0o755, mtime_ns=5, linked=2)  # type: ignore[arg-type]
    tree = SourceTree([first])
    assert tree[0].linked is True
    for bad in ({"uid": None}, {"ino": "1"}, {"size": 1.5}):
        fields: dict[str, object] = {"mtime_ns": 0, **bad}
        entry = SourceEntry(name="c/f", type=EntryType.FILE, mode=0o644, **fields)  # type: ignore[arg-type]
        with pytest.raises(TypeError):
            tree.append(entry)
        assert len(tree) == 1 and tree[0].name == "c"
    link = SourceEntry(name=None, type=EntryType.SYMLINK, mode=0o777, mtime_ns=0, link="x")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="name"):
        tree.append(link)
    tree.append(first)
    # Nothing of the refused entry is left, its link either.
    assert [(e.name, e.type, e.link) for e in tree] == [("c", EntryType.DIR, None)] * 2


#: Any ``str``: lone surrogates too (a name that is not UTF-8 reads as one, PEP 383).
ANY_TEXT = st.text(st.characters(exclude_categories=()), max_size=8)


@SLOW_START
@given(st.lists(ANY_TEXT, max_size=20), st.data())
def test_names_read_back_as_they_were_added_and_replaced(added: list[str], data: st.DataObject) -> None:
    names = Names(added)
    assert list(names) == added
    assert [names[i] for i in range(-len(added), len(added))] == added + added
    assert names[1:-1] == added[1:-1]
    assert list(names.between(min(1, len(added)), len(added))) == added[1:]
    if added:
        index = data.draw(st.integers(-len(added), len(added) - 1))
        other = data.draw(ANY_TEXT)  # shorter, longer or as long in UTF-8: the later names move
        names[index] = other
        added[index] = other
        assert list(names) == added
        assert [names[i] for i in range(len(added))] == added
    for index in (len(added), -len(added) - 1):
        with pytest.raises(IndexError):
            names[index]
        with pytest.raises(IndexError):
            names[index] = "x"
    for start, stop in ((-1, 0), (0, len(added) + 1), (1, 0)):
        with pytest.raises(IndexError, match=r"Names\.between"):
            names.between(start, stop)  # at once, not when first read
    with pytest.raises(TypeError, match="int index, not slice"):
        names[0:1] = ["x"]  # type: ignore[index, assignment]
    assert list(names) == added


@SLOW_START
@given(st.lists(ANY_TEXT, max_size=40), st.lists(ANY_TEXT, max_size=10))
def test_a_path_is_found_at_its_first_row_and_nothing_else_is_found(
    listed: list[str], others: list[str]
) -> None:
    index = PathIndex(Names(listed))
    for name in listed:
        assert index.row(name) == listed.index(name)
    for name in others:
        assert index.row(name) == (listed.index(name) if name in listed else None)
    # A name that is another's prefix, or shares its bytes at another row's start, is not it.
    for name in listed:
        for longer in (name + "x", "x" + name, name[:-1]):
            assert index.row(longer) == (listed.index(longer) if longer in listed else None)


@SLOW_START
@given(st.lists(ANY_TEXT, max_size=40), st.integers(0, 40))
def test_paths_added_one_by_one_are_found_as_those_indexed_at_once(listed: list[str], first: int) -> None:
    """The first ``first`` names indexed when the index is made, the others added as they come
    (the table grows as it fills): each is found at its first row, the next not before it is added."""
    first = min(first, len(listed))
    names = Names(listed[:first])
    index = PathIndex(names)
    for row in range(first, len(listed)):
        names.append(listed[row])
        if listed[row] not in listed[:row]:
            assert index.row(listed[row]) is None
        index.add(row)
        for name in listed[: row + 1]:
            assert index.row(name) == listed.index(name)
    with pytest.raises(ValueError, match="the next row to index"):
        index.add(len(listed) + 1)
    with pytest.raises(ValueError, match="not appended to the names yet"):
        index.add(len(listed))
