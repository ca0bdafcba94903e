"""A cross-shard workload for the sample database: a bank whose accounts live on every node.

Each node holds a ``bank`` collection (RocksDB) with accounts ``a/<n>`` and its initial total
``m/initial``. A transfer moves an amount from an account on one node to an account on another, in
the order a distributed database applies a transaction across shards (intent, then apply):

1. on the source node, in one atomic batch: debit the account and record the transfer ``o/<id>``
   (its outbox: the money is in flight);
2. then, once that is acknowledged, on the destination node, in one atomic batch: credit the
   account and record the receipt ``i/<id>``.

The two writes land on different nodes at different moments, and the credit always *happens after*
the debit (it is sent only once the debit is acknowledged). So in any consistent cut, a cut closed
under happened-before, every receipt has its outbox record, and

    sum of balances + amounts in flight (an outbox record without its receipt) == initial total

where a *violation* is a receipt whose debit is not in the cut (a credit without its cause): the
total then counts that money twice. A cut taken at one instant of real time is consistent; per-node
snapshots taken at different instants are not, whenever a transfer's debit falls after its source
node's snapshot and its credit before its destination node's (``audit`` counts them).

``BankDriver`` runs the transfers from client threads at full speed and records the latency of
every write, so that benchmarks can show what a backup costs the writers.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, cast

import requests
import rocksdict
from aiohttp import web

if TYPE_CHECKING:
    from testbed.rocks import Collection
    from testbed.sampledb import SampleDb

INITIAL = b"m/initial"


def _batch(col: Collection, account: str, delta: int, record: bytes, amount: int) -> int:
    """Applies one side of a transfer atomically (under the collection's write lock, so a hold
    holds it); returns the new balance."""
    with col.lock:
        key = f"a/{account}".encode()
        balance = int(cast("bytes", col.db[key])) + delta
        batch = rocksdict.WriteBatch(raw_mode=True)
        batch.put(key, str(balance).encode())
        batch.put(record, str(amount).encode())
        col.db.write(batch)
    return balance


def add_routes(app: web.Application, db: SampleDb) -> None:
    """``POST /bank/{collection}`` {accounts, balance}: open the accounts (idempotent);
    ``POST /bank/{collection}/debit`` and ``/credit`` {id, account, amount}: one side of a transfer."""

    async def open_bank(request: web.Request) -> web.Response:
        body = await request.json()
        col = db.open(request.match_info["name"])

        def create() -> int:
            with col.lock:
                if col.db.get(INITIAL) is None:
                    accounts, balance = int(body["accounts"]), int(body["balance"])
                    batch = rocksdict.WriteBatch(raw_mode=True)
                    for n in range(accounts):
                        batch.put(f"a/{n}".encode(), str(balance).encode())
                    batch.put(INITIAL, str(accounts * balance).encode())
                    col.db.write(batch)
                return int(cast("bytes", col.db[INITIAL]))

        return web.json_response({"initial": await asyncio.to_thread(create)})

    def side(prefix: bytes, sign: int) -> object:
        async def handler(request: web.Request) -> web.Response:
            body = await request.json()
            col = db.collections.get(request.match_info["name"])
            if col is None:
                raise web.HTTPNotFound(text="no such bank")
            amount = int(body["amount"])
            record = prefix + str(body["id"]).encode()
            balance = await asyncio.to_thread(
                _batch, col, str(body["account"]), sign * amount, record, amount
            )
            return web.json_response({"balance": balance})

        return handler

    app.router.add_post("/bank/{name}", open_bank)
    app.router.add_post("/bank/{name}/debit", side(b"o/", -1))  # type: ignore[arg-type]
    app.router.add_post("/bank/{name}/credit", side(b"i/", +1))  # type: ignore[arg-type]


@dataclass
class Latencies:
    """(wall-clock start, seconds) of every write a driver made."""

    samples: list[tuple[float, float]] = field(default_factory=list)

    def during(self, start: float, end: float) -> list[float]:
        return [d for t, d in self.samples if t + d >= start and t <= end]


class BankDriver:
    """Transfers between accounts on different nodes, from ``threads`` client threads at full speed."""

    def __init__(
        self,
        db_urls: list[str],
        *,
        collection: str = "bank",
        accounts: int = 20,
        balance: int = 1000,
        threads: int = 2,
        seed: int = 1,
    ) -> None:
        assert len(db_urls) >= 2, "transfers need two nodes"
        self.urls = [f"{u}/bank/{collection}" for u in db_urls]
        self.accounts = accounts
        self.initial = sum(
            requests.post(u, json={"accounts": accounts, "balance": balance}, timeout=30).json()["initial"]
            for u in self.urls
        )
        self.latency = Latencies()
        self.transfers = 0
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [
            threading.Thread(target=self._run, args=(n, seed + n), daemon=True, name=f"bank-{n}")
            for n in range(threads)
        ]
        for t in self._threads:
            t.start()

    def _run(self, n: int, seed: int) -> None:
        rng, session, count = random.Random(seed), requests.Session(), 0
        samples = self.latency.samples  # appended live (atomic under the GIL), read while running
        try:
            while not self._stop.is_set():
                src, dst = rng.sample(range(len(self.urls)), 2)
                body: dict[str, str | int] = {"id": f"{n}-{count}", "amount": rng.randint(1, 100)}
                for url, side in ((self.urls[src], "debit"), (self.urls[dst], "credit")):
                    account = rng.randrange(self.accounts)
                    began, t0 = time.time(), time.perf_counter()
                    session.post(
                        f"{url}/{side}", json={**body, "account": account}, timeout=120
                    ).raise_for_status()
                    samples.append((began, time.perf_counter() - t0))
                count += 1
        except requests.RequestException as exc:
            self.errors.append(f"{type(exc).__name__}: {exc}")
        finally:
            with self._lock:
                self.transfers += count

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=130)
        assert not self.errors, self.errors


@dataclass(frozen=True)
class Audit:
    initial: int
    balances: int
    in_flight: int
    transfers: int
    """Debits in the cut."""
    violations: int
    """Credits in the cut whose debit is not: the cut is not consistent."""

    @property
    def conserved(self) -> bool:
        return self.balances + self.in_flight == self.initial


def audit(banks: Mapping[str, Path]) -> Audit:
    """Audits one cut: ``banks`` maps each node to its bank collection (a RocksDB directory, e.g.
    materialized from a backup)."""
    initial = balances = 0
    sent: dict[bytes, int] = {}
    received: dict[bytes, int] = {}
    for path in banks.values():
        db = rocksdict.Rdict(str(path), rocksdict.Options(raw_mode=True))
        try:
            for key, value in db.items():
                assert isinstance(key, bytes) and isinstance(value, bytes)  # raw mode
                if key == INITIAL:
                    initial += int(value)
                elif key.startswith(b"a/"):
                    balances += int(value)
                elif key.startswith(b"o/"):
                    sent[key[2:]] = int(value)
                elif key.startswith(b"i/"):
                    received[key[2:]] = int(value)
        finally:
            db.close()
    in_flight = sum(amount for tid, amount in sent.items() if tid not in received)
    orphans = [tid for tid in received if tid not in sent]
    return Audit(initial, balances, in_flight, len(sent), len(orphans))
