"""A workload hook's listing read as a stream (``agent.hook.Listing``): the same files and hold as the
whole answer parsed by ``json`` and the schema models, and the same answers refused."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shardkeeper.agent.hook import HookError, Listing
from shardkeeper.api.hook import HeldWrites, HookFile, HookFileList
from shardkeeper.jsonstream import READ_BYTES

#: The first text a process draws builds Hypothesis's table of characters (over a second, on a fresh
#: checkout without .hypothesis/): not slow generation, which the health check is for.
SLOW_START = settings(suppress_health_check=[HealthCheck.too_slow])


# Names as a workload lists them: any text, lone surrogates included (an undecodable byte, PEP 383).
names = st.text(
    st.characters(codec=None, exclude_categories=("Cs",)) | st.sampled_from("\udcff\udc80\ud800\udbff/"),
    min_size=1,
)
files = st.fixed_dictionaries(
    {"path": names, "immutable": st.booleans()},
    optional={"size": st.none() | st.integers(0, 2**64), "extra": st.recursive(st.integers(), st.lists)},
)
holds = st.fixed_dictionaries(
    {},
    optional={
        "heldFrom": st.sampled_from(["2026-12-01T10:00:00Z", "2026-12-01T10:00:00.5+01:00"]),
        "heldUntil": st.none() | st.just("2026-12-01T10:00:01Z"),
        "heldMs": st.floats(0, 1e6) | st.integers(0, 10**6),
        "expired": st.booleans(),
        "workload": st.recursive(
            st.none() | st.text(), lambda c: st.lists(c) | st.dictionaries(st.text(), c)
        ),
    },
)


def _read(answer: dict[str, Any]) -> tuple[HeldWrites, list[HookFile] | None]:
    listed = Listing.parse("prepare", json.dumps(answer).encode())
    got = list(listed.files())
    assert listed.count == (None if answer.get("files") is None else len(got))
    return listed.held, (got if listed.count is not None else None)


@SLOW_START
@given(holds, st.none() | st.lists(files, max_size=8))
def test_a_listing_reads_as_the_whole_answer_parsed_by_the_models(hold: dict[str, Any], listed: Any) -> None:
    answer = {**hold, "files": listed} if listed is not None else hold
    whole = HookFileList.model_validate(json.loads(json.dumps(answer)))
    held, got = _read(answer)
    assert held == HeldWrites.model_validate(whole.model_dump(include=set(HeldWrites.model_fields)))
    assert got == whole.files


def test_a_blank_answer_lists_nothing() -> None:
    listed = Listing.parse("resume", b" \n")
    assert (listed.held, listed.count, list(listed.files())) == (HeldWrites(), None, [])


@pytest.mark.parametrize(
    ("body", "why"),
    [
        (b"[]", "not a JSON object"),
        (b'"files"', "not a JSON object"),
        (b'{"files": [] } trailing', "Extra data"),
        (b'{"files": [', "Expecting value"),
        (b'{"files": [], "x": "\\udcff", "files": 3}', "files: given twice"),  # read by json, same rules
        (b'{"files": {"path": "c/a"}}', "files: not a list"),
        (b'{"files": "c/a"}', "files: not a list"),
        (b'{"files": [], "files": []}', "files: given twice"),
        (b'{"files": [], "files.item": {"path": "c/x", "immutable": true}}', 'field named "files.item"'),
        (b'{"": {"files": [{"path": "c/x", "immutable": true}]}, "files": []}', 'field named ""'),
        (b'{"files": [], "x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "nested deeper than 64 levels"),
        (b'{"files": [], "heldMs": -1}', "held_ms|heldMs"),
        (b'{"files": [], "heldFrom": {"at": "2026-12-01T10:00:00Z"}}', "held_from|heldFrom"),
        (b'{"files": [], "expired": [true]}', "expired"),
        (b'{"files": ["c/\xff"]}', "can't decode byte 0xff"),
        (b'{"files": [], "x": "\\udcff", "y": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "recursion"),
    ],
)
def test_an_answer_that_is_not_a_file_list_is_refused_whole(body: bytes, why: str) -> None:
    with pytest.raises(
        HookError, match=f"(?s)workload hook prepare answered an invalid file list: .*({why})"
    ):
        Listing.parse("prepare", body)


_ODD = b'"odd": "\\ud83d\\ude00"'  # an escaped high surrogate: the answer is read by json


@pytest.mark.parametrize(
    ("fields", "why"),
    [
        (b'"files": [], "files": [{"path": "c/a", "immutable": true}]', "files: given twice"),
        (b'"files": [], "files.item": {"path": "c/x", "immutable": true}', 'a field named "files.item"'),
        (b'"": {"files": [{"path": "c/x", "immutable": true}]}, "files": []', 'a field named ""'),
        (b'"files": [], "x": ' + b"[" * 64 + b"]" * 64, "nested deeper than 64 levels"),
    ],
)
@pytest.mark.parametrize("where", ["before", "after", "a block after"])
def test_an_answer_read_by_json_is_held_to_the_same_rules(fields: bytes, why: str, where: str) -> None:
    pad = b'"pad": "' + b"a" * READ_BYTES + b'", '
    body = {
        "before": b"{" + _ODD + b", " + fields + b"}",
        "after": b"{" + fields + b", " + _ODD + b"}",
        "a block after": b"{" + fields + b", " + pad + _ODD + b"}",
    }[where]
    for answer in (body, b"{" + fields + b"}"):  # and the same refusal as yajl's, without it
        with pytest.raises(HookError, match=f"invalid file list: {why}"):
            Listing.parse("prepare", answer)
    deep = b"[" * 63 + b"]" * 63  # 64 levels with the answer's object: allowed either way
    assert Listing.parse("prepare", b"{" + _ODD + b', "files": [], "x": ' + deep + b"}").count == 0


@pytest.mark.parametrize(
    "item",
    [
        '"c/a"',
        "3",
        '{"path": 3, "immutable": true}',
        '{"path": "c/a"}',
        '{"path": "c/a", "immutable": true, "size": -1}',
    ],
)
def test_an_invalid_file_is_refused_naming_it_when_it_is_read(item: str) -> None:
    listed = Listing.parse(
        "resume", f'{{"files": [{{"path": "c/ok", "immutable": false}}, {item}]}}'.encode()
    )
    assert listed.count == 2
    read = listed.files()
    assert next(read).path == "c/ok"
    with pytest.raises(HookError, match=r"workload hook resume listed an invalid file \(files\[1\]\)"):
        next(read)


def test_the_files_are_read_once() -> None:
    listed = Listing.parse("prepare", b'{"files": [{"path": "c/a", "immutable": true}]}')
    assert [f.path for f in listed.files()] == ["c/a"]
    with pytest.raises(RuntimeError, match="read already"):
        next(listed.files())


def test_an_answer_may_nest_64_levels_and_name_the_holds_fields_either_way() -> None:
    deep = b"[" * 63 + b"]" * 63  # inside the answer's object: 64 levels
    listed = Listing.parse("prepare", b'{"files": [], "x": ' + deep + b', "held_ms": 5, "heldFrom": null}')
    assert (listed.count, listed.held) == (0, HeldWrites(held_ms=5))
    with pytest.raises(HookError, match="held_ms"):
        Listing.parse("prepare", b'{"files": [], "held_ms": -5}')


def test_what_yajl_refuses_and_json_reads_is_read_as_json_does() -> None:
    # Python's json writes these (a name that is not UTF-8, a lone surrogate of any kind, NaN in a
    # field of its own, an integer past 64 bits); yajl refuses each of them.
    body = (
        b'{"files": [{"path": "c/\\udcff", "immutable": true}, {"path": "c/\\ud800x", "immutable": false,'
        b' "size": 18446744073709551616}], "stats": NaN, "heldMs": 2.5}'
    )
    listed = Listing.parse("resume", body)
    assert (listed.count, listed.held) == (2, HeldWrites(held_ms=2.5))
    assert list(listed.files()) == [
        HookFile(path="c/\udcff", immutable=True),
        HookFile(path="c/\ud800x", immutable=False, size=2**64),
    ]


@pytest.mark.parametrize(
    ("escaped", "name"),
    [
        (rb"c/\ud800x", "c/\ud800x"),  # a lone high surrogate: yajl made it "c/?x", another file
        (rb"c/\ud800\u0041", "c/\ud800A"),  # yajl made it U+10041
        (rb"c/\ud83d\ude00", "c/\U0001f600"),  # a valid pair, as json.dumps escapes it
    ],
)
def test_an_escaped_high_surrogate_is_read_as_json_reads_it(escaped: bytes, name: str) -> None:
    listed = Listing.parse("prepare", b'{"files": [{"path": "' + escaped + b'", "immutable": true}]}')
    assert [f.path for f in listed.files()] == [name]


def test_a_huge_name_is_read_whole_in_one_piece() -> None:
    name = "c/" + "n" * 20_000_000  # refused later (names are at most 255 bytes), but read first
    listed = Listing.parse("prepare", json.dumps({"files": [{"path": name, "immutable": True}]}).encode())
    assert [f.path for f in listed.files()] == [name]


@pytest.mark.parametrize("at", range(-4, 2))
def test_an_escaped_high_surrogate_across_two_reads_is_found(at: int) -> None:
    """The escape's bytes split between two blocks of ``READ_BYTES`` (each offset of the split)."""
    head = b'{"files": [{"path": "c/'
    pad = b"p" * (READ_BYTES + at - len(head))
    body = head + pad + rb'\ud800x", "immutable": true}]}'
    assert body.index(rb"\ud800") == READ_BYTES + at
    listed = Listing.parse("prepare", body)
    assert [f.path for f in listed.files()] == ["c/" + "p" * len(pad) + "\ud800x"]


