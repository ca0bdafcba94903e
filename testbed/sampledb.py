"""The sample workload: a tiny sharded key-value database on RocksDB (rocksdict), one process per node.

Each collection on a node is a RocksDB directory under the data root. Writers append sequence
numbered keys (``s000000000042``) whose values are derived from (collection, node, seq), so a test can
check any restored collection is exactly a prefix of what was written, value for value.

It implements the shardkeeper workload hook (``shardkeeper.api.hook``):

* ``prepare``: pause compaction and flushes (and wait for a running compaction), flush, then hold
  writes only while the length of each collection's WAL and MANIFEST (both append-only) is read:
  a few system calls per collection, whatever the number of files, and no fsync. With
  ``resumeWritesAfterListing`` writes resume right there (else at release). The files are listed
  after that: SSTs written before writes resumed (immutable, linked), the WAL and the MANIFEST up
  to their length at the hold (as RocksDB's checkpoints copy them), CURRENT, OPTIONS and IDENTITY
  (copied). The answer says when writes were held (``heldFrom``/``heldUntil``/``heldMs``).
  With ``deferListing`` (and writes held) it answers right after the hold, without files.
* ``resume`` (after a deferred listing): resume writes, keep compaction paused, and list the files
  as they were at the hold, as above.
* ``release``: resume compaction (and writes, if still held). A hold that is never released ends by
  itself after ``--hold-timeout`` seconds, so a crashed agent cannot wedge the database; the late
  release then answers ``expired``.
* ``restored``: open the collections that were just moved into place.

The bank (``testbed.transfers``) is a cross-shard workload on top: accounts on every node, and
transfers that debit one node and credit another, each applied atomically on its own node.

Run: ``python -m testbed.sampledb --node N --data-root D --listen 127.0.0.2:8480``.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, cast

from aiohttp import web

from testbed import transfers
from testbed.rocks import (
    RUNNING,
    Collection,
    Hold,
    hold_writes,
    list_files,
    open_rocksdb,
    pause_compaction,
    resume_writes,
)

log = logging.getLogger("sampledb")


def value_for(collection: str, node: str, seq: int, size: int) -> bytes:
    """Deterministic, half text and half noise (like a record with a vector): tests recompute it to
    check restored data, and it compresses about as well as real data does."""
    text = (f"{collection}:{node}:{seq}:" * (size // 16 + 1)).encode()[: size // 2]
    return text + hashlib.shake_128(f"{collection}/{node}/{seq}".encode()).digest(size - len(text))


def seq_key(seq: int) -> str:
    return f"s{seq:012d}"


class SampleDb:
    def __init__(self, node: str, root: Path, *, value_size: int, hold_timeout: float) -> None:
        self.node = node
        self.root = root
        self.value_size = value_size
        self.hold_timeout = hold_timeout
        self.collections: dict[str, Collection] = {}
        self.holds: dict[str, Hold] = {}
        self._pool = ThreadPoolExecutor(16, thread_name_prefix="flush")
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
        for entry in sorted(root.iterdir()):
            if entry.is_dir() and not entry.name.startswith("."):
                self.open(entry.name)

    def open(self, name: str) -> Collection:
        if name not in self.collections:
            db = open_rocksdb(self.root / name)
            col = Collection(name, self.root / name, db)
            last: bytes | None = None
            for key in db.keys(backwards=True):
                last = cast("bytes", key)  # raw mode
                break
            seqs = last is not None and last.startswith(b"s")  # a bank (testbed.transfers) has none
            col.next_seq = col.acked = int(last[1:].decode()) + 1 if seqs and last else 0
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

    async def prepare(
        self, op_id: str, names: list[str], hold_timeout: float, resume: bool = False, defer: bool = False
    ) -> dict[str, Any]:
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
        held: Hold | None = None
        try:
            await asyncio.to_thread(pause_compaction, cols, self._pool)
            held = await asyncio.to_thread(hold_writes, cols, self._pool, resume)
            files = None if defer and not resume else await asyncio.to_thread(list_files, held)
        except Exception:
            self._unhold(held, cols)
            raise
        finally:
            self.preparing.discard(op_id)
        if op_id in self.released:  # the release overtook this prepare: do not hold at all
            self._unhold(held, cols)
            raise web.HTTPConflict(text=f"{op_id} was released while it was being prepared")
        timeout = min(self.hold_timeout, hold_timeout + 5)
        held.timer = asyncio.get_running_loop().call_later(timeout, self._expire, op_id)
        self.holds[op_id] = held
        if files is None:  # deferred: writes stay held, the files come with the resume
            return held.report()
        return self._listed(op_id, held, files)

    def _listed(self, op_id: str, held: Hold, files: list[dict[str, Any]]) -> dict[str, Any]:
        self.prepared[op_id] = {
            f["path"]: f.get("size", (self.root / f["path"]).stat().st_size) for f in files
        }
        if held.held_until is not None:
            self.pauses_ms.append(held.held_ms or 0.0)
        return {"files": files, **held.report()}

    async def resume(self, op_id: str) -> dict[str, Any]:
        """A deferred listing: resume writes (compaction stays paused until the release), then list
        the files as they were at the hold."""
        held = self.holds.get(op_id)
        if held is None:
            raise web.HTTPConflict(text=f"not holding for {op_id}")
        if held.expired:
            raise web.HTTPConflict(text=f"the hold for {op_id} ended by itself (hold timeout)")
        if held.held_until is not None:
            raise web.HTTPConflict(text=f"writes for {op_id} were resumed already")
        resume_writes(held)
        return self._listed(op_id, held, await asyncio.to_thread(list_files, held))

    def _unhold(self, held: Hold | None, cols: list[Collection]) -> None:
        if held is not None and held.held_until is None:
            resume_writes(held)
            self.pauses_ms.append(held.held_ms or 0.0)
        for col in cols:
            col.db.set_options(RUNNING)

    def release(self, op_id: str, *, expired: bool = False) -> dict[str, Any]:
        if op_id in self.preparing:
            self.released.add(op_id)
        held = self.holds.get(op_id)
        if held is None:
            return {}
        if held.expired:  # it ended by itself before this release: say so
            del self.holds[op_id]
            return {**held.report(), "expired": True}
        if held.timer is not None:
            held.timer.cancel()
        if expired:
            held.expired = True  # kept, so that the late release learns it
        else:
            del self.holds[op_id]
        self._unhold(held, held.cols)
        return held.report()

    def _expire(self, op_id: str) -> None:
        log.warning("hold for %s was never released; releasing after %ss", op_id, self.hold_timeout)
        self.release(op_id, expired=True)

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
                assert isinstance(key, bytes) and isinstance(value, bytes)  # raw mode
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
                "holding": sorted(k for k, h in db.holds.items() if not h.expired),
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
        resume = bool(body.get("resumeWritesAfterListing", False))
        defer = bool(body.get("deferListing", False))
        answer = await db.prepare(
            body["id"], list(body["collections"]), float(body["holdTimeoutSeconds"]), resume, defer
        )
        return web.json_response(answer)

    @routes.post("/hook/resume")
    async def hook_resume(request: web.Request) -> web.Response:
        return web.json_response(await db.resume((await request.json())["id"]))

    @routes.post("/hook/release")
    async def hook_release(request: web.Request) -> web.Response:
        return web.json_response(db.release((await request.json())["id"]))

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
    transfers.add_routes(app, db)
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
