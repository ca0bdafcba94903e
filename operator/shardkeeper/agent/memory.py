"""Giving the memory a phase freed back to the system, so that the next phase does not stack on it.

A million-file backup stages its files on one thread, reads its base on another and packs on a
third; glibc gives each thread its own heap (an arena) and keeps what is freed there for that
heap's next allocations, while Python's small objects live elsewhere (its own arenas, mapped
directly). ``malloc_trim(0)`` hands the free pages of every heap back: 29 MB at the end of staging
a million files in ``benchmarks.scale --incremental`` (``benchmarks/README.md``, goal 4). What
Python's own allocator keeps (an arena with one live object in it) it cannot return.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable
from typing import cast


def _malloc_trim() -> Callable[[int], int] | None:
    try:
        trim = ctypes.CDLL(None).malloc_trim  # the process's own C library
    except (AttributeError, OSError):  # not glibc (musl has no malloc_trim)
        return None
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return cast("Callable[[int], int]", trim)


_TRIM = _malloc_trim()


def release_free_memory() -> bool:
    """Returns the free pages of every malloc heap to the system (glibc's ``malloc_trim(0)``, a few
    milliseconds). Returns whether any memory was released; ``False`` too where the C library has no
    such call. Raises nothing."""
    return _TRIM is not None and bool(_TRIM(0))


__all__ = ["release_free_memory"]
