"""The shardkeeper command as a user meets it: help text, path arguments, progress in a log."""

from __future__ import annotations

from pathlib import Path

import pytest

from shardkeeper.cli import main, parser


def test_help_is_plain_text() -> None:
    text = parser().format_help()
    assert "``" not in text and "operator" in text


@pytest.mark.parametrize("path", ["/abs/path", "a/../b", "../up"])
@pytest.mark.parametrize("flag", ["--from-path", "--to-path"])
def test_a_backend_path_is_relative_to_the_backend_root(
    flag: str, path: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        parser().parse_args(
            ["backups", "copy", "x", "--from", "filesystem", "--to", "filesystem", flag, path]
        )
    assert exited.value.code == 2
    assert f"argument {flag}" in capsys.readouterr().err


def test_copy_progress_in_a_log_is_one_line_per_object(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from shardkeeper.api.common import CompressionLevel
    from shardkeeper.storage.filesystem import FilesystemStorage
    from tests.trees import Spec, back_up, make_tree

    source = tmp_path / "source"
    files = [Spec(f"col/f{i}".encode(), "file", b"x" * 100, 0o644) for i in range(3)]
    make_tree(tmp_path / "data", [Spec(b"col", "dir", mode=0o755), *files])
    back_up(
        tmp_path / "data",
        tmp_path,
        FilesystemStorage(root=source),
        "b1",
        level=CompressionLevel.NONE,
        chunk_bytes=1,
    )
    (source / "b1" / "backup_config.json").write_text(
        '{"formatVersion": 2, "id": "b1", "status": "SUCCESS", "backend": "filesystem", '
        '"startedAt": "2026-11-30T00:00:00Z", "codec": "none", "compressionLevel": "NoCompression", '
        '"chunkSizeMb": 1, "collections": ["col"], '
        '"nodes": {"n0": {"status": "SUCCESS", "collections": ["col"]}}}'
    )
    monkeypatch.setenv("BACKUP_FILESYSTEM_PATH", str(source))
    assert (
        main(["backups", "copy", "b1", "--from", "filesystem", "--to", "filesystem", "--to-path", "copies"])
        == 0
    )
    err = capsys.readouterr().err
    assert "\r" not in err
    assert err.count("copied and verified\n") == 3  # a line per chunk
    assert (source / "copies" / "b1" / "backup_config.json").exists()
