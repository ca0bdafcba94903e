"""What a restore holds per entry, by the length of its paths and its links' targets, against the
estimate a backup warns with (``agent.backup.restore_memory_needed``).

A restore holds its node's entries in columns (``archive.described.DescribedTree``) and, while it
checks them, ``archive.tree.check_tree``'s index of their paths. Each case runs in a fresh process:
``--entries`` entries (files, or symbolic links) in 100 directories, then ``check_tree``; it prints
the growth of the process's peak RSS (VmHWM) per entry. The estimate must stay above it (the
"estimate / measured" column at least 1.0): a backup whose restore would not fit must be warned.
"""

from __future__ import annotations

import argparse
import gc
import json
import subprocess
import sys

from benchmarks.common import load
from shardkeeper.agent.backup import RESTORE_BASE_BYTES, restore_memory_needed

#: (path length in bytes, "file" or "symlink", target length in bytes)
CASES = [
    (24, "file", 0),
    (66, "file", 0),
    (126, "file", 0),
    (24, "symlink", 10),
    (24, "symlink", 60),
    (24, "symlink", 200),
]


def peak_rss() -> int:
    """The process's peak resident set (VmHWM), in bytes."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def one(path_length: int, kind: str, target_length: int, entries: int) -> dict[str, float]:
    """Builds and checks one node's tree in this process; returns the peak RSS growth per entry."""
    from shardkeeper.api.descriptors import Entry, EntryType
    from shardkeeper.archive.described import DescribedTree
    from shardkeeper.archive.tree import check_tree

    # "c/<pad><3 digits>/f<7 digits>.sst" is path_length bytes long
    pad = "d" * max(1, path_length - 19)
    dirs = [f"c/{pad}{j:03d}" for j in range(100)]
    before = peak_rss()
    tree = DescribedTree()
    tree.append(Entry.make("c", EntryType.DIR, mode=0o755))
    for d in dirs:
        tree.append(Entry.make(d, EntryType.DIR, mode=0o755))
    path_bytes = 0
    for i in range(entries):
        name = f"{dirs[i % 100]}/f{i:07d}.sst"
        path_bytes += len(name)
        if kind == "file":
            e = Entry.make(name, EntryType.FILE, mode=0o644, size=1, sha256="ab" * 32, chunk=1, mtime_ns=i)
        else:
            target = ("t" * target_length + f"{i:07d}")[-target_length:]
            e = Entry.make(name, EntryType.SYMLINK, mode=0o777, target=target, mtime_ns=i)
        tree.append(e)
    gc.collect()
    check_tree("c", tree)
    links = entries if kind == "symlink" else 0
    estimate = restore_memory_needed(entries, path_bytes, links, links * target_length) - RESTORE_BASE_BYTES
    return {"measured": (peak_rss() - before) / entries, "estimate": estimate / entries}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--entries", type=int, default=300_000)
    parser.add_argument(
        "--one", nargs=3, metavar=("PATH_LENGTH", "KIND", "TARGET_LENGTH"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.one:
        path_length, kind, target_length = args.one
        print(json.dumps(one(int(path_length), kind, int(target_length), args.entries)))
        return 0
    print(load())
    print("| path bytes | entries of | target bytes | measured B/entry | estimate B/entry ", end="")
    print("| estimate / measured |")
    print("|---|---|---|---|---|---|")
    for path_length, kind, target_length in CASES:
        command = [sys.executable, "-m", "benchmarks.restore_memory", "--entries", str(args.entries)]
        command += ["--one", str(path_length), kind, str(target_length)]
        out = json.loads(subprocess.run(command, check=True, capture_output=True, text=True).stdout)
        target = str(target_length) if kind == "symlink" else "-"
        print(
            f"| {path_length} | {kind}s | {target} | {out['measured']:.0f} | {out['estimate']:.0f} "
            f"| {out['estimate'] / out['measured']:.2f} |"
        )
    print(load())
    return 0


if __name__ == "__main__":
    sys.exit(main())
