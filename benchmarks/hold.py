"""What a backup's hold costs the workload: the write pause, and the writers' latency.

``--part pause`` (issue 15, goal 2): one node of the real sample database (``testbed.sampledb``)
with 5,000 or 50,000 SST files over 10 collections, writers on every collection (1,000 writes/s
each), and a real agent. Each sample is one backup prepare (node consistency: the agent asks the
workload to resume writes after its flush and listing); the pause is the time writes were actually
held, as the database measured it (``heldMs``, reported to the agent as ``pauseMs``). Also cluster
consistency on the same node, released the moment the agent is PREPARED (what the operator does
once every node is; its polling adds to that). Prepares are aborted once measured: no upload.

``--part cut`` (issue 16): a sample cluster of 3 or 10 nodes on a real control plane and operator,
the bank (``testbed.transfers``: cross-shard transfers from 3 client threads at full speed), and
backups in node and cluster consistency. Write latency p50/p99 of the bank's writes during the
backups (from the Backup's start to its end), against the same writes between backups; the hold
per node (``pauseMs``) and, for cluster consistency, how long every hold overlapped.

    .venv/bin/python -m benchmarks.hold --part pause --files 5000 50000 --samples 30
    .venv/bin/python -m benchmarks.hold --part cut --nodes 3 10 --backups 5
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import requests
import rocksdict

from benchmarks.common import agent_process, backup_request, free_port

COLLECTIONS = [f"c{n:02d}" for n in range(10)]


def pct(values: list[float], q: float) -> float:
    """The q-th percentile (nearest rank) of values."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))]


def make_node(root: Path, files: int) -> None:
    """``files`` SST files spread over the collections: tables written with RocksDB's SstFileWriter
    and ingested into the bottom level (non-overlapping, so no compaction rewrites them)."""
    per = files // len(COLLECTIONS)
    opts = rocksdict.Options(raw_mode=True)
    opts.create_if_missing(True)
    value = os.urandom(1000)
    for name in COLLECTIONS:
        ext = root / ".ext" / name
        ext.mkdir(parents=True)
        paths = []
        for f in range(per):
            writer = rocksdict.SstFileWriter(options=opts)
            path = str(ext / f"{f:06d}.sst")
            writer.open(path)
            writer[b"k%09d-0" % f] = value
            writer[b"k%09d-1" % f] = value
            writer.finish()
            paths.append(path)
        db = rocksdict.Rdict(str(root / name), opts)
        ingest = rocksdict.IngestExternalFileOptions()
        ingest.set_move_files(True)
        db.ingest_external_file(paths, ingest)
        db.close()
    shutil.rmtree(root / ".ext")


