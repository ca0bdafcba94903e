"""Backup throughput of two versions of the agent against the same baseline, alternately in one run.

``--other`` is another checkout's interpreter (its virtualenv runs its code, e.g.
``/work/main/.venv/bin/python``); this checkout's is the other side. Per setting, ``--repeat``
rounds of: the ``tar | compressor`` baseline, then the two agents, in turn first
(``benchmarks.backup``'s functions and its ORDER note); medians are compared. Prints MB/s and
the ratio to the baseline for each.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path

from benchmarks.backup import LEVELS, baseline, shardkeeper
from benchmarks.common import StaticHook, load, reset
from benchmarks.dataset import data_dir, generate, total_bytes


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--other", required=True, help="the other checkout's python")
    parser.add_argument(
        "--workdir", default=os.environ.get("SHARDKEEPER_BENCH_DIR", "/tmp/shardkeeper-bench")
    )
    parser.add_argument("--levels", default="NoCompression,ZstdBestSpeed")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    work = Path(args.workdir)
    data = generate(data_dir(work))
    raw, _ = total_bytes(data)
    hook, out = StaticHook(data), work / "out"
    print(load())
    for name in args.levels.split(","):
        codec, level = LEVELS[name]
        runs: dict[str, list[float]] = {"baseline": [], "other": [], "this": []}
        for i in range(args.repeat):
            reset(out)
            runs["baseline"].append(baseline(data, out / "baseline.tar", codec, level))
            sides = [("other", args.other), ("this", sys.executable)]
            # The side right after the baseline runs slower on this VM (see benchmarks.backup's
            # ORDER): each side takes that place every other round.
            for who, python in sides if i % 2 == 0 else sides[::-1]:
                reset(out)
                os.environ["SHARDKEEPER_BENCH_PYTHON"] = python
                runs[who].append(shardkeeper(data, out, hook, name, 50, f"versions-{who}-{i}")["seconds"])
        m = {k: statistics.median(v) for k, v in runs.items()}
        print(
            f"{name}: baseline {raw / 1e6 / m['baseline']:.0f} MB/s; "
            + "; ".join(
                f"{w} {raw / 1e6 / m[w]:.0f} MB/s ({m['baseline'] / m[w]:.2f})" for w in ("other", "this")
            ),
            flush=True,
        )
    reset(out)
    print(load())
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    sys.exit(main())
