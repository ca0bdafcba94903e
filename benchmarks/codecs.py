"""Which library serves each compression setting: single-core streaming speed and ratio of the
candidates on a sample of the benchmark data set, in memory (no I/O), 1 MiB pieces.

Python's zlib at level 6 is what "gzip default" naively means; ISA-L's igzip writes the same gzip
format. Run: ``python -m benchmarks.codecs``.
"""

from __future__ import annotations

import argparse
import sys
import time
import zlib
from collections.abc import Callable
from pathlib import Path

import zstandard
from isal import isal_zlib

from benchmarks.common import table
from benchmarks.dataset import data_dir, generate

PIECE = 1 << 20
MB = 1_000_000

Factory = Callable[[], Callable[[bytes], int]]


def _gzip(module: object, level: int) -> Factory:
    def make() -> Callable[[bytes], int]:
        obj = module.compressobj(level, 8, 31)  # type: ignore[attr-defined]
        return lambda piece: len(obj.compress(piece)) if piece else len(obj.flush())

    return make


def _zstd(level: int) -> Factory:
    def make() -> Callable[[bytes], int]:
        obj = zstandard.ZstdCompressor(level=level).compressobj()
        return lambda piece: len(obj.compress(piece)) if piece else len(obj.flush())

    return make


CANDIDATES: dict[str, Factory] = {
    "zlib-6 (stdlib gzip default)": _gzip(zlib, 6),
    "zlib-1": _gzip(zlib, 1),
    "isal-1 (BestSpeed)": _gzip(isal_zlib, 1),
    "isal-2 (DefaultCompression)": _gzip(isal_zlib, 2),
    "isal-3 (BestCompression)": _gzip(isal_zlib, 3),
    "zstd-1 (ZstdBestSpeed)": _zstd(1),
    "zstd-3 (ZstdDefaultCompression)": _zstd(3),
    "zstd-9 (ZstdBestCompression)": _zstd(9),
}


def sample(root: Path, size: int) -> bytes:
    """Equal parts of each kind of data, concatenated."""
    parts = []
    for sub in ("records", "vectors", "small"):
        got = 0
        for path in sorted((root / sub).iterdir()):
            data = path.read_bytes()[: size // 3 - got]
            parts.append(data)
            got += len(data)
            if got >= size // 3:
                break
    return b"".join(parts)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workdir", default="/tmp/shardkeeper-bench")
    parser.add_argument("--sample-mb", type=int, default=192)
    args = parser.parse_args()
    data = sample(generate(data_dir(Path(args.workdir))), args.sample_mb * MB)
    rows = []
    for name, make in CANDIDATES.items():
        compress = make()
        started = time.perf_counter()
        out = sum(compress(data[i : i + PIECE]) for i in range(0, len(data), PIECE)) + compress(b"")
        seconds = time.perf_counter() - started
        rows.append(
            {
                "codec": name,
                "MB/s (1 core)": f"{len(data) / MB / seconds:.0f}",
                "ratio": f"{out / len(data):.3f}",
            }
        )
        print(table(rows[-1:], list(rows[-1])), flush=True)
    print()
    print(table(rows, list(rows[0])))
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    sys.exit(main())
