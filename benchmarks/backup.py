"""Backup throughput of a real agent against ``tar -c | <same compressor, same level> > file``.

For every compression setting, in one run on the same data (warm page cache for both):

* baseline: ``tar -cf - <collections> | <compressor> > out`` and an fsync of ``out``;
* shardkeeper: a fresh ``shardkeeper agent`` process, a static workload hook, prepare (hard-link
  snapshot) then commit, to the filesystem backend (every chunk fsynced), until SUCCESS.

Each is run ``--repeat`` times, alternately, and medians are compared: this machine's disk is noisy.
ORDER: the rounds alternate which runs first (ABBA). On this VM an agent run that follows the
baseline (whose single 1.2 GB output file is deleted just before) was often, not always, 15-25 %
slower, with more CPU in the kernel's copy into the page cache, than one that follows an agent run;
the baseline did not care what ran before it (``benchmarks/README.md``, 2026-12-01). Both medians
are printed too.
Prints throughput (uncompressed MB/s), the ratio to the baseline, the CPU seconds (user+system,
medians) of the baseline's processes and of the agent from commit to SUCCESS (all its threads), the
agent's peak RSS (the highest of the runs) and the workload pause. Run ``python -m benchmarks.backup
--scale 1`` and ``--scale 4`` to see that peak RSS and pause stay flat as the data grows.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.common import (
    COMPRESS_FILTER,
    StaticHook,
    agent_process,
    backup_request,
    children_cpu_times,
    cpu_times,
    load,
    reset,
    run_pipeline,
    table,
)
from benchmarks.dataset import data_dir, generate, total_bytes

LEVELS = {
    "NoCompression": ("none", 0),
    "BestSpeed": ("gzip", 1),
    "DefaultCompression": ("gzip", 2),
    "BestCompression": ("gzip", 3),
    "ZstdBestSpeed": ("zstd", 1),
    "ZstdDefaultCompression": ("zstd", 3),
    "ZstdBestCompression": ("zstd", 9),
}
COLLECTIONS = ["records", "small", "vectors"]
MB = 1_000_000


def baseline(data: Path, out: Path, codec: str, level: int) -> float:
    tar = ["tar", "-cf", "-", *COLLECTIONS]
    stages = [tar] if codec == "none" else [tar, [a.format(level=level) for a in COMPRESS_FILTER[codec]]]
    return run_pipeline(stages, stdout=out, cwd=data)


def timed_baseline(data: Path, out: Path, codec: str, level: int) -> dict[str, Any]:
    """``baseline``'s wall seconds, and the (user, system) CPU seconds of its processes."""
    user, system = children_cpu_times()
    seconds = baseline(data, out, codec, level)
    user_after, system_after = children_cpu_times()
    return {"seconds": seconds, "cpu": (user_after - user, system_after - system)}


def shardkeeper(
    data: Path,
    store: Path,
    hook: StaticHook,
    level_name: str,
    cpu: int,
    op_id: str,
    *,
    backend: str = "filesystem",
    env: dict[str, str] | None = None,
) -> dict[str, Any]:
    with agent_process(data, store, hook_url=hook.url, env=env) as agent:
        request = backup_request(
            op_id, COLLECTIONS, backend=backend, compression_level=level_name, cpu_percentage=cpu
        )
        started = time.perf_counter()
        agent.call("PUT", f"/v1/operations/{op_id}", json=request)
        prepared = agent.wait(op_id, "PREPARED")
        prepare_s = time.perf_counter() - started
        committed = time.perf_counter()
        user, system = cpu_times(agent.proc.pid)
        agent.call("POST", f"/v1/operations/{op_id}/commit")
        done = agent.wait(op_id, "SUCCESS")
        transfer_s = time.perf_counter() - committed
        user_after, system_after = cpu_times(agent.proc.pid)
        return {
            "seconds": transfer_s,
            "cpu": (user_after - user, system_after - system),  # of the transfer: commit to SUCCESS
            "prepare_s": prepare_s,
            "pause_ms": prepared["pauseMs"],
            "rss_mb": agent.peak_rss_mb(),
            "bytes": done["bytesTotal"],
            "workers": done["workers"],
        }


