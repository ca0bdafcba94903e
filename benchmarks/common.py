"""Shared benchmark plumbing: a real agent process, a static workload hook, baselines, reporting."""

from __future__ import annotations

import os
import resource
import secrets
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests
from aiohttp import web

from shardkeeper.api.agent import PrepareBackup, PrepareRestore

REPO = Path(__file__).resolve().parent.parent

#: The baseline compressor for each level, as a command-line filter (stdin -> stdout): for gzip the
#: library and level the agent uses (ISA-L's igzip); for zstd the reference CLI, single-threaded
#: (``zstd -1 -T1``, as issue 15 states the goal). ``zstd_filter.py`` is the same library the agent
#: uses (python-zstandard), for comparison: with zstd 1.5.7 it compresses this data set ~20 %
#: faster than the distribution's CLI 1.5.4.
COMPRESS_FILTER = {
    "gzip": [sys.executable, "-m", "isal.igzip", "-c", "-{level}"],
    "zstd": ["zstd", "-q", "-c", "-T1", "-{level}"],
    "zstd-lib": [sys.executable, str(REPO / "benchmarks" / "zstd_filter.py"), "{level}"],
}
DECOMPRESS_FILTER = {
    "gzip": [sys.executable, "-m", "isal.igzip", "-d", "-c"],
    "zstd": ["zstd", "-q", "-d", "-c"],
    "zstd-lib": [sys.executable, str(REPO / "benchmarks" / "zstd_filter.py"), "-d"],
}
#: The one node every benchmark's agent serves.
NODE = "bench-0"


def load() -> str:
    """The machine's load averages (1, 5, 15 min), to print next to every result."""
    return "load average " + " ".join(f"{x:.2f}" for x in os.getloadavg())


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class StaticHook:
    """A workload hook for data that does not change: every file is immutable (or, with ``mutable``,
    every file of those collections is not). Runs in a thread."""

    def __init__(self, data_root: Path, *, mutable: frozenset[str] = frozenset()) -> None:
        self.data_root = data_root
        self.mutable = mutable
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._loop_ready = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()
        self._loop_ready.wait(10)

    def _serve(self) -> None:
        import asyncio

        async def prepare(request: web.Request) -> web.Response:
            body = await request.json()
            files: list[dict[str, object]] = []
            for collection in body["collections"]:
                for dirpath, _dirs, names in os.walk(self.data_root / collection):
                    rel = os.path.relpath(dirpath, self.data_root)
                    immutable = collection not in self.mutable
                    files.extend({"path": f"{rel}/{name}", "immutable": immutable} for name in sorted(names))
            return web.json_response({"files": files})

        async def ok(_: web.Request) -> web.Response:
            return web.json_response({"ok": True})

        app = web.Application()
        app.router.add_post("/prepare", prepare)
        app.router.add_post("/release", ok)
        app.router.add_post("/restored", ok)
        loop = asyncio.new_event_loop()
        runner = web.AppRunner(app, access_log=None)
        loop.run_until_complete(runner.setup())
        loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", self.port).start())
        self._loop_ready.set()
        loop.run_forever()


@dataclass
class Agent:
    proc: subprocess.Popen[bytes]
    url: str
    token: str

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        resp = requests.request(
            method, self.url + path, headers={"Authorization": f"Bearer {self.token}"}, timeout=600, **kwargs
        )
        resp.raise_for_status()
        return resp.json()

    def wait(self, op_id: str, *phases: str, timeout: float = 3600) -> dict[str, Any]:
        """Until the operation is in one of ``phases``: a long poll, as the operator asks (an agent
        without it, e.g. an older checkout's, is polled every BENCH_POLL_SECONDS instead)."""
        deadline = time.monotonic() + timeout
        seen: str | None = None
        while True:
            asked = time.monotonic()
            query = f"?waitWhile={seen}&timeoutSeconds=5" if seen else ""
            status: dict[str, Any] = self.call("GET", f"/v1/operations/{op_id}{query}")
            if status["phase"] in phases:
                return status
            if status["phase"] in ("FAILED", "CANCELED"):
                raise RuntimeError(f"{op_id}: {status['phase']}: {status.get('error')}")
            if time.monotonic() > deadline:
                raise TimeoutError(status)
            if status["phase"] == seen:
                time.sleep(
                    max(0.0, float(os.environ.get("BENCH_POLL_SECONDS", "0.02")) - (time.monotonic() - asked))
                )
            seen = status["phase"]

    def peak_rss_mb(self) -> float:
        return self._status_mb("VmHWM:")

    def rss_mb(self) -> float:
        """Resident now (VmRSS): after an operation, what the idle agent keeps."""
        return self._status_mb("VmRSS:")

    def _status_mb(self, field: str) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith(field):
                return int(line.split()[1]) / 1024
        raise RuntimeError(f"no {field}")


