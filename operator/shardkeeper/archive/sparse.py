"""Sparse files: finding their data segments, and the GNU sparse 1.0 map that describes them in tar.

A file's holes are found with ``SEEK_DATA``/``SEEK_HOLE`` (Linux 3.1+; a filesystem that cannot tell
reports the whole file as data, so nothing is ever lost). In a tar stream, a sparse member's data
area is the map (decimal numbers, one per line: the count, then each offset and length; padded to
whole blocks) followed by the data segments only, as ``tar --sparse --format=pax`` writes it.
"""

from __future__ import annotations

import errno
import os

from shardkeeper.archive.tarstream import BLOCK


def data_segments(fd: int, size: int, blocks: int) -> list[tuple[int, int]] | None:
    """The (offset, length) data segments of a sparse file (SEEK_DATA/SEEK_HOLE), or None if it
    has no holes. Only a file that holds fewer blocks than its size can have any."""
    if size == 0 or blocks * 512 >= size:
        return None
    segments: list[tuple[int, int]] = []
    offset = 0
    while offset < size:
        try:
            start = os.lseek(fd, offset, os.SEEK_DATA)
        except OSError as exc:
            if exc.errno == errno.ENXIO:  # only a hole is left
                break
            return None  # the filesystem cannot tell: read it whole

        end = min(os.lseek(fd, start, os.SEEK_HOLE), size)
        if end > start:
            segments.append((start, end - start))
        offset = end
    return segments if segments != [(0, size)] else None


def sparse_map_block(segments: list[tuple[int, int]]) -> bytes:
    """The GNU sparse 1.0 map: the count, then each offset and length, one per line, in whole blocks."""
    text = f"{len(segments)}\n" + "".join(f"{o}\n{n}\n" for o, n in segments)
    raw = text.encode()
    return raw + bytes(-len(raw) % BLOCK)


__all__ = ["data_segments", "sparse_map_block"]
