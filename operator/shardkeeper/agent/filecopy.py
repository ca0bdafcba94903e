"""Copying a regular file into staging: whole (holes kept) or a prefix of an append-only file."""

from __future__ import annotations

import errno
import os

from shardkeeper.archive.sparse import data_segments


def copy_file(src: str, dst: str, st: os.stat_result) -> None:
    """Copies a regular file, keeping its holes (only the data segments are copied, in the kernel
    where it can), and never following a link."""
    fin = os.open(src, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        fout = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            segments = data_segments(fin, st.st_size, st.st_blocks)
            if segments is None:  # dense; [] is a file that is all holes
                segments = [(0, st.st_size)]
            for offset, length in segments:
                _copy_range(fin, fout, offset, length)
            os.ftruncate(fout, st.st_size)
        finally:
            os.close(fout)
    finally:
        os.close(fin)


def _copy_range(fin: int, fout: int, offset: int, length: int) -> None:
    end = offset + length
    while offset < end:
        try:
            n = os.copy_file_range(fin, fout, end - offset, offset, offset)
        except OSError as exc:
            if exc.errno not in (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
                raise
            data = os.pread(fin, min(end - offset, 1 << 20), offset)
            n = os.pwrite(fout, data, offset) if data else 0
        if n == 0:
            return  # the file shrank: the caller's fingerprint check sees it
        offset += n


def copy_prefix(src: str, dst: str, size: int) -> None:
    """Copies the first ``size`` bytes of ``src`` (an append-only file that may grow meanwhile)."""
    fin = os.open(src, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        fout = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            _copy_range(fin, fout, 0, size)
            os.ftruncate(fout, size)
        finally:
            os.close(fout)
    finally:
        os.close(fin)