@contextmanager
def agent_process(
    data_root: Path, store: Path, *, hook_url: str | None, env: dict[str, str] | None = None
) -> Iterator[Agent]:
    """A real ``shardkeeper agent`` process; a fresh one per run, so its peak RSS is that run's.
    Without ``hook_url`` it has no workload hook (it walks the collections itself)."""
    token = secrets.token_hex(16)
    port = free_port()
    proc_env = {
        **os.environ,
        "POD_NAME": NODE,
        "SHARDKEEPER_AGENT_TOKEN": token,
        "BACKUP_FILESYSTEM_PATH": str(store),
        "SHARDKEEPER_LOG_LEVEL": "WARNING",
        **(env or {}),
    }
    proc = subprocess.Popen(
        [
            # Another checkout's interpreter (its virtualenv runs its code), to compare versions.
            os.environ.get("SHARDKEEPER_BENCH_PYTHON", sys.executable),
            "-m",
            "shardkeeper",
            "agent",
            "--data-root",
            str(data_root),
            "--listen",
            f"127.0.0.1:{port}",
            *(["--hook-url", hook_url] if hook_url else []),
        ],
        env=proc_env,
    )
    agent = Agent(proc, f"http://127.0.0.1:{port}", token)
    deadline = time.monotonic() + 30
    while True:
        try:
            requests.get(agent.url + "/healthz", timeout=1)
            break
        except requests.RequestException:
            if time.monotonic() > deadline or proc.poll() is not None:
                raise
            time.sleep(0.05)
    try:
        yield agent
    finally:
        proc.terminate()
        proc.wait(30)


def backup_request(op_id: str, collections: list[str], **fields: Any) -> dict[str, Any]:
    """The body of ``PUT /v1/operations/<op_id>`` for a backup of ``collections`` by ``NODE`` to the
    filesystem backend, reserved for 600 s; ``fields`` (``api.agent.PrepareBackup``'s names, e.g.
    ``compression_level``) on top. Built by the agent's own model, so a benchmark sends what the
    agent reads (pydantic's ``ValidationError`` otherwise)."""
    fields = {"backend": "filesystem", "reservation_seconds": 600, **fields}
    prepare = PrepareBackup(id=op_id, uid=op_id, node=NODE, collections=collections, **fields)
    return prepare.wire()


def restore_request(op_id: str, backup_id: str, collections: list[str], **fields: Any) -> dict[str, Any]:
    """The same for a restore of ``NODE``'s ``collections`` of backup ``backup_id`` onto ``NODE``
    (``api.agent.PrepareRestore``'s names in ``fields``)."""
    fields = {"backend": "filesystem", "reservation_seconds": 600, "source_node": NODE, **fields}
    fields |= {"id": op_id, "uid": op_id, "node": NODE, "backup_id": backup_id, "collections": collections}
    return PrepareRestore(**fields).wire()


def cpu_times(pid: int | None) -> tuple[float, float]:
    """(user, system) CPU seconds of a process, its threads included ((0, 0) if it is gone)."""
    if pid is None:
        return 0.0, 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0, 0.0
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


def cpu_seconds(pid: int | None) -> float:
    """utime + stime of a process, in seconds (0 if it is gone)."""
    return sum(cpu_times(pid))


