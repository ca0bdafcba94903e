"""TarWriter writes what tarfile writes, byte for byte, for every kind of member pack makes."""

from __future__ import annotations

import io
import tarfile

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shardkeeper.archive.tarwrite import TarWriter, ustar_file_header

_NAME_CHARS = st.characters(blacklist_categories=("Cc", "Cs")) | st.sampled_from(
    ["\udcff", "\udc80", "/", "é", "a"]
)
names = st.text(_NAME_CHARS, min_size=1, max_size=120) | st.text("ab/", min_size=95, max_size=105)
octal_edges = st.sampled_from([0, 1, 8**7 - 1, 8**7, 8**11 - 1, 8**11, 2**40, -1])


@st.composite
def members(draw: st.DrawFn) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(draw(names))
    info.type = draw(
        st.sampled_from([tarfile.REGTYPE] * 4 + [tarfile.DIRTYPE, tarfile.SYMTYPE, tarfile.LNKTYPE])
    )
    info.mode = draw(st.integers(min_value=0, max_value=0o7777))
    info.uid = draw(st.integers(min_value=0, max_value=2**32 - 1) | octal_edges.filter(lambda n: n >= 0))
    info.gid = draw(st.integers(min_value=0, max_value=2**32 - 1) | octal_edges.filter(lambda n: n >= 0))
    info.mtime = draw(st.integers(min_value=-(2**40), max_value=2**40) | octal_edges)
    info.uname = info.gname = ""
    data = b""
    if info.type == tarfile.REGTYPE:
        data = draw(st.binary(max_size=1500))
        info.size = len(data)
        if draw(st.booleans()) and draw(st.booleans()):  # as pack marks a sparse file
            info.pax_headers = {"GNU.sparse.major": "1", "GNU.sparse.name": info.name}
            info.name = "GNUSparseFile.0/data"
    else:
        info.linkname = draw(names) if info.type != tarfile.DIRTYPE else ""
    return info, data


def _by_tarfile(items: list[tuple[tarfile.TarInfo, bytes]]) -> bytes:
    out = io.BytesIO()
    with tarfile.TarFile(
        fileobj=out, mode="w", format=tarfile.PAX_FORMAT, encoding="utf-8", errors="surrogateescape"
    ) as tar:
        for info, data in items:
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return out.getvalue()


def _by_tarwriter(items: list[tuple[tarfile.TarInfo, bytes]], piece: int) -> bytes:
    out = io.BytesIO()
    tar = TarWriter(out.write)
    for info, data in items:
        tar.add(info)
        for at in range(0, len(data), piece):
            tar.data(data[at : at + piece])
        tar.end_member()
    tar.close()
    return out.getvalue()


@settings(max_examples=1000)
@given(items=st.lists(members(), max_size=12), piece=st.integers(min_value=1, max_value=2000))
def test_the_stream_is_tarfiles_byte_for_byte(items: list[tuple[tarfile.TarInfo, bytes]], piece: int) -> None:
    assert _by_tarwriter(items, piece) == _by_tarfile(items)


@given(name=names, mode=st.integers(0, 0o7777), ids=st.tuples(octal_edges, octal_edges), size=octal_edges)
def test_the_quick_header_is_tarfiles_or_declines(
    name: str, mode: int, ids: tuple[int, int], size: int
) -> None:
    uid, gid = (abs(n) for n in ids)
    header = ustar_file_header(name, mode, uid, gid, size, 1_700_000_000)
    info = tarfile.TarInfo(name)
    info.mode, info.uid, info.gid, info.size, info.mtime = mode, uid, gid, size, 1_700_000_000
    info.uname = info.gname = ""
    expected = info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")
    if header is None:
        assert len(expected) > 512  # tarfile needed a PAX record: declining was right
    else:
        assert header == expected
    if name.isascii() and len(name) <= 100 and size < 8**11 and max(uid, gid) < 8**7 and size >= 0:
        assert header is not None  # the common case is never left to tarfile


def test_data_that_is_not_the_declared_size_is_refused() -> None:
    info = tarfile.TarInfo("col/f")
    info.size = 3
    tar = TarWriter(io.BytesIO().write)
    tar.add(info)
    with pytest.raises(ValueError, match="1 bytes more"):
        tar.data(b"abcd")
    tar.data(b"ab")
    with pytest.raises(ValueError, match="1 bytes of the member's data missing"):
        tar.end_member()
