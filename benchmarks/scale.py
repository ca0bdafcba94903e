"""Scale: many files on one node, many collections on one node, and the Backup status's size.

* ``--files N``: N small files (``--file-size`` bytes of random data, 1,000 to a directory) in one
  collection, backed up by a real agent process (static hook listing every file, or with
  ``--no-hook`` none: the agent walks them; filesystem backend): seconds, files/s, the agent's peak
  RSS (VmHWM from /proc) and its RSS once idle after the backup (what it keeps of it), the pause, the
  node descriptor's size.
  With ``--incremental``, a fresh agent then backs them up again, unchanged, incremental on the
  first backup: the same columns; with ``--same-agent`` too, the agent of the first backup does (as
  a long-lived agent would: its peak is reset between the two, so each row is its own backup's).
  With ``--restore``, a fresh agent then restores them onto an empty data root: seconds from commit
  to SUCCESS, files/s, peak RSS, CPU seconds.
* ``--collections N``: N collections of one ~100 KB file each on one agent: seconds, peak RSS.
* ``--status N``: the JSON size of a Backup object's status for N/10, N and 10N collections on
  ``--nodes`` nodes, built by the operator's own code (``list_collections``, agents' answers folded
  in by ``mirror``): typical answers, and the worst an agent's HTTP body may hold, for ``--nodes``
  and 30 nodes. Measured without a control plane.

Each prints one table row. Run ``python -m benchmarks.scale --files 100000 --collections 3334
--status 10000``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.common import (
    Agent,
    StaticHook,
    agent_process,
    backup_request,
    cpu_seconds,
    load,
    reset,
    table,
)
from benchmarks.dataset import many_collections, many_files
from benchmarks.restore import shardkeeper_restore

MB = 1_000_000


def backup(
    data: Path,
    store: Path,
    collections: list[str],
    level: str,
    op_id: str,
    *,
    hook: bool = True,
    base: str | None = None,
    agent: Agent | None = None,
) -> dict[str, Any]:
    """One backup by a fresh agent process, or by ``agent`` (one that ran others: its peak RSS is
    reset first, so that it is this backup's)."""
    if agent is not None:
        Path(f"/proc/{agent.proc.pid}/clear_refs").write_text("5")  # resets VmHWM (Linux 4.0+)
        return _backup_on(agent, store, collections, level, op_id, base)
    url = StaticHook(data).url if hook else None
    with agent_process(data, store, hook_url=url) as fresh:
        return _backup_on(fresh, store, collections, level, op_id, base)


def _backup_on(
    agent: Agent, store: Path, collections: list[str], level: str, op_id: str, base: str | None
) -> dict[str, Any]:
    request = backup_request(
        op_id,
        collections,
        compression_level=level,
        cpu_percentage=50,
        reservation_seconds=3600,
        incremental_base=base,
    )
    started = time.perf_counter()
    cpu_before = cpu_seconds(agent.proc.pid)
    agent.call("PUT", f"/v1/operations/{op_id}", json=request)
    prepared = agent.wait(op_id, "PREPARED")
    agent.call("POST", f"/v1/operations/{op_id}/commit")
    done = agent.wait(op_id, "SUCCESS")
    seconds = time.perf_counter() - started
    cpu = cpu_seconds(agent.proc.pid) - cpu_before
    descriptor = next(store.glob(f"**/{op_id}/**/backup.json"))
    time.sleep(1)  # the agent is idle: what it keeps of the operation
    return {
        "seconds": seconds,
        "pause_ms": prepared.get("pauseMs"),
        "rss_mb": agent.peak_rss_mb(),
        "idle_rss_mb": agent.rss_mb(),
        "agent_cpu_s": cpu,
        "files": done["filesTotal"],
        "descriptor_mb": descriptor.stat().st_size / MB,
    }


def status_size(collections: int, nodes: int, *, worst: bool = False) -> dict[str, Any]:
    import datetime as dt

    from shardkeeper.api.agent import OperationStatus
    from shardkeeper.api.backup import BackupStatus
    from shardkeeper.api.status import NodeStatus
    from shardkeeper.coordinator.observe import mirror

    names = [f"collection-{i:05d}" for i in range(collections)]
    status = BackupStatus(phase="SUCCESS", backup_id="nightly-20261130-000000")
    status.list_collections(names)
    now = dt.datetime.now(dt.UTC)
    for i in range(nodes):
        # What an agent may answer: typical (one short warning), or the worst an HTTP body can
        # hold (a 1 MB error, 10,000 warnings of 4 KiB), folded in as the operator folds it.
        answer = OperationStatus(
            id="nightly",
            uid="u",
            kind="backup",
            node=f"sampledb-{i}",
            phase="FAILED" if worst else "SUCCESS",
            error="e" * 1_000_000 if worst else None,
            collections=names,
            bytes_done=10**9,
            bytes_total=10**9,
            files_done=collections,
            files_total=collections,
            workers=1,
            pause_ms=12.5,
            warnings=["w" * 4096] * 10_000 if worst else ["some/path: a socket"],
            started_at=now,
            updated_at=now,
        )
        node = status.nodes[answer.node] = NodeStatus()
        mirror(node, answer)
    body = {"status": status.wire()}
    return {
        "collections": collections,
        "nodes": nodes,
        "agent answers": "worst case" if worst else "typical",
        "status KiB": len(json.dumps(body)) / 1024,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--workdir", default=os.environ.get("SHARDKEEPER_BENCH_DIR", "/tmp/shardkeeper-bench")
    )
    parser.add_argument("--files", type=int, default=0)
    parser.add_argument("--file-size", type=int, default=1024)
    parser.add_argument("--collections", type=int, default=0)
    parser.add_argument("--status", type=int, default=0)
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--level", default="ZstdBestSpeed")
    parser.add_argument(
        "--restore",
        action="store_true",
        help="--files: then restore them with a fresh agent (an empty data root), as a restore does",
    )
    parser.add_argument(
        "--incremental",
        action="store_true",
        help="--files: then back them up again, unchanged, incremental on the first backup (a fresh agent)",
    )
    parser.add_argument(
        "--same-agent",
        action="store_true",
        help="--incremental: by the agent that ran the first backup, as a long-lived agent would",
    )
    parser.add_argument(
        "--no-hook",
        action="store_true",
        help="--files: the agent walks the files itself (no workload hook listing them)",
    )
    args = parser.parse_args()
    work = Path(args.workdir)
    print(load())
    if args.files:
        data = work / f"files-{args.files}-{args.file_size}"
        if not (data / ".complete").exists():
            reset(data)
            many_files(data / "many", files=args.files, size=args.file_size)
            (data / ".complete").touch()
        reset(work / "scale-store")
        kept = contextlib.ExitStack()
        agent = None
        if args.same_agent:
            url = StaticHook(data).url if not args.no_hook else None
            agent = kept.enter_context(agent_process(data, work / "scale-store", hook_url=url))
        row = backup(
            data,
            work / "scale-store",
            ["many"],
            args.level,
            "scale-files",
            hook=not args.no_hook,
            agent=agent,
        )
        row = {
            "files": args.files,
            "listed by": "the agent" if args.no_hook else "the hook",
            **row,
            "files/s": row["files"] / row["seconds"],
        }
        print(table([_fmt(row)], list(row)), flush=True)
        if args.incremental:
            row = backup(
                data,
                work / "scale-store",
                ["many"],
                args.level,
                "scale-incremental",
                hook=not args.no_hook,
                base="scale-files",
                agent=agent,
            )
            row = {**row, "files/s": row["files"] / row["seconds"]}
            print("incremental:", table([_fmt(row)], list(row)), flush=True)
        kept.close()
        if args.restore:
            reset(work / "scale-restored")
            done = shardkeeper_restore(
                work / "scale-store", work / "scale-restored", None, "scale-files", 50, ["many"]
            )
            row = {
                "files": done["files"],
                "seconds": done["seconds"],
                "rss_mb": done["rss_mb"],
                "agent_cpu_s": done["agent_cpu_s"],
                "files/s": done["files"] / done["seconds"],
            }
            print("restore:", table([_fmt(row)], list(row)), flush=True)
            reset(work / "scale-restored")
    if args.collections:
        data = work / f"collections-{args.collections}"
        if not (data / ".complete").exists():
            reset(data)
            many_collections(data, collections=args.collections, size=100_000)
            (data / ".complete").touch()
        names = sorted(p.name for p in data.iterdir() if p.is_dir())
        reset(work / "scale-store")
        row = backup(data, work / "scale-store", names, args.level, "scale-collections")
        row = {"collections": args.collections, **row}
        print(table([_fmt(row)], list(row)), flush=True)
    if args.status:
        sizes = (args.status // 10, args.status, args.status * 10)
        rows = [_fmt(status_size(n, args.nodes)) for n in sizes]
        rows += [_fmt(status_size(args.status, nodes, worst=True)) for nodes in (args.nodes, 30)]
        print(table(rows, list(rows[0])))
    reset(work / "scale-store")
    print(load())
    return 0


def _fmt(row: dict[str, Any]) -> dict[str, Any]:
    return {k: f"{v:.1f}" if isinstance(v, float) else v for k, v in row.items()}


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    sys.exit(main())
