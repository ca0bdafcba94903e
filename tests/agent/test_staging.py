"""What a workload hook lists is checked before anything is staged: a path that is not there, or
below something that is not a directory, fails the snapshot naming what the hook listed."""

from __future__ import annotations

from pathlib import Path

import pytest

from shardkeeper.agent.staging import SnapshotError, freeze_listed
from shardkeeper.api.hook import HookFile


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
