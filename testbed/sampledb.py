"""The sample workload: a tiny sharded key-value database on RocksDB (rocksdict), one process per node.

Each collection on a node is a RocksDB directory under the data root. Writers append sequence
numbered keys (``s000000000042``) whose values are derived from (collection, node, seq), so a test can
check any restored collection is exactly a prefix of what was written, value for value.

It implements the shardkeeper workload hook (``shardkeeper.api.hook``):

* ``prepare``: hold writes to the collections, pause compaction (and wait for a running one),
  flush memtables, and list the files: SSTs are immutable; CURRENT, MANIFEST, OPTIONS are copied.
  WAL files are left out: after the flush, with writes held, everything they hold is in SSTs.
* ``release``: resume compaction and writes. A hold that is never released ends by itself after
  ``--hold-timeout`` seconds, so a crashed agent cannot wedge the database.
* ``restored``: open the collections that were just moved into place.

Run: ``python -m testbed.sampledb --node N --data-root D --listen 127.0.0.2:8480``.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import rocksdict
from aiohttp import web

log = logging.getLogger("sampledb")

IMMUTABLE_SUFFIXES = (".sst", ".blob")
COPIED_PREFIXES = ("CURRENT", "MANIFEST-", "OPTIONS-", "IDENTITY", "rocksdict-config.json")


def value_for(collection: str, node: str, seq: int, size: int) -> bytes:
    """Deterministic, half text and half noise (like a record with a vector): tests recompute it to
    check restored data, and it compresses about as well as real data does."""
    text = (f"{collection}:{node}:{seq}:" * (size // 16 + 1)).encode()[: size // 2]
    return text + hashlib.shake_128(f"{collection}/{node}/{seq}".encode()).digest(size - len(text))


def seq_key(seq: int) -> str:
    return f"s{seq:012d}"


@dataclass
class Collection:
    name: str
    path: Path
    db: rocksdict.Rdict
    #: Held by writers for each put, and by a hook prepare for the whole hold.
    lock: threading.Lock = field(default_factory=threading.Lock)
    next_seq: int = 0
    acked: int = 0


def _open(path: Path) -> rocksdict.Rdict:
    opts = rocksdict.Options(raw_mode=True)
    opts.create_if_missing(True)
    opts.set_write_buffer_size(4 << 20)
    return rocksdict.Rdict(str(path), opts)


class SampleDb:
    def __init__(self, node: str, root: Path, *, value_size: int, hold_timeout: float) -> None:
        self.node = node
        self.root = root
        self.value_size = value_size
        self.hold_timeout = hold_timeout
        self.collections: dict[str, Collection] = {}
        self.holds: dict[str, tuple[list[str], asyncio.TimerHandle]] = {}
        #: A release that overtakes its prepare (still running) must keep that prepare from holding.
        self.preparing: set[str] = set()
        self.released: set[str] = set()
        self.writers: dict[str, threading.Event] = {}
        self.fail_next_prepare = False
        #: Test switch: how long a prepare waits before it holds writes (a slow node).
        self.prepare_delay = 0.0
        #: Test switch: how long loading restored collections takes (a restore stays FINALIZING).
        self.restored_delay = 0.0
        self.pauses_ms: list[float] = []
        #: What each prepare listed (path -> size), so tests can check the backup holds exactly that.
        self.prepared: dict[str, dict[str, int]] = {}
        self._hold_started: dict[str, float] = {}
        for entry in sorted(root.iterdir()):
            if entry.is_dir() and not entry.name.startswith("."):
                self.open(entry.name)

    def open(self, name: str) -> Collection:
        if name not in self.collections:
            db = _open(self.root / name)
            col = Collection(name, self.root / name, db)
            last = None
            for key in db.keys(backwards=True):
                last = key
                break
            col.next_seq = col.acked = int(last[1:].decode()) + 1 if last else 0
            self.collections[name] = col
        return self.collections[name]

    def write(self, col: Collection, count: int) -> None:
        for _ in range(count):
            with col.lock:
                seq = col.next_seq
                col.db[seq_key(seq).encode()] = value_for(col.name, self.node, seq, self.value_size)
                col.next_seq = col.acked = seq + 1

    def put_seq(self, col: Collection, seq: int) -> None:
        with col.lock:
            col.db[seq_key(seq).encode()] = value_for(col.name, "cluster", seq, self.value_size)
            col.acked = max(col.acked, seq + 1)

    def _writer_loop(self, col: Collection, stop: threading.Event, interval: float) -> None:
        while not stop.is_set():
            self.write(col, 1)
            if interval:
                stop.wait(interval)

    def start_writers(self, names: list[str], interval: float) -> None:
        for name in names:
            if name in self.writers:
                continue
            stop = threading.Event()
            self.writers[name] = stop
            threading.Thread(
                target=self._writer_loop,
                args=(self.open(name), stop, interval),
                daemon=True,
                name=f"writer-{name}",
            ).start()

    def stop_writers(self) -> None:
        for stop in self.writers.values():
            stop.set()
        self.writers.clear()

    # --- hook ----------------------------------------------------------------------------------

    def _freeze(self, col: Collection) -> list[dict[str, Any]]:
        col.db.set_options({"disable_auto_compactions": "true"})
        deadline = time.monotonic() + 30
        while col.db.property_int_value("rocksdb.num-running-compactions") and time.monotonic() < deadline:
            time.sleep(0.005)
        col.db.flush()
        files = []
        for name in sorted(os.listdir(col.path)):
            if name.endswith(IMMUTABLE_SUFFIXES):
                files.append({"path": f"{col.name}/{name}", "immutable": True})
            elif name.startswith(COPIED_PREFIXES):
                files.append({"path": f"{col.name}/{name}", "immutable": False})
        return files

    async def prepare(self, op_id: str, names: list[str], hold_timeout: float) -> list[dict[str, Any]]:
        if self.prepare_delay:
            await asyncio.sleep(self.prepare_delay)
        if self.fail_next_prepare:
            self.fail_next_prepare = False
            raise web.HTTPServiceUnavailable(text="sampledb: refusing this prepare (test switch)")
        if op_id in self.holds:
            raise web.HTTPConflict(text=f"already holding for {op_id}")
        self.preparing.add(op_id)
        self.released.discard(op_id)
        cols = [self.open(n) for n in names if (self.root / n).is_dir()]
        # Flush once before holding writes, so that the flush inside the hold has little to do.
        for col in cols:
            await asyncio.to_thread(col.db.flush)
        self._hold_started[op_id] = time.perf_counter()
        for col in cols:
            await asyncio.to_thread(col.lock.acquire)
        files: list[dict[str, Any]] = []
        try:
            for col in cols:
                files.extend(await asyncio.to_thread(self._freeze, col))
        except Exception:
            self._unhold([c.name for c in cols])
            raise
        finally:
            self.preparing.discard(op_id)
        if op_id in self.released:  # the release overtook this prepare: do not hold at all
            self._unhold([c.name for c in cols])
            raise web.HTTPConflict(text=f"{op_id} was released while it was being prepared")
        self.prepared[op_id] = {f["path"]: (self.root / f["path"]).stat().st_size for f in files}
        timeout = min(self.hold_timeout, hold_timeout + 5)
        timer = asyncio.get_running_loop().call_later(timeout, self._expire, op_id)
        self.holds[op_id] = ([c.name for c in cols], timer)
        return files

    def _unhold(self, names: list[str]) -> None:
        for name in names:
            col = self.collections[name]
            col.db.set_options({"disable_auto_compactions": "false"})
            if col.lock.locked():
                col.lock.release()

    def release(self, op_id: str) -> None:
        if op_id in self.preparing:
            self.released.add(op_id)
        held = self.holds.pop(op_id, None)
        if held is None:
            return
        names, timer = held
        timer.cancel()
        self._unhold(names)
        started = self._hold_started.pop(op_id, None)
        if started is not None:
            self.pauses_ms.append((time.perf_counter() - started) * 1000)

    def _expire(self, op_id: str) -> None:
        log.warning("hold for %s was never released; releasing after %ss", op_id, self.hold_timeout)
        self.release(op_id)

    def restored(self, names: list[str]) -> None:
        for name in names:
            self.open(name)

    def summary(self, name: str) -> dict[str, Any]:
        col = self.collections[name]
        with col.lock:
            keys = 0
            digest = hashlib.sha256()
            gaps = 0
            expected = 0
            wrong_values = 0
            for key, value in col.db.items():
                seq = int(key[1:].decode())
                if seq != expected:
                    gaps += 1
                expected = seq + 1
                if value != value_for(name, self.node, seq, self.value_size):
                    wrong_values += 1
                digest.update(key + b"=" + value + b";")
                keys += 1
        return {
            "collection": name,
            "keys": keys,
            "lastSeq": expected - 1,
            "gaps": gaps,
            "wrongValues": wrong_values,
            "digest": digest.hexdigest(),
            "acked": col.acked,
        }

    def close(self) -> None:
        self.stop_writers()
        for col in self.collections.values():
            col.db.close()


DB = web.AppKey("db", SampleDb)


def make_app(db: SampleDb) -> web.Application:
    app = web.Application()
    app[DB] = db
    routes = web.RouteTableDef()

    @routes.get("/healthz")
    async def healthz(_: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    @routes.get("/collections")
    async def collections(_: web.Request) -> web.Response:
        return web.json_response(sorted(db.collections))

    @routes.post("/collections/{name}")
    async def create(request: web.Request) -> web.Response:
        body = await request.json() if request.can_read_body else {}
        col = db.open(request.match_info["name"])
        await asyncio.to_thread(db.write, col, int(body.get("count", 0)))
        return web.json_response({"collection": col.name, "acked": col.acked})

    @routes.get("/collections/{name}/summary")
    async def summary(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in db.collections:
            raise web.HTTPNotFound(text=f"no collection {name}")
        return web.json_response(await asyncio.to_thread(db.summary, name))

    @routes.post("/writers")
    async def writers(request: web.Request) -> web.Response:
        body = await request.json()
        db.start_writers(body["collections"], float(body.get("interval", 0.0)))
        return web.json_response({"writing": sorted(db.writers)})

    @routes.delete("/writers")
    async def stop_writers(_: web.Request) -> web.Response:
        db.stop_writers()
        return web.json_response({"acked": {n: c.acked for n, c in db.collections.items()}})

    @routes.get("/stats")
    async def stats(_: web.Request) -> web.Response:
        return web.json_response(
            {
                "acked": {n: c.acked for n, c in db.collections.items()},
                "pausesMs": db.pauses_ms,
                "prepared": db.prepared,
                "holding": sorted(db.holds),
            }
        )

    @routes.post("/debug/prepare-delay")
    async def prepare_delay(request: web.Request) -> web.Response:
        db.prepare_delay = float((await request.json())["seconds"])
        return web.json_response({"ok": True})

    @routes.put("/collections/{name}/records/{seq}")
    async def put_record(request: web.Request) -> web.Response:
        """A write with a sequence number chosen by the client (a writer spread over nodes)."""
        col = db.open(request.match_info["name"])
        seq = int(request.match_info["seq"])
        await asyncio.to_thread(db.put_seq, col, seq)
        return web.json_response({"seq": seq})

    @routes.post("/debug/fail-next-prepare")
    async def fail_next(_: web.Request) -> web.Response:
        db.fail_next_prepare = True
        return web.json_response({"ok": True})

    @routes.post("/hook/prepare")
    async def hook_prepare(request: web.Request) -> web.Response:
        body = await request.json()
        files = await db.prepare(body["id"], list(body["collections"]), float(body["holdTimeoutSeconds"]))
        return web.json_response({"files": files})

    @routes.post("/hook/release")
    async def hook_release(request: web.Request) -> web.Response:
        db.release((await request.json())["id"])
        return web.json_response({"ok": True})

    @routes.post("/debug/restored-delay")
    async def restored_delay(request: web.Request) -> web.Response:
        db.restored_delay = float((await request.json())["seconds"])
        return web.json_response({"ok": True})

    @routes.post("/hook/restored")
    async def hook_restored(request: web.Request) -> web.Response:
        body = await request.json()
        if db.restored_delay:
            await asyncio.sleep(db.restored_delay)
        await asyncio.to_thread(db.restored, list(body["collections"]))
        return web.json_response({"ok": True})

    app.add_routes(routes)
    app.on_cleanup.append(lambda _app: asyncio.to_thread(db.close))
    return app


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--node", required=True)
    p.add_argument("--data-root", required=True)
    p.add_argument("--listen", required=True)
    p.add_argument("--value-size", type=int, default=256)
    p.add_argument("--hold-timeout", type=float, default=60.0)
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s sampledb %(levelname)s %(message)s")
    root = Path(args.data_root)
    root.mkdir(parents=True, exist_ok=True)
    host, _, port = args.listen.rpartition(":")
    db = SampleDb(args.node, root, value_size=args.value_size, hold_timeout=args.hold_timeout)
    web.run_app(make_app(db), host=host, port=int(port), print=None, access_log=None)


if __name__ == "__main__":
    main()
