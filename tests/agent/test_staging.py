"""What a workload hook lists is checked before anything is staged: a path that is not there, or
below something that is not a directory, fails the snapshot naming what the hook listed. The
listing is staged in its order and not kept once staged."""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from shardkeeper.agent import staging
from shardkeeper.agent.hook import Listing
from shardkeeper.agent.snapshot import freeze, stage
from shardkeeper.agent.staging import Frozen, SnapshotError, _Stager, freeze_hookless, freeze_listed
from shardkeeper.api.descriptors import EntryType
from shardkeeper.api.hook import HeldWrites, HookFile, HookFileList


@pytest.fixture
def data(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    (root / "col" / "sub").mkdir(parents=True)
    (root / "col" / "sub" / "000001.sst").write_bytes(b"table")
    (root / "col" / "plain").write_bytes(b"not a directory")
    return root


def _freeze(data: Path, *paths: str) -> None:
    files = [HookFile(path=p, immutable=True) for p in paths]
    freeze_listed(data, data.parent / "staging", files, ["col"])


def test_listed_files_under_listed_directories_are_staged(data: Path) -> None:
    _freeze(data, "col/sub/000001.sst")
    assert (data.parent / "staging" / "col" / "sub" / "000001.sst").read_bytes() == b"table"


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("col/sub/gone.sst", 'workload hook listed "col/sub/gone.sst", which does not exist'),
        (
            "col/missing/000001.sst",
            'workload hook listed "col/missing/000001.sst", below "col/missing", which does not exist',
        ),
        (
            "col/missing/deeper/x",
            'workload hook listed "col/missing/deeper/x", below "col/missing", which does not exist',
        ),
        ("col/plain/x", 'workload hook listed "col/plain/x", below "col/plain", not a directory'),
    ],
)
def test_a_listed_path_that_is_not_there_fails_naming_it(data: Path, path: str, message: str) -> None:
    with pytest.raises(SnapshotError) as failed:
        _freeze(data, path)
    assert str(failed.value) == message
    assert str(data) not in str(failed.value)  # the hook's path, not the agent's


@pytest.mark.parametrize(
    ("paths", "staged"),
    [
        # A file listed twice, and a directory listed after it was recorded as a file's parent.
        (["col/sub/000001.sst", "col/sub", "col/sub/000001.sst"], ["col", "col/sub", "col/sub/000001.sst"]),
        # A directory listed before its file, and twice.
        (["col/sub", "col/sub", "col/sub/000001.sst"], ["col", "col/sub", "col/sub/000001.sst"]),
        (
            ["col/plain", "col/sub/000001.sst", "col/plain"],
            ["col", "col/plain", "col/sub", "col/sub/000001.sst"],
        ),
    ],
)
def test_a_path_listed_again_is_staged_once_where_it_first_came(
    data: Path, paths: list[str], staged: list[str]
) -> None:
    files = [HookFile(path=p, immutable=True) for p in paths]
    frozen = freeze_listed(data, data.parent / "staging", files, ["col"])
    assert [e.name for e in frozen.entries["col"]] == staged


@pytest.mark.parametrize(
    ("paths", "message"),
    [
        (["col/\ud800"], '"col/\\ud800" is not a path: a surrogate that stands for no byte'),
        (["col/\u00e9", "col/\udcc3\udca9"], '"col/\\xc3\\xa9" is not a path as the system gives it'),
        (["other/\ud800"], 'listed "other/\\ud800", outside the requested collections'),
    ],
)
def test_a_listed_name_no_path_decodes_to_fails_naming_it(data: Path, paths: list[str], message: str) -> None:
    """The same file as two names (its UTF-8 as surrogates), or a surrogate that stands for no byte:
    the hook's error, naming the path as the hook gave it, not a ``UnicodeEncodeError``."""
    (data / "col" / "\u00e9").write_bytes(b"e")
    with pytest.raises(SnapshotError) as failed:
        _freeze(data, *paths)
    assert message in str(failed.value)


def test_only_a_file_with_other_names_is_remembered_for_hard_links(tmp_path: Path) -> None:
    """A hookless immutable file is staged as a hard link, which gives its inode a second name:
    that name is not the data's, so the file is not kept for hard-link matching (~200 bytes each:
    a node of a million SST files would hold them all); a file the data gives two names is."""
    data = tmp_path / "data"
    (data / "col").mkdir(parents=True)
    for name in ("a.sst", "b.sst"):
        (data / "col" / name).write_bytes(name.encode())
    os.link(data / "col" / "a.sst", data / "col" / "c.sst")
    stager = _Stager(data, tmp_path / "staging", hookless=True)
    stager.collection("col")
    stager.walk("col", ("*.sst",))
    kinds = {e.name: e.type for e in stager.entries["col"]}
    assert kinds["col/b.sst"] is EntryType.FILE
    assert sorted([kinds["col/a.sst"], kinds["col/c.sst"]]) == sorted([EntryType.FILE, EntryType.HARDLINK])
    assert list(stager._inodes.values()) in (["col/a.sst"], ["col/c.sst"])  # b.sst is not kept


