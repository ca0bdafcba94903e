"""A reproducible mixed data set, shaped like a vector database's files (see performance notes):

* ``records/``: JSONL objects (uuid, class, timestamps, title and body drawn from a Zipf-distributed
  30k-word pseudo-vocabulary): compressible text, a few big files.
* ``vectors/``: float32 values ~ N(0, 0.05): what entropy coders barely shrink, a few big files.
* ``small/``: thousands of 4-64 KiB files, 60 % JSON and 40 % float32.

``scale`` multiplies the size of the big files and keeps the number of files: a database grows by
bigger segments, not by thousands more of them. Scale 1 is about 1.1 GB.
"""

from __future__ import annotations

import array
import itertools
import json
import random
import uuid
from pathlib import Path

MB = 1 << 20
TEXT_FILES_MB = [128, 64, 64, 32, 32, 16, 16, 16, 16] + [1] * 20  # ~404 MB at scale 1
VECTOR_FILES_MB = [256, 128, 64, 64] + [8] * 8  # ~576 MB
SMALL_FILES = 5000


def _vocabulary(rng: random.Random) -> tuple[list[str], list[float]]:
    letters = "etaoinshrdlucmfwypvbgkjqxz"
    words = ["".join(rng.choices(letters, k=rng.randint(2, 10))) for _ in range(30_000)]
    weights = list(itertools.accumulate(1 / (rank + 1) for rank in range(len(words))))
    return words, weights


def _text(rng: random.Random, vocab: tuple[list[str], list[float]], size: int) -> bytes:
    words, cum = vocab
    out, total = [], 0
    while total < size:
        obj = {
            "id": str(uuid.UUID(int=rng.getrandbits(128))),
            "class": rng.choice(["Article", "Author", "Comment"]),
            "created": f"2026-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}T{rng.randint(0, 23):02d}:00Z",
            "title": " ".join(rng.choices(words, cum_weights=cum, k=8)),
            "body": " ".join(rng.choices(words, cum_weights=cum, k=rng.randint(40, 120))),
        }
        line = json.dumps(obj).encode() + b"\n"
        out.append(line)
        total += len(line)
    return b"".join(out)[:size]


class _Floats:
    """float32 ~ N(0, 0.05), drawn once into a 64 MiB pool and read from random offsets."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.pool = array.array("f", (rng.gauss(0.0, 0.05) for _ in range(16 * MB))).tobytes()

    def take(self, size: int) -> bytes:
        parts, left = [], size
        while left > 0:
            start = self.rng.randrange(0, len(self.pool) // 4) * 4
            piece = self.pool[start : start + min(left, len(self.pool) - start)]
            parts.append(piece)
            left -= len(piece)
        return b"".join(parts)


def generate(root: Path, *, scale: int = 1, seed: int = 42) -> Path:
    """Writes the data set under ``root`` (once; a marker file makes later calls free)."""
    marker = root / f".complete-scale{scale}-seed{seed}"
    if marker.exists():
        return root
    rng = random.Random(seed)
    vocab = _vocabulary(rng)
    floats = _Floats(rng)
    for sub in ("records", "vectors", "small"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for i, mb in enumerate(TEXT_FILES_MB):
        size = mb * MB * (scale if mb > 1 else 1)
        with (root / "records" / f"segment-{i:04d}.jsonl").open("wb") as f:
            for offset in range(0, size, 16 * MB):
                f.write(_text(rng, vocab, min(16 * MB, size - offset)))
    for i, mb in enumerate(VECTOR_FILES_MB):
        size = mb * MB * (scale if mb > 8 else 1)
        with (root / "vectors" / f"vectors-{i:04d}.bin").open("wb") as f:
            for offset in range(0, size, 16 * MB):
                f.write(floats.take(min(16 * MB, size - offset)))
    for i in range(SMALL_FILES):
        size = rng.randint(4 << 10, 64 << 10)
        data = _text(rng, vocab, size) if rng.random() < 0.6 else floats.take(size // 4 * 4)
        (root / "small" / f"obj-{i:05d}.dat").write_bytes(data)
    marker.touch()
    return root


def total_bytes(root: Path) -> tuple[int, int]:
    files = [p for p in root.rglob("*") if p.is_file() and not p.name.startswith(".")]
    return sum(p.stat().st_size for p in files), len(files)