def children_cpu_times() -> tuple[float, float]:
    """(user, system) CPU seconds of this process's children that have ended and been waited for."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime, usage.ru_stime


def fsync_tree(path: Path) -> None:
    for p in path.rglob("*") if path.is_dir() else [path]:
        if p.is_file():
            fd = os.open(p, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)


def run_pipeline(stages: list[list[str]], *, stdout: Path | None = None, cwd: Path | None = None) -> float:
    """Runs ``a | b | c [> stdout]`` and returns its wall time (including an fsync of the output)."""
    started = time.perf_counter()
    procs: list[subprocess.Popen[bytes]] = []
    prev = None
    out_file = stdout.open("wb") if stdout else None
    for i, argv in enumerate(stages):
        last = i == len(stages) - 1
        proc = subprocess.Popen(
            argv,
            stdin=prev,
            stdout=(out_file if last and out_file else subprocess.PIPE if not last else None),
            cwd=cwd,
        )
        if prev is not None:
            prev.close()
        prev = proc.stdout
        procs.append(proc)
    for proc in procs:
        if proc.wait() != 0:
            raise RuntimeError(f"{proc.args!r} exited {proc.returncode}")
    if out_file:
        out_file.flush()
        os.fsync(out_file.fileno())
        out_file.close()
    return time.perf_counter() - started


def reset(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)


def drop_page_cache() -> bool:
    """Writes out and drops the clean page cache (needs root), so that a timed run neither finds its
    input in memory nor pays for reclaiming what the runs before it left there; False if not
    allowed. On this VM, ``zstd -d | tar -x`` of the benchmarks' data set spent 2.9-3.6 s of system
    CPU with the cache dropped first, 5.2-5.5 s once ~14 GB of earlier runs' files were cached
    (2026-12-02)."""
    os.sync()
    try:
        Path("/proc/sys/vm/drop_caches").write_text("1\n")
    except OSError:
        return False
    return True


#: Seconds after an inode's deletion during which ext4 without a journal (this VM's root filesystem:
#: no jbd2 thread, ``journal_task`` empty) avoids reusing it: 60, or 360 while its inode table block
#: is dirty, which creating a neighbour makes it (``RECENTCY_MIN`` and ``RECENTCY_DIRTY`` in
#: fs/ext4/ialloc.c, ``recently_deleted``; it falls back to such an inode only when its group has
#: no other). Each file created meanwhile scans past every such inode of its block group whose
#: table block is cached: after a tree of 5,000 files was deleted (and synced), creating 5,000
#: others took 3.3-4.4 s of kernel CPU at once, 2.4 s 70 s later, 1.5 s at once with the page cache
#: dropped in between, 0.27-0.39 s with no deletion near (2026-12-02). A restore timed in that
#: window measures the filesystem's scan more than the restore.
INODE_REUSE_DELAY_S = 360


class Deletions:
    """Removes trees, and before a timed run waits out ``INODE_REUSE_DELAY_S`` since the last
    removal, this process's or an earlier run's (the time is kept in ``stamp``)."""

    def __init__(self, stamp: Path) -> None:
        self.stamp = stamp

    def remove(self, path: Path) -> None:
        if path.exists():
            shutil.rmtree(path)
            os.sync()  # the inode tables written: the shorter window, where nothing re-dirties them
            self.stamp.parent.mkdir(parents=True, exist_ok=True)
            self.stamp.write_text(f"{time.time()}\n")

    def settle(self) -> float:
        """Waits until ``INODE_REUSE_DELAY_S`` have passed since the last removal; returns seconds waited."""
        try:
            last = float(self.stamp.read_text())
        except (FileNotFoundError, ValueError):
            return 0.0
        wait = max(0.0, last + INODE_REUSE_DELAY_S + 1 - time.time())
        time.sleep(wait)
        return wait


def table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    widths = {c: max(len(c), *(len(str(r[c])) for r in rows)) for c in columns}
    lines = ["  ".join(c.ljust(widths[c]) for c in columns)]
    lines += ["  ".join(str(r[c]).ljust(widths[c]) for c in columns) for r in rows]
    return "\n".join(lines)