def test_a_spooled_answer_is_read_from_its_file_and_closed(tmp_path: Path) -> None:
    with (tmp_path / "answer").open("w+b") as spool:
        spool.write(json.dumps({"files": [{"path": "c/a", "immutable": True}], "heldMs": 3}).encode())
        listed = Listing.parse("resume", spool)
        assert (listed.count, listed.held) == (1, HeldWrites(held_ms=3))
        assert [f.path for f in listed.files()] == ["c/a"]
        assert spool.closed


@pytest.mark.parametrize("odd", [b"\x0b", b"\x0c"])
def test_a_vertical_tab_or_form_feed_is_refused_as_json_refuses_it(odd: bytes) -> None:
    """yajl reads them as whitespace; JSON has them only escaped, in strings."""
    with pytest.raises(HookError, match="answered an invalid file list"):
        Listing.parse("prepare", b'{"files":' + odd + b'[{"path": "c/a", "immutable": true}]}')
    assert Listing.parse("prepare", b" " + odd + b"\n").count is None  # blank, as before


@pytest.mark.parametrize("answer", [b'{"heldMs": 1}', b'{"files": null}'])
def test_an_answer_without_files_closes_its_file_at_once(tmp_path: Path, answer: bytes) -> None:
    with (tmp_path / "answer").open("w+b") as spool:
        spool.write(answer)
        listed = Listing.parse("resume", spool)
        assert listed.count is None and spool.closed