def cpu_column(runs: list[dict[str, Any]]) -> str:
    """Median user and system CPU seconds of ``runs``, as "user+system"."""
    user = statistics.median(r["cpu"][0] for r in runs)
    system = statistics.median(r["cpu"][1] for r in runs)
    return f"{user:.2f}+{system:.2f}"


def stored_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--scale", type=int, default=1)
    parser.add_argument(
        "--workdir", default=os.environ.get("SHARDKEEPER_BENCH_DIR", "/tmp/shardkeeper-bench")
    )
    parser.add_argument("--levels", default=",".join(LEVELS))
    parser.add_argument("--cpu-percentage", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=3, help="runs of each; medians are compared")
    args = parser.parse_args()

    work = Path(args.workdir)
    data = generate(data_dir(work, args.scale), scale=args.scale)
    raw, files = total_bytes(data)
    cores = len(os.sched_getaffinity(0))
    print(f"data set: {raw / MB:,.0f} MB in {files} files (scale {args.scale}); cores: {cores}; {load()}")
    hook = StaticHook(data)
    rows = []
    for name in args.levels.split(","):
        codec, level = LEVELS[name]
        out = work / "out"
        base_runs: list[dict[str, Any]] = []
        our_runs: list[dict[str, Any]] = []
        for i in range(args.repeat):  # alternate, so that both see the same (noisy) disk
            for who in ("baseline", "ours") if i % 2 == 0 else ("ours", "baseline"):  # ABBA: see ORDER
                if who == "baseline":
                    reset(out)
                    base_runs.append(timed_baseline(data, out / "baseline.tar", codec, level))
                    base_stored = stored_bytes(out)
                    continue
                reset(out)
                run = shardkeeper(data, out, hook, name, args.cpu_percentage, f"bench-{name.lower()}")
                our_runs.append({**run, "after": "baseline" if i % 2 == 0 else "agent"})
                ours_stored = stored_bytes(out)
        base_s = statistics.median(r["seconds"] for r in base_runs)
        ours = {
            "seconds": statistics.median(r["seconds"] for r in our_runs),
            "rss_mb": max(r["rss_mb"] for r in our_runs),
            "pause_ms": statistics.median(r["pause_ms"] for r in our_runs),
            "prepare_s": statistics.median(r["prepare_s"] for r in our_runs),
            "workers": our_runs[0]["workers"],
        }
        rows.append(
            {
                "setting": name,
                "codec": f"{codec}-{level}" if codec != "none" else "none",
                "ratio": f"{ours_stored / raw:.3f}",
                "baseline MB/s": f"{raw / MB / base_s:.0f}",
                "shardkeeper MB/s": f"{raw / MB / ours['seconds']:.0f}",
                "vs baseline": f"{base_s / ours['seconds']:.2f}",
                "workers": ours["workers"],
                "peak RSS MB": f"{ours['rss_mb']:.0f}",
                "CPU s, baseline (user+sys)": cpu_column(base_runs),
                "CPU s, shardkeeper's transfer (user+sys)": cpu_column(our_runs),
                "pause ms": f"{ours['pause_ms']:.1f}",
                "prepare s": f"{ours['prepare_s']:.2f}",
                "baseline ratio": f"{base_stored / raw:.3f}",
            }
        )
        print(table(rows[-1:], list(rows[-1])), flush=True)
        for after in ("baseline", "agent"):
            seconds = [r["seconds"] for r in our_runs if r["after"] == after]
            if seconds:
                mbs = raw / MB / statistics.median(seconds)
                print(f"  shardkeeper right after the {after} ran: {mbs:.0f} MB/s ({len(seconds)} runs)")
    reset(work / "out")
    print()
    print(table(rows, list(rows[0])))
    print(load())
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    sys.exit(main())
