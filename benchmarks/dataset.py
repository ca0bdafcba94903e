"""A reproducible mixed data set, shaped like a vector database's files, every byte drawn fresh.

* ``records/``: JSONL objects (uuid, class, timestamps, title and body drawn from a Zipf-distributed
  30k-word pseudo-vocabulary): compressible text, a few big files.
* ``vectors/``: float32 values shaped like ~ N(0, 0.05) (random mantissas, exponents drawn from the
  distribution's): what entropy coders barely shrink, a few big files.
* ``small/``: 5,000 files, sizes log-normal (median 16 KiB, 256 B to 2 MiB): 50 % JSON text, 30 %
  float32, 20 % random bytes (already-compressed blobs: incompressible).

Nothing repeats: earlier versions sliced the vectors out of one 64 MiB pool, which flattered any
deduplicating tool (restic stored each pool once). Every block here comes from one seeded
``random.Random`` (``randbytes``, about 130 MB/s), so the same seed gives the same bytes; numpy is
not needed. ``scale`` multiplies the size of the big files and keeps the number of files: a database
grows by bigger segments, not by thousands more of them. Scale 1 is about 1.1 GB, generated in ~15 s.
"""

from __future__ import annotations

import math
import random
import shutil
from pathlib import Path

MB = 1 << 20
VERSION = 2
TEXT_FILES_MB = [128, 64, 64, 32, 32, 16, 16, 16, 16] + [1] * 20  # ~404 MB at scale 1
VECTOR_FILES_MB = [256, 128, 64, 64] + [8] * 8  # ~576 MB
SMALL_FILES = 5000
_CLASSES = ("Article", "Author", "Comment")


def data_dir(work: Path, scale: int = 1) -> Path:
    """Where the benchmarks keep the data set of ``scale`` under their work directory."""
    return work / f"data-v{VERSION}-scale{scale}"


class _Words:
    """A 30k-word pseudo-vocabulary and a 65,536-slot table that draws from it with Zipf weights, so
    that a bulk of random 16-bit numbers becomes words at C speed."""

    def __init__(self, rng: random.Random) -> None:
        letters = "etaoinshrdlucmfwypvbgkjqxz"
        words = ["".join(rng.choices(letters, k=rng.randint(2, 10))) for _ in range(30_000)]
        weights = [1 / (rank + 1) for rank in range(len(words))]
        scale = 65536 / sum(weights)
        table: list[str] = []
        for word, w in zip(words, weights, strict=True):
            table.extend([word] * max(1, round(w * scale)))
            if len(table) >= 65536:
                break
        self.table = table[:65536]

    def draw(self, rng: random.Random, n: int) -> list[str]:
        return list(map(self.table.__getitem__, memoryview(rng.randbytes(2 * n)).cast("H")))


