"""The same backup through the real agent to each backend, on the same data in one run: the
filesystem, and real servers on loopback (versitygw for S3; optionally fake-gcs-server and Azurite).
Runs alternate (``--repeat``), medians are compared, and each backend's throughput is given as a
ratio to the filesystem's. The servers share this machine's two cores and disk with the agent.

    python -m benchmarks.backends --backends filesystem,s3
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path

from benchmarks.backup import MB, shardkeeper
from benchmarks.common import StaticHook, reset, table
from benchmarks.dataset import data_dir, generate, total_bytes
from testbed.servers import SERVERS


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--workdir", default=os.environ.get("SHARDKEEPER_BENCH_DIR", "/tmp/shardkeeper-bench")
    )
    parser.add_argument("--backends", default="filesystem,s3")
    parser.add_argument("--levels", default="DefaultCompression,ZstdBestSpeed,NoCompression")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    work = Path(args.workdir)
    data = generate(data_dir(work), scale=1)
    raw, _ = total_bytes(data)
    hook = StaticHook(data)
    backends = args.backends.split(",")
    servers = {}
    for name in backends:
        if name != "filesystem":
            servers[name] = SERVERS[name](work / f"server-{name}").start()
            servers[name].create_bucket()
    rows = []
    try:
        for level in args.levels.split(","):
            seconds: dict[str, list[float]] = {b: [] for b in backends}
            for run in range(args.repeat):
                for backend in backends:
                    store = work / "fs-store"
                    reset(store)
                    env = servers[backend].env() if backend in servers else {}
                    op_id = f"b-{level.lower()}-{backend}-{run}"
                    result = shardkeeper(data, store, hook, level, 50, op_id, backend=backend, env=env)
                    seconds[backend].append(result["seconds"])
            base = statistics.median(seconds["filesystem"])
            row = {"setting": level}
            for backend in backends:
                median = statistics.median(seconds[backend])
                row[f"{backend} MB/s"] = f"{raw / MB / median:.0f}"
                if backend != "filesystem":
                    row[f"{backend} / filesystem"] = f"{base / median:.2f}"
            rows.append(row)
            print(table(rows[-1:], list(rows[-1])), flush=True)
    finally:
        for server in servers.values():
            server.stop()
    print()
    print(table(rows, list(rows[0])))
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    sys.exit(main())