class _ListingHook:
    """A workload hook that lists the files it was given (prepare) and answers every release."""

    def __init__(self, paths: list[str]) -> None:
        answer = HookFileList(files=[HookFile(path=p, immutable=True) for p in paths])
        self.answer = Listing.parse("prepare", answer.model_dump_json(by_alias=True).encode())

    async def prepare(self, op_id: str, collections: list[str], **_: object) -> Listing:
        return self.answer

    async def release(self, op_id: str) -> HeldWrites:
        return HeldWrites()


def test_a_hooks_listing_is_staged_in_order_and_not_kept(data: Path) -> None:
    (data / "col" / "sub" / "000002.sst").write_bytes(b"other")
    hook = _ListingHook(["col/sub/000002.sst", "col/sub/000001.sst"])
    frozen = asyncio.run(
        freeze(
            op_id="b",
            collections=["col"],
            data_root=data,
            staging=data.parent / "staging",
            hook=hook,  # type: ignore[arg-type]
            immutable_patterns=(),
            hold_timeout=60,
        )
    )
    names = [e.name for e in frozen.entries["col"]]
    assert names == ["col", "col/sub", "col/sub/000002.sst", "col/sub/000001.sst"]
    # Neither the answer nor the hold keeps the million files a workload may list.
    with pytest.raises(RuntimeError, match="read already"):
        next(hook.answer.files())
    assert frozen.hold is not None and type(frozen.hold.listed) is HeldWrites


def test_a_resumed_listing_is_staged_and_dropped(data: Path) -> None:
    listed = _ListingHook(["col/sub/000001.sst"]).answer
    frozen = Frozen(root=data.parent / "staging", entries={})
    stage(frozen, data, listed, ["col"])
    assert [e.name for e in frozen.entries["col"]] == ["col", "col/sub", "col/sub/000001.sst"]
    with pytest.raises(RuntimeError, match="read already"):  # not held through the upload
        next(listed.files())


@pytest.mark.parametrize("after", ["a symbolic link", "a directory", "nothing"])
def test_a_directory_gone_before_it_is_walked_leaves_the_recheck_on_the_right_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, after: str
) -> None:
    # c/d is recorded when c is listed, then deleted (by the database) before it is walked; c/e.sst
    # is hard-linked (immutable), then changes before the re-check; what follows it in the walk is
    # what a shifted index would have re-checked instead.
    data = tmp_path / "data"
    (data / "c" / "d").mkdir(parents=True)
    (data / "c" / "d" / "in.sst").write_bytes(b"in")
    (data / "c" / "e.sst").write_bytes(b"before")
    if after == "a symbolic link":
        (data / "c" / "f-link").symlink_to("e.sst")
    elif after == "a directory":
        (data / "c" / "f-dir").mkdir()
    real_scandir, real_lstat = os.scandir, os.lstat
    linked: list[str] = []

    def scandir(path: Any) -> Any:  # os.scandir itself: rmtree calls it too, with descriptors
        if isinstance(path, str) and path.endswith("/c/d"):
            shutil.rmtree(path)
        return real_scandir(path)

    def lstat(path: Any, *args: Any, **kwargs: Any) -> os.stat_result:
        st = real_lstat(path, *args, **kwargs)
        if str(path).endswith("staging/c/e.sst") and not linked:  # linked and noted: now it changes
            linked.append(str(path))
            (data / "c" / "e.sst").write_bytes(b"after, longer")
        return st

    monkeypatch.setattr(staging.os, "scandir", scandir)
    monkeypatch.setattr(staging.os, "lstat", lstat)
    frozen = freeze_hookless(data, tmp_path / "staging", ["c"], ("*.sst",))
    entries = {e.name: e for e in frozen.entries["c"]}
    assert "c/d" not in entries and [p for p, _ in frozen.skipped] == ["c/d"]
    assert entries["c/e.sst"].size == len(b"after, longer") and not entries["c/e.sst"].linked
    assert (tmp_path / "staging" / "c" / "e.sst").read_bytes() == b"after, longer"
    if after == "a symbolic link":
        assert entries["c/f-link"].link == "e.sst"
