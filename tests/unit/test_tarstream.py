"""The tar member reader is untrusted-input code: fuzzed, and checked against real tar writers."""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import tarfile
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shardkeeper.archive.tarstream import Member, members, parse_pax_time, pax_records, pax_time, sparse_map
from shardkeeper.errors import IntegrityError, UnsafeArchiveEntry


class _Stream:
    def __init__(self, data: bytes) -> None:
        self._f = io.BytesIO(data)

    def read(self, n: int = -1) -> bytes:
        return self._f.read(n)


def _read_all(data: bytes) -> list[tuple[Member, bytes, list[tuple[int, int]] | None]]:
    """Members with their content (a sparse member's data segments), consuming data as a caller must."""
    stream = _Stream(data)
    out = []
    for m in members(stream):
        segments = None
        size = m.size
        if m.sparse:
            segments, used = sparse_map(stream, m.size)
            size -= used
        content = stream.read(size)
        stream.read(-m.size % 512)
        out.append((m, content, segments))
    return out


def test_a_pax_record_of_length_zero_is_refused_at_once() -> None:
    started = time.monotonic()
    with pytest.raises(IntegrityError, match="invalid PAX record length 0"):
        pax_records(b"0 path=x\n")
    assert time.monotonic() - started < 1


@pytest.mark.parametrize(
    "record",
    [b"3 a=\n", b"99 path=x\n", b"x path=x\n", b"12 pathx\n\n\n\n", b"6 =abc\n", b"7 path=x", b"-5 a=b\n"],
)
def test_malformed_pax_records_are_refused(record: bytes) -> None:
    with pytest.raises(IntegrityError):
        pax_records(record)


def test_pax_time_is_exact_to_the_nanosecond() -> None:
    for ns in (0, 1, 1_700_000_000_500_000_000, -1_500_000_000, 123_456_789):
        assert parse_pax_time(pax_time(ns).encode()) == ns
    assert parse_pax_time(b"1700000000.5") == 1_700_000_000_500_000_000
    assert parse_pax_time(b"12") == 12_000_000_000


def _pax_archive(**records: str) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("col/f")
        info.size = 3
        info.pax_headers = records
        tar.addfile(info, io.BytesIO(b"abc"))
    return raw.getvalue()


@settings(max_examples=3000, deadline=None)
@given(st.binary(max_size=3000))
def test_any_bytes_yield_members_or_a_clear_error(data: bytes) -> None:
    with contextlib.suppress(IntegrityError, UnsafeArchiveEntry):
        _read_all(data)


@settings(max_examples=2000, deadline=None)
@given(st.data())
def test_any_corruption_of_a_real_archive_yields_members_or_a_clear_error(data: st.DataObject) -> None:
    archive = bytearray(_pax_archive(mtime="1700000000.25", uid="7"))
    for _ in range(data.draw(st.integers(min_value=1, max_value=8))):
        i = data.draw(st.integers(min_value=0, max_value=len(archive) - 1))
        archive[i] = data.draw(st.integers(min_value=0, max_value=255))
    cut = data.draw(st.integers(min_value=0, max_value=len(archive)))
    with contextlib.suppress(IntegrityError, UnsafeArchiveEntry):
        _read_all(bytes(archive[:cut]))


def test_python_tarfile_archives_read_back(tmp_path: Path) -> None:
    names = ["col/" + "l" * 200 + "/long", "col/odd\\name.sst", "col/new\nline", "col/\udcff\udcfe-bytes"]
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT, errors="surrogateescape") as tar:
        for name in names:
            info = tarfile.TarInfo(name)
            info.size = len(name)
            tar.addfile(info, io.BytesIO(name.encode("utf-8", "surrogateescape")))
        link = tarfile.TarInfo("col/CURRENT")
        link.type, link.linkname = tarfile.SYMTYPE, "000001.sst"
        tar.addfile(link)
    found = _read_all(raw.getvalue())
    assert [m.name for m, _, _ in found] == [*names, "col/CURRENT"]
    assert [c for _, c, _ in found[:-1]] == [n.encode("utf-8", "surrogateescape") for n in names]
    assert found[-1][0].linkname == "000001.sst"


@pytest.mark.parametrize("fmt", ["pax", "gnu"])
def test_gnu_tar_archives_read_back_including_sparse_files(tmp_path: Path, fmt: str) -> None:
    src = tmp_path / "src"
    (src / "col" / ("d" * 150)).mkdir(parents=True)
    (src / "col" / ("d" * 150) / ("f" * 120)).write_bytes(b"long name")
    with (src / "col" / "sparse").open("wb") as f:
        f.truncate(8 << 20)
        f.seek(4 << 20)
        f.write(b"x" * 4096)
    (src / "col" / "link").symlink_to("sparse")
    os.link(src / "col" / "sparse", src / "col" / "hard")
    archive = tmp_path / "a.tar"
    sparse_opts = ["--sparse", "--sparse-version=1.0"] if fmt == "pax" else []
    subprocess.run(
        ["tar", f"--format={fmt}", *sparse_opts, "-cf", str(archive), "-C", str(src), "col"], check=True
    )
    found = {m.name: (m, content, segments) for m, content, segments in _read_all(archive.read_bytes())}
    long_name = "col/" + "d" * 150 + "/" + "f" * 120
    assert found[long_name][1] == b"long name"
    assert found["col/link"][0].type == tarfile.SYMTYPE and found["col/link"][0].linkname == "sparse"
    hard = found.get("col/hard") or found["col/sparse"]
    assert hard[0].type == tarfile.LNKTYPE
    data = found["col/sparse"] if found["col/sparse"][0].type != tarfile.LNKTYPE else found["col/hard"]
    if fmt == "pax":
        assert data[0].sparse and data[0].realsize == 8 << 20
        assert data[2] == [(4 << 20, 4096), (8 << 20, 0)] or data[2] == [(4 << 20, 4096)]
        assert data[1] == b"x" * 4096