def _text(rng: random.Random, words: _Words, size: int) -> bytes:
    """``size`` bytes of JSONL records (the last one cut)."""
    out: list[str] = []
    total = 0
    while total < size:
        drawn = words.draw(rng, max(1024, (size - total) // 5))
        meta = rng.randbytes(32 * (len(drawn) // 48 + 1))
        at, m = 0, 0
        while at + 128 <= len(drawn) and total < size:
            n = 40 + meta[m + 16] % 81
            u = meta[m : m + 16].hex()
            line = (
                f'{{"id": "{u[:8]}-{u[8:12]}-{u[12:16]}-{u[16:20]}-{u[20:]}", '
                f'"class": "{_CLASSES[meta[m + 17] % 3]}", '
                f'"created": "2026-{meta[m + 18] % 12 + 1:02d}-{meta[m + 19] % 28 + 1:02d}T'
                f'{meta[m + 20] % 24:02d}:00Z", '
                f'"title": "{" ".join(drawn[at : at + 8])}", '
                f'"body": "{" ".join(drawn[at + 8 : at + 8 + n])}"}}\n'
            )
            out.append(line)
            total += len(line)
            at += 8 + n
            m += 32
    return "".join(out).encode()[:size]


# The top byte of a little-endian float32 holds the sign and the exponent's 7 high bits. For values
# ~ N(0, 0.05), |x| is mostly 2^-10..2^-3: exponents 117-124, top byte 0x3a-0x3e (or 0xba-0xbe).
def _exponent_table() -> bytes:
    table = bytearray()
    for high, share in ((0x3E, 38), (0x3D, 46), (0x3C, 24), (0x3B, 12), (0x3A, 6), (0x39, 2)):
        table += bytes([high]) * share + bytes([high | 0x80]) * share
    return bytes(table[:256]).ljust(256, b"\x38")


_EXPONENTS = _exponent_table()


def _floats(rng: random.Random, size: int) -> bytes:
    """``size`` bytes (a multiple of 4) of float32 values shaped like ~ N(0, 0.05)."""
    buf = bytearray(rng.randbytes(size))
    buf[3::4] = buf[3::4].translate(_EXPONENTS)
    return bytes(buf)


def _small_sizes(rng: random.Random) -> list[int]:
    return [
        min(2 * MB, max(256, int(rng.lognormvariate(math.log(16 << 10), 1.0)))) for _ in range(SMALL_FILES)
    ]


def generate(root: Path, *, scale: int = 1, seed: int = 42) -> Path:
    """Writes the data set under ``root`` (once; a marker file makes later calls free). A ``root``
    holding anything else (an older version, a half-written one) is emptied first."""
    marker = root / f".complete-v{VERSION}-scale{scale}-seed{seed}"
    if marker.exists():
        return root
    shutil.rmtree(root, ignore_errors=True)
    rng = random.Random(seed)
    words = _Words(rng)
    for sub in ("records", "vectors", "small"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for i, mb in enumerate(TEXT_FILES_MB):
        size = mb * MB * (scale if mb > 1 else 1)
        with (root / "records" / f"segment-{i:04d}.jsonl").open("wb") as f:
            for offset in range(0, size, 16 * MB):
                f.write(_text(rng, words, min(16 * MB, size - offset)))
    for i, mb in enumerate(VECTOR_FILES_MB):
        size = mb * MB * (scale if mb > 8 else 1)
        with (root / "vectors" / f"vectors-{i:04d}.bin").open("wb") as f:
            for offset in range(0, size, 16 * MB):
                f.write(_floats(rng, min(16 * MB, size - offset)))
    for i, size in enumerate(_small_sizes(rng)):
        kind = rng.random()
        if kind < 0.5:
            data = _text(rng, words, size)
        elif kind < 0.8:
            data = _floats(rng, size // 4 * 4)
        else:
            data = rng.randbytes(size)
        (root / "small" / f"obj-{i:05d}.dat").write_bytes(data)
    marker.touch()
    return root


def many_collections(root: Path, *, collections: int, size: int, seed: int = 42) -> list[str]:
    """``collections`` directories of one file of ``size`` bytes each (text and floats, fresh) under
    ``root``: the many-small-collections shape of the scale benchmark. Returns their names."""
    rng = random.Random(seed)
    words = _Words(rng)
    names = [f"c{i:05d}" for i in range(collections)]
    for i, name in enumerate(names):
        (root / name).mkdir(parents=True, exist_ok=True)
        data = _text(rng, words, size) if i % 2 else _floats(rng, size // 4 * 4)
        (root / name / "segment.dat").write_bytes(data)
    return names


def many_files(root: Path, *, files: int, size: int, per_dir: int = 1000, seed: int = 42) -> None:
    """``files`` small files of ``size`` random bytes each, ``per_dir`` to a directory, under ``root``."""
    rng = random.Random(seed)
    for i in range(files):
        d = root / f"d{i // per_dir:05d}"
        if i % per_dir == 0:
            d.mkdir(parents=True, exist_ok=True)
        (d / f"f{i % per_dir:04d}").write_bytes(rng.randbytes(size))


def total_bytes(root: Path) -> tuple[int, int]:
    files = [p for p in root.rglob("*") if p.is_file() and not p.name.startswith(".")]
    return sum(p.stat().st_size for p in files), len(files)


__all__ = ["data_dir", "generate", "many_collections", "many_files", "total_bytes"]
