"""The agent hands back what a phase freed (``agent.memory``)."""

from __future__ import annotations

import os
import platform
import threading

import pytest

from shardkeeper.agent.memory import release_free_memory

MIB = 1 << 20

glibc_only = pytest.mark.skipif(
    platform.libc_ver()[0] != "glibc", reason="malloc_trim is glibc's: musl has none"
)


def _resident() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _holes() -> list[bytearray]:
    # 64 KiB blocks come from malloc's heap (below its mmap threshold); freeing every other one
    # leaves holes between live blocks, which free() keeps (only a heap's top is given back).
    blocks = [bytearray(64 * 1024) for _ in range(800)]  # 50 MiB, zeroed: resident
    del blocks[::2]
    return blocks


@glibc_only
def test_memory_freed_between_live_blocks_goes_back_to_the_system() -> None:
    blocks = _holes()
    before = _resident()
    assert release_free_memory()
    assert before - _resident() > 20 * MIB
    assert len(blocks) == 400  # the live half stays


@glibc_only
def test_memory_a_worker_thread_freed_goes_back_too() -> None:
    # A thread allocates from a heap of its own (glibc's arenas): staging and reading a base run so.
    kept: list[list[bytearray]] = []
    worker = threading.Thread(target=lambda: kept.append(_holes()))
    worker.start()
    worker.join()
    before = _resident()
    assert release_free_memory()
    assert before - _resident() > 20 * MIB
    assert len(kept[0]) == 400
