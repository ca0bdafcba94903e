"""Any tree a Linux filesystem can hold comes back exactly: property-based, through the real path.

Each generated tree is frozen by the agent's hookless snapshot, packed and uploaded to a filesystem
backend, described (the node descriptor written and read back as JSON), checked by the restore's own
rule, downloaded, verified and unpacked into a staging directory, and finished (links, directory
metadata). The restored tree's digest (``tests.trees.tree_digest``: type, name bytes, size, content
hash, mode, mtime in ns, owner, link target, hard-link groups, allocated blocks) must equal the
original's. 1,000 trees here; ``-m slow`` runs 10,000.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shardkeeper.api.common import CompressionLevel
from shardkeeper.archive.prefetch import INLINE_BELOW
from shardkeeper.storage.filesystem import FilesystemStorage
from tests.trees import Spec, back_up, make_tree, restore, tree_digest

# Any byte but '/' and NUL: backslash, newline, spaces, a leading '-', and bytes that are not UTF-8.
_NAME_BYTES = st.sampled_from(
    [b"a", b"B", b"-", b"\\", b"\n", b" ", b".", b"\xff", b"\xe9", b"\x80", b"\xc3\xa9"]
)
names = st.lists(_NAME_BYTES, min_size=1, max_size=12).map(b"".join).filter(
    lambda n: n not in (b".", b"..")
) | st.just(b"n" * 255)
mtimes = st.integers(min_value=1, max_value=4_000_000_000_000_000_000)
modes = st.integers(min_value=0, max_value=0o777)


@st.composite
def trees(draw: st.DrawFn) -> list[Spec]:
    specs: list[Spec] = [Spec(b"col", "dir", mode=draw(modes) | 0o700, mtime_ns=draw(mtimes))]
    dirs, files, used = [b"col"], [], {b"col"}
    for _ in range(draw(st.integers(min_value=0, max_value=10))):
        parent = draw(st.sampled_from(dirs))
        path = parent + b"/" + draw(names)
        if path in used or len(path) > 3000:
            continue
        used.add(path)
        kind = draw(st.sampled_from(["file", "file", "dir", "symlink", "hardlink", "sparse", "big"]))
        if kind == "hardlink" and not files:
            kind = "file"
        if kind == "dir":
            specs.append(Spec(path, "dir", mode=draw(modes) | 0o700, mtime_ns=draw(mtimes)))
            dirs.append(path)
        elif kind == "file":
            specs.append(Spec(path, "file", draw(st.binary(max_size=3000)), draw(modes), draw(mtimes)))
            files.append(path)
        elif kind == "big":  # read ahead by the packing's reading thread, the smaller ones in place
            size = draw(st.integers(min_value=INLINE_BELOW - 1, max_value=INLINE_BELOW + 70_000))
            specs.append(Spec(path, "file", os.urandom(size), draw(modes), draw(mtimes)))
            files.append(path)
        elif kind == "sparse":
            size = draw(st.integers(min_value=1 << 14, max_value=1 << 20))
            specs.append(Spec(path, "sparse", os.urandom(4096), draw(modes), draw(mtimes), size=size))
            files.append(path)
        elif kind == "symlink":
            target = draw(st.sampled_from([b"000001.sst", b"../x", b"/etc/passwd", b"a\\b\xff", b"dir/"]))
            specs.append(Spec(path, "symlink", mtime_ns=draw(mtimes), target=target))
        else:
            specs.append(Spec(path, "hardlink", target=draw(st.sampled_from(files))))
    return specs


def _check(specs: list[Spec], level: CompressionLevel, chunk_bytes: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        make_tree(work / "data", specs)
        before = tree_digest(work / "data" / "col")
        store = FilesystemStorage(root=work / "store")
        back_up(work / "data", work, store, "b1", level=level, chunk_bytes=chunk_bytes)
        assert tree_digest(restore(store, "b1", work / "restored")) == before
        shutil.rmtree(work, ignore_errors=True)


_LEVELS = st.sampled_from([CompressionLevel.NONE, CompressionLevel.DEFAULT, CompressionLevel.ZSTD_BEST_SPEED])


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(specs=trees(), level=_LEVELS, chunk_bytes=st.sampled_from([1, 5000, 1 << 27]))
def test_every_tree_round_trips_exactly(specs: list[Spec], level: CompressionLevel, chunk_bytes: int) -> None:
    _check(specs, level, chunk_bytes)


@pytest.mark.slow
@settings(max_examples=10_000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(specs=trees(), level=_LEVELS, chunk_bytes=st.sampled_from([1, 5000, 1 << 27]))
def test_every_tree_round_trips_exactly_many_more(
    specs: list[Spec], level: CompressionLevel, chunk_bytes: int
) -> None:
    _check(specs, level, chunk_bytes)
