"""A/B: our tar member reader (``archive.tarstream``) against ``tarfile.open(mode="r|")``.

The restore path reads each chunk's tar stream once, in 1 MiB pieces, hashing every file's content.
Both readers get the same in-memory stream (a tar of the benchmark data set's ``small/`` files plus
a slice of its big files, so per-member work and bulk copying both count), are fed through the same
block-serving source (what the decompressor hands out in the agent), and hash every file with sha256,
as a restore does. Disk and decompression are left out: this isolates the reader. Runs alternate,
medians of ``--repeat``; MB/s of tar stream.

    python -m benchmarks.tar_reader
"""

from __future__ import annotations

import argparse
import hashlib
import io
import statistics
import tarfile
import time
from pathlib import Path

from benchmarks.dataset import data_dir, generate
from shardkeeper.archive.tarstream import members

PIECE = 1 << 20


class Blocks:
    """Serves a byte string in the pieces a decompressor hands out (up to 1 MiB), like the agent's
    stored stream: ``read(n)`` for headers, ``read_view`` for file content."""

    def __init__(self, data: bytes) -> None:
        self._view = memoryview(data)
        self._pos = 0

    def read(self, n: int = -1) -> bytes:
        n = len(self._view) - self._pos if n < 0 else n
        out = bytes(self._view[self._pos : self._pos + n])
        self._pos += len(out)
        return out

    def read_view(self, n: int) -> memoryview:
        out = self._view[self._pos : self._pos + min(n, PIECE)]
        self._pos += len(out)
        return out


def ours(data: bytes) -> int:
    stream, files = Blocks(data), 0
    for m in members(stream):
        sha, left = hashlib.sha256(), m.size
        while left:
            block = stream.read_view(left)
            sha.update(block)
            left -= len(block)
        stream.read(-m.size % 512)
        files += 1
    return files


def stdlib(data: bytes) -> int:
    files = 0
    with tarfile.open(fileobj=Blocks(data), mode="r|") as tar:  # type: ignore[call-overload]
        for m in tar:
            f = tar.extractfile(m)
            if f is None:
                continue
            sha = hashlib.sha256()
            while block := f.read(PIECE):
                sha.update(block)
            files += 1
    return files


def sample(root: Path, limit: int) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        paths = sorted((root / "small").rglob("*")) + sorted((root / "vectors").rglob("*"))
        for path in paths:
            if path.is_file() and raw.tell() < limit:
                tar.add(path, arcname=str(path.relative_to(root)))
    return raw.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--workdir", default="/tmp/shardkeeper-bench")
    parser.add_argument("--mb", type=int, default=400, help="size of the tar stream")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    data = sample(generate(data_dir(Path(args.workdir)), scale=1), args.mb << 20)
    results: dict[str, list[float]] = {"archive.tarstream (ours)": [], 'tarfile mode="r|"': []}
    counts = {}
    for _ in range(args.repeat):
        for name, reader in (("archive.tarstream (ours)", ours), ('tarfile mode="r|"', stdlib)):
            started = time.perf_counter()
            counts[name] = reader(data)
            results[name].append(len(data) / 1e6 / (time.perf_counter() - started))
    assert len(set(counts.values())) == 1, counts
    mb = len(data) / 1e6
    print(f"tar stream: {mb:.0f} MB, {next(iter(counts.values()))} files; medians of {args.repeat}, MB/s")
    base = statistics.median(results['tarfile mode="r|"'])
    for name, rates in results.items():
        print(f"| {name} | {statistics.median(rates):.0f} | {statistics.median(rates) / base:.2f} |")


if __name__ == "__main__":
    main()