@contextmanager
def sampledb(root: Path) -> Iterator[str]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    argv = [sys.executable, "-m", "testbed.sampledb", "--node", "bench-0", "--data-root", str(root)]
    proc = subprocess.Popen([*argv, "--listen", f"127.0.0.1:{port}"], stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while True:
        try:
            requests.get(url + "/healthz", timeout=1)
            break
        except requests.RequestException:
            if time.monotonic() > deadline or proc.poll() is not None:
                raise
            time.sleep(0.1)
    try:
        yield url
    finally:
        proc.terminate()
        proc.wait(30)


def pause_samples(files: int, samples: int, consistency: str, work: Path) -> dict[str, Any]:
    data, store = work / "data", work / "store"
    if not (data / COLLECTIONS[0]).is_dir():
        shutil.rmtree(data, ignore_errors=True)
        make_node(data, files)
    store.mkdir(exist_ok=True)
    pauses: list[float] = []
    with sampledb(data) as db, agent_process(data, store, hook_url=db + "/hook") as agent:
        listed = sum(1 for c in COLLECTIONS for f in os.listdir(data / c) if f.endswith(".sst"))
        requests.post(db + "/writers", json={"collections": COLLECTIONS, "interval": 0.001}, timeout=30)
        time.sleep(1)
        for n in range(samples):
            op_id = f"p{consistency[0]}{n:03d}"
            request = backup_request(op_id, COLLECTIONS, consistency=consistency)
            agent.call("PUT", f"/v1/operations/{op_id}", json=request)
            status = agent.wait(op_id, "PREPARED")
            if consistency == "cluster":
                status = agent.call("POST", f"/v1/operations/{op_id}/release")
            pauses.append(float(status["pauseMs"]))
            agent.call("POST", f"/v1/operations/{op_id}/abort", json={"reason": "measured"})
            agent.wait(op_id, "CANCELED", "FAILED")
            time.sleep(0.2)
        db_pauses = requests.get(db + "/stats", timeout=30).json()["pausesMs"]
        requests.delete(db + "/writers", timeout=30)
    assert len(db_pauses) == samples, (len(db_pauses), samples)  # one hold per prepare, all measured
    return {
        "files": listed,
        "consistency": consistency,
        "n": samples,
        "p50": pct(pauses, 50),
        "p99": pct(pauses, 99),
        "max": max(pauses),
    }


def part_pause(args: argparse.Namespace) -> None:
    print(f"load before: {os.getloadavg()}")
    rows = []
    for files in args.files:
        with tempfile.TemporaryDirectory(prefix="hold-bench-") as tmp:
            for consistency in ("node", "cluster"):
                rows.append(pause_samples(files, args.samples, consistency, Path(tmp)))
                print(rows[-1], flush=True)
    print(f"load after: {os.getloadavg()}")
    print("\n| SST files on the node | consistency | samples | pause p50 ms | p99 ms | max ms |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['files']:,} | {r['consistency']} | {r['n']} "
            f"| {r['p50']:.1f} | {r['p99']:.1f} | {r['max']:.1f} |"
        )


def _ts(text: str) -> float:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def part_cut(args: argparse.Namespace) -> None:
    import yaml

    from testbed.cluster import SampleCluster
    from testbed.controlplane import ControlPlane
    from testbed.operator import OperatorProcess
    from testbed.transfers import BankDriver

    print(f"load before: {os.getloadavg()}")
    rows = []
    with tempfile.TemporaryDirectory(prefix="cut-bench-") as tmp:
        root = Path(tmp)
        cp = ControlPlane(root / "cp").start()
        try:
            for nodes in args.nodes:
                namespace = f"bench-{nodes}"
                cp.kubectl("create", "namespace", namespace)
                token = root / f"token-{nodes}"
                token.write_text(os.urandom(24).hex())
                backups = root / f"backups-{nodes}"
                backups.mkdir()
                env = {"BACKUP_FILESYSTEM_PATH": str(backups)}
                cluster = SampleCluster(
                    cp,
                    namespace=namespace,
                    root=root / namespace,
                    token_file=token,
                    replicas=nodes,
                    agent_env=env,
                )
                cluster.create()
                operator = OperatorProcess(
                    cp, root / f"op-{nodes}", token, [namespace], env=env, tick_seconds=0.2
                )
                operator.start()
                bank = BankDriver([n.db_url for n in cluster.nodes], threads=3)
                try:
                    for mode in ("node", "cluster"):
                        rows.append(_cut_runs(cp, namespace, mode, nodes, args.backups, bank, yaml))
                        print(rows[-1], flush=True)
                finally:
                    bank.stop()
                    operator.stop()
                    cluster.stop()
        finally:
            cp.stop()
    print(f"load after: {os.getloadavg()}")
    print(
        "\n| nodes | consistency | backups | write p50 ms (idle / backup) | write p99 ms (idle / backup) "
        "| hold per node p50 / max ms | holds overlapped ms (min) |"
    )
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        overlap = f"{r['overlap_min']:.1f}" if r["overlap_min"] is not None else "—"
        print(
            f"| {r['nodes']} | {r['mode']} | {r['backups']} | {r['idle_p50']:.2f} / {r['busy_p50']:.2f} "
            f"| {r['idle_p99']:.2f} / {r['busy_p99']:.2f} "
            f"| {r['hold_p50']:.1f} / {r['hold_max']:.1f} | {overlap} |"
        )


def _cut_runs(
    cp: Any, namespace: str, mode: str, nodes: int, backups: int, bank: Any, yaml: Any
) -> dict[str, Any]:
    windows: list[tuple[float, float]] = []
    holds: list[float] = []
    overlaps: list[float] = []
    for n in range(backups):
        time.sleep(2)  # idle writes between backups: the baseline
        name = f"{mode}-{n:02d}"
        manifest = {
            "apiVersion": "shardkeeper.io/v1alpha1",
            "kind": "Backup",
            "metadata": {"name": name},
            "spec": {"backend": "filesystem", "cluster": "sampledb", "consistency": mode},
        }
        cp.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(manifest))
        deadline = time.monotonic() + 300
        while True:
            out = cp.kubectl("get", "backup", name, "-n", namespace, "-o", "json").stdout
            status = json.loads(out).get("status") or {}
            if status.get("phase") in ("SUCCESS", "FAILED"):
                break
            assert time.monotonic() < deadline, status
            time.sleep(0.3)
        assert status["phase"] == "SUCCESS", status.get("error")
        windows.append((_ts(status["startedAt"]), _ts(status["completedAt"])))
        holds += [float(s["pauseMs"]) for s in status["nodes"].values()]
        if status.get("holdOverlapMs") is not None:
            overlaps.append(float(status["holdOverlapMs"]))
    samples = list(bank.latency.samples)
    busy = [d * 1000 for t, d in samples if any(s <= t + d and t <= e for s, e in windows)]
    first, last = windows[0][0] - 2, windows[-1][1]
    idle = [
        d * 1000
        for t, d in samples
        if first <= t <= last and not any(s <= t + d and t <= e for s, e in windows)
    ]
    return {
        "nodes": nodes,
        "mode": mode,
        "backups": backups,
        "idle_p50": pct(idle, 50),
        "idle_p99": pct(idle, 99),
        "busy_p50": pct(busy, 50),
        "busy_p99": pct(busy, 99),
        "hold_p50": statistics.median(holds),
        "hold_max": max(holds),
        "overlap_min": min(overlaps) if overlaps else None,
    }


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--part", choices=["pause", "cut"], required=True)
    p.add_argument("--files", type=int, nargs="+", default=[5000, 50000])
    p.add_argument("--samples", type=int, default=30)
    p.add_argument("--nodes", type=int, nargs="+", default=[3, 10])
    p.add_argument("--backups", type=int, default=5)
    args = p.parse_args()
    part_pause(args) if args.part == "pause" else part_cut(args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
