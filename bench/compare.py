"""mqstore against the durable local queues a Python user would pick, in one run.

    python bench/compare.py [--quick] [--dir /work/tmp-compare] [--results bench/RESULTS.md]

Every system gets the same workloads, for 128 B and 4 KiB bodies (random printable
ASCII, so that text-only queues store the same bytes):

- ``put``: one message per call, each call committed (visible to a reader) on return;
- ``batch``: 256 messages per call through the system's own batch API (n/a without one);
- ``consume``: write `count` messages (untimed), close, reopen, then time reading them
  all in order (a FIFO queue pops and acks; mqstore, sqlite and lmdb read without
  deleting); the page cache is warm (the files were just written);
- ``lookup``: a store of LOOKUP_STORE messages, each with a unique key, then time random
  lookups by key (n/a for FIFO queues);
- ``durable``: one message per call, each on disk (fsync/msync) before the call
  returns; ``durable8``: the same from 8 threads at once (group commit where the system
  has it).

Systems run interleaved within each (workload, body size) section: one calibration run
each, then rounds in which every system runs once for about `target` seconds, keeping
each system's best run (bench_append.Runner), so that a noisy minute on this shared
machine hurts every system of a section alike. Ratios are to mqstore from the same run.
The memory section runs each system in fresh subprocesses (peak RSS, VmHWM, writing and
then reading MEMORY_COUNT messages) and reads one large mqstore store, sampling RSS as
the amount read grows. Writes a markdown section into bench/RESULTS.md and a plot to
bench/compare.png. Store directories live under --dir and are deleted at the end.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import datetime
import importlib
import importlib.metadata
import json
import os
import random
import re
import shutil
import sqlite3
import struct
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

import bench_append as ba  # noqa: E402  (the floors, the runner and the report helpers)
from mqstore import ASYNC_FLUSH, SYNC_FLUSH, Message, MessageStore  # noqa: E402
from mqstore._native import ffi, lib  # noqa: E402

TOPIC = ba.TOPIC
SMALL, LARGE = ba.SMALL, ba.LARGE
BATCH = ba.BATCH  # messages per batch call
THREADS = ba.SYNC_THREADS  # putters in the group-commit workload
READ_BATCH = 32  # messages per get() call, and per mq_scan() call of the read floor
BODIES = 1024  # distinct bodies, cycled through by the put loops
LOOKUP_STORE = {False: 200_000, True: 20_000}  # messages in a lookup store (full, quick)
MEMORY_COUNT = {False: 1_000_000, True: 20_000}
MEMORY_SECONDS = {False: 60.0, True: 4.0}  # per memory subprocess, writing or reading
BIG_STORE_GIB = {False: 4.0, True: 0.5}
MAX_DATA_BYTES = 512 << 20  # cap on the bytes one run writes (disk churn)
#: mqstore's settings besides flush_disk_type (the smoke test makes the files small).
MQSTORE_CONFIG: Dict[str, int] = {"mapped_file_size_commitlog": ba.FILE_SIZE}
WORKLOADS = ("put", "batch", "consume", "lookup", "durable", "durable8")
WORKLOAD_TITLES = {
    "put": "put",
    "batch": "batch put",
    "consume": "consume after reopen",
    "lookup": "lookup by key",
    "durable": "durable put, 1 thread",
    "durable8": f"durable put, {THREADS} threads",
}


class NotApplicable(Exception):
    """The system has no such capability (the table says n/a, with this reason)."""


def make_bodies(size: int, count: int = BODIES, seed: int = 1) -> List[bytes]:
    rng = random.Random(seed)
    return [base64.b64encode(rng.randbytes(size))[:size] for _ in range(count)]


def cycle(bodies: Sequence, count: int) -> Iterator:
    """`count` items from `bodies`, repeated."""
    full, rest = divmod(count, len(bodies))
    for _ in range(full):
        yield from bodies
    yield from bodies[:rest]


def batches_of(bodies: Sequence, count: int) -> Iterator[list]:
    """`count` items of `bodies`, repeated, in lists of BATCH (count % BATCH == 0)."""
    items = list(bodies[:BATCH]) if len(bodies) >= BATCH else list(cycle(bodies, BATCH))
    for _ in range(count // BATCH):
        yield items


# ----------------------------------------------------------------------------- systems


class Handle:
    """An open store of one system. Subclasses implement what the system can do."""

    def put(self, body: bytes) -> None:
        raise NotImplementedError

    def put_batch(self, bodies: List[bytes]) -> None:
        raise NotApplicable("no batch API")

    def put_keyed(self, items: List[Tuple[str, bytes]]) -> None:
        raise NotApplicable("no lookup by key")

    def lookup(self, key: str) -> bool:
        raise NotApplicable("no lookup by key")

    def consume(self) -> int:
        """Read every message in order (a queue pops and acks each); returns how many."""
        raise NotImplementedError

    def count(self) -> int:
        """Messages stored (not yet consumed)."""
        raise NotImplementedError

    def close(self) -> None:
        pass


class System:
    name = ""
    label = ""
    package: Optional[str] = None  # the distribution whose version the report gives
    module: Optional[str] = None  # what to import to check it is installed
    durable_note = ""  # the setting that makes a put durable, or why there is none
    batch_note = ""
    lacks: Dict[str, str] = {}  # workload -> why the system cannot do it

    def available(self) -> bool:
        if not self.module:
            return True
        try:
            importlib.import_module(self.module)
            return True
        except ImportError:
            return False

    def can(self, workload: str) -> bool:
        return workload not in self.lacks

    def version(self) -> str:
        if not self.package:
            return ""
        try:
            return importlib.metadata.version(self.package)
        except importlib.metadata.PackageNotFoundError:
            return "not installed"

    def open(self, path: str, durable: bool = False, expect_bytes: int = 0) -> Handle:
        raise NotImplementedError


# -- mqstore


class MqstoreHandle(Handle):
    def __init__(self, path: str, durable: bool, expect_bytes: int) -> None:
        flush = SYNC_FLUSH if durable else ASYNC_FLUSH
        fresh = not os.path.exists(path)
        self.store = store = MessageStore(path, flush_disk_type=flush, **MQSTORE_CONFIG)
        if fresh and expect_bytes:
            # As bench_append's A rows and the floors: the pages the timed part writes
            # are touched first and the background services are idle, so every system
            # and floor writes into resident pages (bench_warm.py measures the fresh-
            # page case). The first file comes with a message to another topic, so
            # TOPIC's queue starts empty.
            store.put(Message("Warmup", b"x"))
            current = store.commitlog.queue.last_file()
            ba.touch(current, current.wrote_position, expect_bytes)
            ba.wait_until_idle(store)
        self._put = store.put

    def put(self, body: bytes) -> None:
        self._put(Message(TOPIC, body))

    def put_batch(self, bodies: List[bytes]) -> None:
        self.store.put_batch([Message(TOPIC, body) for body in bodies])

    def put_keyed(self, items: List[Tuple[str, bytes]]) -> None:
        self.store.put_batch([Message(TOPIC, body, keys=key) for key, body in items])
        ba.wait_until_idle(self.store)  # the index is built by the dispatcher

    def lookup(self, key: str) -> bool:
        return len(self.store.query_by_key(TOPIC, key)) == 1

    def consume(self) -> int:
        get, offset, seen = self.store.get, 0, 0
        while True:
            result = get(TOPIC, 0, offset, READ_BATCH)
            messages = result.messages
            if not messages:
                return seen
            seen += len(messages)
            offset = result.next_begin_offset

    def count(self) -> int:
        ba.wait_until_idle(self.store)  # the dispatcher builds the ConsumeQueue
        return self.store.max_offset(TOPIC, 0)

    def close(self) -> None:
        self.store.close()


class Mqstore(System):
    name = "mqstore"
    label = "mqstore (ASYNC_FLUSH; SYNC_FLUSH when durable)"
    package = "mqstore"
    durable_note = "flush_disk_type=SYNC_FLUSH (msync before put returns; group commit)"
    batch_note = "put_batch(256 Messages)"

    def open(self, path: str, durable: bool = False, expect_bytes: int = 0) -> Handle:
        return MqstoreHandle(path, durable, expect_bytes)


# -- sqlite3, one table, WAL


class SqliteHandle(Handle):
    def __init__(self, path: str, durable: bool) -> None:
        os.makedirs(path, exist_ok=True)
        self.file = os.path.join(path, "queue.db")
        self.durable = durable
        self.conn = self._connect()
        self.conn.execute("CREATE TABLE IF NOT EXISTS msgs "
                          "(id INTEGER PRIMARY KEY, key TEXT, body BLOB NOT NULL)")
        self._local = threading.local()
        self._thread_conns: List[sqlite3.Connection] = []

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.file, isolation_level=None, check_same_thread=False,
                               timeout=120)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={'FULL' if self.durable else 'NORMAL'}")
        return conn

    def put(self, body: bytes) -> None:
        self.conn.execute("INSERT INTO msgs(body) VALUES (?)", (body,))

    def thread_put(self, body: bytes) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = self._connect()
            self._thread_conns.append(conn)
        conn.execute("INSERT INTO msgs(body) VALUES (?)", (body,))

    def put_batch(self, bodies: List[bytes]) -> None:
        conn = self.conn
        conn.execute("BEGIN")
        conn.executemany("INSERT INTO msgs(body) VALUES (?)", [(b,) for b in bodies])
        conn.execute("COMMIT")

    def put_keyed(self, items: List[Tuple[str, bytes]]) -> None:
        conn = self.conn
        conn.execute("CREATE INDEX IF NOT EXISTS msgs_key ON msgs(key)")
        conn.execute("BEGIN")
        conn.executemany("INSERT INTO msgs(key, body) VALUES (?, ?)", items)
        conn.execute("COMMIT")

    def lookup(self, key: str) -> bool:
        rows = self.conn.execute("SELECT body FROM msgs WHERE key = ?", (key,)).fetchall()
        return len(rows) == 1

    def consume(self) -> int:
        seen = 0
        cursor = self.conn.execute("SELECT body FROM msgs ORDER BY id")
        while True:
            rows = cursor.fetchmany(READ_BATCH)
            if not rows:
                return seen
            seen += len(rows)

    def count(self) -> int:
        return self.conn.execute("SELECT count(*) FROM msgs").fetchone()[0]

    def close(self) -> None:
        for conn in self._thread_conns:
            conn.close()
        self.conn.close()


class Sqlite(System):
    name = "sqlite3"
    label = "sqlite3 (WAL, one INSERT per put)"
    durable_note = "PRAGMA synchronous=FULL (otherwise NORMAL); 8 threads: a connection each"
    batch_note = "BEGIN; executemany(256); COMMIT"

    def version(self) -> str:
        return f"SQLite {sqlite3.sqlite_version}"

    def open(self, path: str, durable: bool = False, expect_bytes: int = 0) -> Handle:
        return SqliteHandle(path, durable)


# -- lmdb


class LmdbHandle(Handle):
    def __init__(self, path: str, durable: bool) -> None:
        import lmdb

        self.env = lmdb.open(path, map_size=16 << 30, max_dbs=2, sync=durable,
                             metasync=durable, lock=True)
        self.msgs = self.env.open_db(b"msgs")
        self.keys = self.env.open_db(b"keys")
        self._seq = self._last()
        self._lock = threading.Lock()

    def _last(self) -> int:
        with self.env.begin(db=self.msgs) as txn:
            cursor = txn.cursor()
            return struct.unpack(">Q", cursor.key())[0] + 1 if cursor.last() else 0

    def put(self, body: bytes) -> None:
        with self.env.begin(write=True, db=self.msgs) as txn:
            txn.put(struct.pack(">Q", self._seq), body, append=True)
            self._seq += 1

    def thread_put(self, body: bytes) -> None:
        # Write transactions are serialized by LMDB's own lock; the sequence number is
        # taken inside the transaction so keys stay in order.
        with self.env.begin(write=True, db=self.msgs) as txn:
            seq, self._seq = self._seq, self._seq + 1
            txn.put(struct.pack(">Q", seq), body, append=True)

    def put_batch(self, bodies: List[bytes]) -> None:
        with self.env.begin(write=True, db=self.msgs) as txn:
            cursor, seq, pack = txn.cursor(), self._seq, struct.pack
            for body in bodies:
                cursor.put(pack(">Q", seq), body, append=True)
                seq += 1
            self._seq = seq

    def put_keyed(self, items: List[Tuple[str, bytes]]) -> None:
        with self.env.begin(write=True) as txn:
            for key, body in items:
                seq = struct.pack(">Q", self._seq)
                txn.put(seq, body, db=self.msgs, append=True)
                txn.put(key.encode(), seq, db=self.keys)
                self._seq += 1

    def lookup(self, key: str) -> bool:
        with self.env.begin() as txn:
            seq = txn.get(key.encode(), db=self.keys)
            return seq is not None and txn.get(seq, db=self.msgs) is not None

    def consume(self) -> int:
        seen = 0
        with self.env.begin(db=self.msgs) as txn:
            for _key, _body in txn.cursor():  # bytes copies (buffers=False)
                seen += 1
        return seen

    def count(self) -> int:
        with self.env.begin(db=self.msgs) as txn:
            return txn.stat(self.msgs)["entries"]

    def close(self) -> None:
        self.env.close()


class Lmdb(System):
    name = "lmdb"
    label = "lmdb (one write txn per put)"
    package = module = "lmdb"
    durable_note = "sync=True, metasync=True (otherwise both False)"
    batch_note = "one write txn of 256 cursor puts"

    def open(self, path: str, durable: bool = False, expect_bytes: int = 0) -> Handle:
        return LmdbHandle(path, durable)


# -- persist-queue


class PQFileHandle(Handle):
    def __init__(self, path: str) -> None:
        import persistqueue

        os.makedirs(path, exist_ok=True)
        self.q = persistqueue.Queue(path, tempdir=path)

    def put(self, body: bytes) -> None:
        self.q.put(body)

    def consume(self) -> int:
        q, seen = self.q, 0
        while q.qsize():
            q.get(block=False)
            q.task_done()  # persists the tail position
            seen += 1
        return seen

    def count(self) -> int:
        return self.q.qsize()

    def close(self) -> None:
        self.q.headf.close()
        self.q.tailf.close()


class PQFile(System):
    name = "pq-file"
    label = "persist-queue Queue (files)"
    package, module = "persist-queue", "persistqueue"
    durable_note = ("none: it fsyncs only when a chunk (100 puts) fills; "
                    "the info file is renamed into place without fsync")
    lacks = {"batch": "no batch API", "lookup": "FIFO queue, no keys",
             "durable": "no fsync per put", "durable8": "no fsync per put"}

    def open(self, path: str, durable: bool = False, expect_bytes: int = 0) -> Handle:
        if durable:
            raise NotApplicable(self.durable_note)
        return PQFileHandle(path)


class PQAckHandle(Handle):
    def __init__(self, path: str, durable: bool) -> None:
        import persistqueue

        self.q = persistqueue.SQLiteAckQueue(path, multithreading=True, auto_commit=True)
        if not durable:  # its connections keep SQLite's default, FULL
            for conn in {self.q._putter, self.q._getter}:
                conn.execute("PRAGMA synchronous=NORMAL")

    def put(self, body: bytes) -> None:
        self.q.put(body)

    thread_put = put

    def consume(self) -> int:
        import persistqueue

        q, seen = self.q, 0
        while True:
            try:
                item = q.get(block=False)
            except persistqueue.Empty:
                return seen
            q.ack(item)
            seen += 1

    def count(self) -> int:
        return self.q.qsize()

    def close(self) -> None:
        self.q.close()


class PQAck(System):
    name = "pq-sqliteack"
    label = "persist-queue SQLiteAckQueue"
    package, module = "persist-queue", "persistqueue"
    durable_note = ("SQLite's default synchronous=FULL, which it keeps (WAL); for the "
                    "non-durable rows the benchmark sets synchronous=NORMAL")
    lacks = {"batch": "no batch API (put commits each item)",
             "lookup": "FIFO queue, no keys"}

    def open(self, path: str, durable: bool = False, expect_bytes: int = 0) -> Handle:
        return PQAckHandle(path, durable)


# -- diskcache


class DiskcacheHandle(Handle):
    def __init__(self, path: str, durable: bool) -> None:
        import diskcache

        cache = diskcache.Cache(path, eviction_policy="none",
                                sqlite_synchronous=2 if durable else 1)
        self.deque = diskcache.Deque.fromcache(cache)

    def put(self, body: bytes) -> None:
        self.deque.append(body)

    thread_put = put

    def put_batch(self, bodies: List[bytes]) -> None:
        with self.deque.transact():
            self.deque.extend(bodies)

    def consume(self) -> int:
        popleft, seen = self.deque.popleft, 0
        while True:
            try:
                popleft()
            except IndexError:
                return seen
            seen += 1

    def count(self) -> int:
        return len(self.deque)

    def close(self) -> None:
        self.deque._cache.close()


class Diskcache(System):
    name = "diskcache"
    label = "diskcache Deque"
    package = module = "diskcache"
    durable_note = "sqlite_synchronous=2 (FULL; default 1, NORMAL), WAL"
    batch_note = "with deque.transact(): deque.extend(256)"
    lacks = {"lookup": "FIFO deque, no keys"}

    def open(self, path: str, durable: bool = False, expect_bytes: int = 0) -> Handle:
        return DiskcacheHandle(path, durable)


# -- litequeue


class LitequeueHandle(Handle):
    def __init__(self, path: str, durable: bool) -> None:
        from litequeue import LiteQueue

        os.makedirs(path, exist_ok=True)
        self.q = LiteQueue(os.path.join(path, "queue.db"), timeout=120)
        if durable:  # it sets synchronous=NORMAL
            self.q.conn.execute("PRAGMA synchronous=FULL")

    def put(self, body: bytes) -> None:
        self.q.put(body.decode("ascii"))  # stores TEXT

    thread_put = put

    def put_batch(self, bodies: List[bytes]) -> None:
        with self.q.transaction():
            for body in bodies:
                self.q.put(body.decode("ascii"))

    def consume(self) -> int:
        q, seen = self.q, 0
        while True:
            message = q.pop()
            if message is None:
                return seen
            q.done(message.message_id)
            seen += 1

    def count(self) -> int:
        return self.q.qsize()

    def close(self) -> None:
        self.q.close()


class Litequeue(System):
    name = "litequeue"
    label = "litequeue (SQLite)"
    package = module = "litequeue"
    durable_note = "PRAGMA synchronous=FULL (it sets NORMAL), WAL; bodies stored as TEXT"
    batch_note = "with q.transaction(): 256 × q.put"
    lacks = {"lookup": "FIFO queue, no user keys (lookup by its own message_id only)"}

    def open(self, path: str, durable: bool = False, expect_bytes: int = 0) -> Handle:
        return LitequeueHandle(path, durable)


# -- queuelib


class QueuelibHandle(Handle):
    def __init__(self, path: str) -> None:
        from queuelib import FifoDiskQueue

        self.q = FifoDiskQueue(path)

    def put(self, body: bytes) -> None:
        self.q.push(body)

    def consume(self) -> int:
        pop, seen = self.q.pop, 0
        while pop() is not None:
            seen += 1
        return seen

    def count(self) -> int:
        return len(self.q)

    def close(self) -> None:
        self.q.close()


class Queuelib(System):
    name = "queuelib"
    label = "queuelib FifoDiskQueue"
    package = module = "queuelib"
    durable_note = "none: no fsync at all; the head/tail info is written on close()"
    lacks = {"batch": "no batch API", "lookup": "FIFO queue, no keys",
             "durable": "no fsync", "durable8": "no fsync"}

    def open(self, path: str, durable: bool = False, expect_bytes: int = 0) -> Handle:
        if durable:
            raise NotApplicable(self.durable_note)
        return QueuelibHandle(path)


SYSTEMS: Tuple[System, ...] = (Mqstore(), PQFile(), PQAck(), Diskcache(), Litequeue(),
                               Queuelib(), Lmdb(), Sqlite())
FLOOR_EACH, FLOOR_BATCH = "floor-each", "floor-batch"
FLOOR_LABELS = {
    FLOOR_EACH: "raw floor, per message (lib.mq_copy [+ msync] per record)",
    FLOOR_BATCH: "raw floor, per batch (mq_copy of 256 records; read: mq_scan of 32)",
}


def system(name: str) -> System:
    for candidate in SYSTEMS:
        if candidate.name == name:
            return candidate
    raise KeyError(name)


# ----------------------------------------------------------------------------- workloads


@dataclass
class Outcome:
    seconds: float
    done: int  # messages written, read or found
    expected: int


class Workspace:
    """Numbered directories under `root`, each deleted after its run."""

    def __init__(self, root: str) -> None:
        os.makedirs(root, exist_ok=True)
        self.root = root
        self.ws = ba.Workspace(root)  # bench_append's, for the floors' scratch files
        self._serial = 0

    def new_path(self, name: str) -> str:
        self._serial += 1
        return os.path.join(self.ws.path, f"{self._serial:05d}-{name}")

    def cleanup(self) -> None:
        self.ws.cleanup()


@contextlib.contextmanager
def opened(sys_: System, ws: Workspace, durable: bool = False,
           expect_bytes: int = 0) -> Iterator[Tuple[Handle, str]]:
    path = ws.new_path(sys_.name)
    handle = sys_.open(path, durable=durable, expect_bytes=expect_bytes)
    try:
        yield handle, path
    finally:
        handle.close()
        shutil.rmtree(path, ignore_errors=True)


def fill(handle: Handle, bodies: List[bytes], count: int,
         deadline: float = float("inf")) -> int:
    """Write `count` messages the fastest way the system has (untimed setup), or as
    many (a multiple of BATCH) as fit before `deadline` (perf_counter); returns how many."""
    written = 0
    with contextlib.suppress(NotApplicable):
        for batch in batches_of(bodies, count - count % BATCH):
            handle.put_batch(batch)
            written += BATCH
            if time.perf_counter() > deadline:
                return written
    while written < count:
        for body in cycle(bodies, min(BATCH, count - written)):
            handle.put(body)
        written += min(BATCH, count - written)
        if time.perf_counter() > deadline:
            break
    return written


def run_put(sys_: System, ws: Workspace, size: int, count: int,
            durable: bool = False) -> Outcome:
    bodies = make_bodies(size)
    with opened(sys_, ws, durable, count * (size + 200)) as (handle, _):
        put = handle.put
        start = time.perf_counter()
        for body in cycle(bodies, count):
            put(body)
        seconds = time.perf_counter() - start
        return Outcome(seconds, handle.count(), count)


def run_batch(sys_: System, ws: Workspace, size: int, count: int) -> Outcome:
    bodies = make_bodies(size)
    with opened(sys_, ws, False, count * (size + 200)) as (handle, _):
        put_batch = handle.put_batch
        start = time.perf_counter()
        for batch in batches_of(bodies, count):
            put_batch(batch)
        seconds = time.perf_counter() - start
        return Outcome(seconds, handle.count(), count)


def run_threads(sys_: System, ws: Workspace, size: int, count: int,
                threads: int = THREADS) -> Outcome:
    """Durable puts from `threads` threads at once, count // threads each."""
    per_thread = count // threads
    with opened(sys_, ws, True, count * (size + 200)) as (handle, _):
        put = getattr(handle, "thread_put", handle.put)
        barrier = threading.Barrier(threads + 1)
        errors: List[BaseException] = []

        def worker(bodies: List[bytes]) -> None:
            barrier.wait()
            try:
                for body in cycle(bodies, per_thread):
                    put(body)
            except BaseException as exc:  # reported below
                errors.append(exc)

        workers = [threading.Thread(target=worker, args=(make_bodies(size, 64, seed=t),))
                   for t in range(threads)]
        for thread in workers:
            thread.start()
        barrier.wait()
        start = time.perf_counter()
        for thread in workers:
            thread.join()
        seconds = time.perf_counter() - start
        if errors:
            raise errors[0]
        return Outcome(seconds, handle.count(), per_thread * threads)


def run_consume(sys_: System, ws: Workspace, size: int, count: int) -> Outcome:
    bodies = make_bodies(size)
    path = ws.new_path(sys_.name)
    try:
        handle = sys_.open(path, expect_bytes=count * (size + 200))
        try:
            fill(handle, bodies, count)
        finally:
            handle.close()
        handle = sys_.open(path)  # reopen: recovery and cache loading are untimed
        try:
            start = time.perf_counter()
            seen = handle.consume()
            seconds = time.perf_counter() - start
        finally:
            handle.close()
        return Outcome(seconds, seen, count)
    finally:
        shutil.rmtree(path, ignore_errors=True)


class LookupStore:
    """A store of `size`-byte messages with unique keys, built once per section and
    shared by that system's lookup runs."""

    def __init__(self, sys_: System, ws: Workspace, size: int, messages: int) -> None:
        self.path = ws.new_path(sys_.name + "-keys")
        self.messages = messages
        bodies = make_bodies(size)
        self.handle = sys_.open(self.path, expect_bytes=messages * (size + 240))
        try:
            for start in range(0, messages, BATCH):
                items = [(f"key-{n}", bodies[n % len(bodies)])
                         for n in range(start, min(messages, start + BATCH))]
                self.handle.put_keyed(items)
        except BaseException:
            self.close()
            raise

    def run(self, count: int, seed: int = 7) -> Outcome:
        rng = random.Random(seed)
        keys = [f"key-{rng.randrange(self.messages)}" for _ in range(count)]
        lookup = self.handle.lookup
        start = time.perf_counter()
        found = sum(1 for key in keys if lookup(key))
        return Outcome(time.perf_counter() - start, found, count)

    def close(self) -> None:
        self.handle.close()
        shutil.rmtree(self.path, ignore_errors=True)


def run_lookup(sys_: System, ws: Workspace, size: int, count: int,
               messages: int = 2048) -> Outcome:
    """Build a keyed store of `messages` and time `count` random lookups (one call)."""
    store = LookupStore(sys_, ws, size, messages)
    try:
        return store.run(count)
    finally:
        store.close()


def run_workload(sys_: System, workload: str, ws: Workspace, size: int,
                 count: int) -> Outcome:
    """One run of `workload` (see WORKLOADS); raises NotApplicable where the system
    lacks the capability."""
    if workload == "put":
        return run_put(sys_, ws, size, count)
    if workload == "batch":
        return run_batch(sys_, ws, size, count)
    if workload == "consume":
        return run_consume(sys_, ws, size, count)
    if workload == "lookup":
        return run_lookup(sys_, ws, size, count)
    if workload == "durable":
        return run_put(sys_, ws, size, count, durable=True)
    if workload == "durable8":
        return run_threads(sys_, ws, size, count)
    raise ValueError(workload)


# -- the raw read floor


def scan_floor(ws: Workspace, size: int) -> Callable[[int], float]:
    """The raw read floor: a mapped file holding `count` records as mqstore writes them;
    timed: one lib.mq_scan call per READ_BATCH records (decodes the headers in C, no
    CRC check, as get() does not check CRCs) and one ffi.unpack per record copying the
    body into a Python bytes object (what a reader must hand its caller)."""
    batch = b"".join(ba.encode_record(body) for body in make_bodies(size, BATCH))
    record = len(batch) // BATCH

    def run(count: int) -> float:
        count -= count % BATCH
        with ba.scratch_mapped_file(ws.ws, 0) as mapped:
            ptr, end, position = mapped.ptr, count * record, 0
            for _ in range(count // BATCH):
                position += lib.mq_copy(ptr, position, mapped.file_size, batch, len(batch))
            fields = lib.MQ_FIELDS
            out = ffi.new("int64_t[]", READ_BATCH * fields)
            stop = ffi.new("int64_t[2]")
            scan, unpack, seen, position = lib.mq_scan, ffi.unpack, 0, 0
            body_off, body_len = lib.MQ_F_BODY_OFF, lib.MQ_F_BODY_LEN
            start = time.perf_counter()
            while True:
                n = scan(ptr, end, position, READ_BATCH, 0, out, stop)
                if not n:
                    break
                for i in range(n):
                    base = i * fields
                    unpack(ptr + out[base + body_off], out[base + body_len])
                seen += n
                position = stop[0]
            seconds = time.perf_counter() - start
        if seen != count:
            raise RuntimeError(f"read floor saw {seen} of {count} records")
        return seconds

    return run


# ----------------------------------------------------------------------------- sections


@dataclass
class Cell:
    rate: float = 0.0  # best msg/s (lookups/s for lookup)
    worst: float = 0.0
    note: str = ""  # "n/a: why", or an error


@dataclass
class Results:
    cells: Dict[Tuple[str, str, int], Cell] = field(default_factory=dict)
    memory: List[Dict] = field(default_factory=list)
    big: Dict = field(default_factory=dict)

    def to_json(self, **extra) -> str:
        cells = [[n, w, size, c.rate, c.worst, c.note] for (n, w, size), c in self.cells.items()]
        return json.dumps({"cells": cells, "memory": self.memory, "big": self.big, **extra})

    @classmethod
    def from_json(cls, text: str) -> Tuple[Results, Dict]:
        data = json.loads(text)
        results = cls(memory=data.pop("memory"), big=data.pop("big"))
        for n, w, size, rate, worst, note in data.pop("cells"):
            results.cells[(n, w, size)] = Cell(rate, worst, note)
        return results, data


def checked(sys_: System, workload: str, ws: Workspace, size: int,
            lookups: Dict[str, LookupStore]) -> Callable[[int], float]:
    def case(count: int) -> float:
        if workload == "lookup":
            outcome = lookups[sys_.name].run(count)
        else:
            outcome = run_workload(sys_, workload, ws, size, count)
        if outcome.done != outcome.expected:
            raise RuntimeError(f"{sys_.name} {workload}: {outcome.done} of "
                               f"{outcome.expected} messages")
        return outcome.seconds

    return case


def probe_for(sys_name: str, workload: str) -> int:
    if workload.startswith("durable"):
        return 64 * THREADS
    if sys_name in ("mqstore", "lmdb", "sqlite3", "queuelib") or workload == "lookup":
        return 4 * BATCH
    return 2 * BATCH


def run_section(results: Results, runner_args: Tuple[int, float], ws: Workspace,
                workload: str, size: int, systems: Sequence[System], quick: bool) -> None:
    runner = ba.Runner(quick)
    runner.repeats, runner.target = runner_args
    record = ba.record_size(size)
    unit = THREADS * 8 if workload == "durable8" else BATCH
    cap = max(unit, MAX_DATA_BYTES // record // unit * unit)
    lookups: Dict[str, LookupStore] = {}
    ba.settle(f"{WORKLOAD_TITLES[workload]}, {size} B bodies")
    try:
        for sys_ in systems:
            key = (sys_.name, workload, size)
            if not sys_.can(workload):
                results.cells[key] = Cell(note=f"n/a: {sys_.lacks[workload]}")
                continue
            if workload == "lookup":
                lookups[sys_.name] = LookupStore(sys_, ws, size, LOOKUP_STORE[quick])
            runner.add(f"{sys_.name}", sys_.label, checked(sys_, workload, ws, size, lookups),
                       record_bytes=record, probe=probe_for(sys_.name, workload), unit=unit,
                       max_count=cap)
        floors = []
        if workload in ("put", "durable"):
            floors.append(FLOOR_EACH)
            case = (ba.Cases(ws.ws).copy_each(size) if workload == "put"
                    else ba.Cases(ws.ws).copy_msync(size))
            runner.add(FLOOR_EACH, FLOOR_LABELS[FLOOR_EACH], case, record_bytes=record,
                       probe=4096 if workload == "put" else 256, unit=BATCH,
                       max_count=ba.capacity(record, BATCH) if workload == "put" else cap)
        if workload in ("batch", "consume"):
            floors.append(FLOOR_BATCH)
            case = ba.Cases(ws.ws).copy_batch(size) if workload == "batch" else \
                scan_floor(ws, size)
            runner.add(FLOOR_BATCH, FLOOR_LABELS[FLOOR_BATCH], case, record_bytes=record,
                       probe=16 * BATCH, unit=BATCH, max_count=ba.capacity(record, BATCH))
        runner.run_section()
    finally:
        for store in lookups.values():
            store.close()
    for name, row in runner.rows.items():
        results.cells[(name, workload, size)] = Cell(row.rate, row.worst)


# ----------------------------------------------------------------------------- memory


def proc_status() -> Dict[str, int]:
    """VmHWM, VmRSS, RssAnon, RssFile of this process, in KiB."""
    values = {}
    with open("/proc/self/status") as f:
        for line in f:
            name, _, rest = line.partition(":")
            if name in ("VmHWM", "VmRSS", "RssAnon", "RssFile"):
                values[name] = int(rest.split()[0])
    return values


class PeakSampler:
    """Samples /proc/self/status every `interval` s in a thread: the peaks of the
    anonymous and the file-backed resident memory (VmHWM does not split them)."""

    def __init__(self, interval: float = 0.02) -> None:
        self.peak = {"RssAnon": 0, "RssFile": 0}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            self.sample()
            if self._stop.wait(0.02):
                return

    def sample(self) -> Dict[str, int]:
        status = proc_status()
        for name in self.peak:
            self.peak[name] = max(self.peak[name], status[name])
        return status

    def stop(self) -> Dict[str, int]:
        self._stop.set()
        self._thread.join()
        self.sample()
        return dict(self.peak)


def child_main(argv: List[str]) -> int:
    """Runs in a fresh subprocess: `--child MODE SYSTEM SIZE COUNT PATH [SECONDS]`;
    prints JSON. Writing stops at the deadline; reading past it ends the process with
    what it measured so far ("complete": false)."""
    mode, name, size, count, path = argv[0], argv[1], int(argv[2]), int(argv[3]), argv[4]
    seconds = float(argv[5]) if len(argv) > 5 else float("inf")
    result: Dict = {"before": proc_status(), "complete": True}
    sampler = PeakSampler()

    def report() -> None:
        result["peak"] = sampler.stop()
        result["after"] = proc_status()
        print(json.dumps(result), flush=True)

    if mode == "write":
        sys_ = system(name)
        handle = sys_.open(path, expect_bytes=0)
        result["written"] = fill(handle, make_bodies(size), count,
                                 time.perf_counter() + seconds)
        handle.close()
    elif mode == "read":
        def give_up() -> None:
            result["complete"] = False
            report()
            os._exit(0)

        timer = threading.Timer(seconds, give_up) if seconds < float("inf") else None
        if timer:
            timer.daemon = True
            timer.start()
        handle = system(name).open(path)
        seen = handle.consume()
        handle.close()
        if timer:
            timer.cancel()
        if seen != count:
            raise RuntimeError(f"read {seen} of {count}")
    elif mode == "bigwrite":
        store = MessageStore(path, warm_mapped_file_enable=False)
        batch = [Message(TOPIC, body) for body in make_bodies(size, BATCH)]
        for _ in range(count // BATCH):
            store.put_batch(batch)
        store.close()
    elif mode == "bigread":
        store = MessageStore(path)
        record = ba.record_size(size)
        marks = [int(count * f) // record for f in (0.125, 0.25, 0.5, 1.0)]
        samples, offset, seen = [], 0, 0
        get = store.get
        while True:
            got = get(TOPIC, 0, offset, READ_BATCH)
            if not got.messages:
                break
            seen += len(got.messages)
            offset = got.next_begin_offset
            if marks and seen >= marks[0]:
                samples.append({"read_bytes": seen * record, **proc_status()})
                marks.pop(0)
        store.close()
        result["samples"] = samples
        result["seen"] = seen
    elif mode != "baseline":
        raise ValueError(mode)
    report()
    return 0


def child(mode: str, name: str, size: int, count: int, path: str,
          seconds: float = 1e9, timeout: float = 1800) -> Dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--child", mode, name, str(size),
           str(count), path, str(seconds)]
    started = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if out.returncode:
        raise RuntimeError(f"{mode} {name}: {out.stderr.strip()[-500:]}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result["seconds"] = time.perf_counter() - started
    return result


def run_memory(results: Results, ws: Workspace, systems: Sequence[System], quick: bool,
               size: int = SMALL) -> None:
    count = MEMORY_COUNT[quick]
    limit = MEMORY_SECONDS[quick]
    ba.settle(f"memory: {count:,} messages of {size} B per system, fresh subprocesses")
    base = child("baseline", "mqstore", size, 0, ws.root)
    results.memory.append({"system": "(interpreter with every package imported)",
                           "baseline": base})
    for sys_ in systems:
        path = ws.new_path(sys_.name + "-mem")
        try:
            written = child("write", sys_.name, size, count, path, limit)
            read = child("read", sys_.name, size, written["written"], path, limit)
            results.memory.append({"system": sys_.label, "write": written, "read": read})
            print(f"  {sys_.name:14} write {written['after']['VmHWM'] / 1024:7.1f} MiB "
                  f"read {read['after']['VmHWM'] / 1024:7.1f} MiB "
                  f"({written['written']:,} msgs; {written['seconds']:.0f} s + "
                  f"{read['seconds']:.0f} s{'' if read['complete'] else ', read cut'})",
                  file=sys.stderr)
        except (RuntimeError, subprocess.TimeoutExpired) as exc:
            results.memory.append({"system": sys_.label, "error": str(exc)[:200]})
        finally:
            shutil.rmtree(path, ignore_errors=True)


def run_big_read(results: Results, ws: Workspace, quick: bool) -> None:
    gib = BIG_STORE_GIB[quick]
    total = int(gib * (1 << 30))
    record = ba.record_size(LARGE)
    count = total // record // BATCH * BATCH
    ba.settle(f"memory: mqstore reading a {gib:g} GiB store")
    path = ws.new_path("mqstore-big")
    try:
        written = child("bigwrite", "mqstore", LARGE, count, path)
        os.sync()
        read = child("bigread", "mqstore", LARGE, count * record, path)
        if read["seen"] != count:
            raise RuntimeError(f"big read saw {read['seen']} of {count}")
        results.big = {"gib": gib, "messages": count, "samples": read["samples"],
                       "before": read["before"], "write_s": written["seconds"],
                       "read_s": read["seconds"]}
        for sample in read["samples"]:
            print(f"  after {sample['read_bytes'] / 2**30:5.2f} GiB: RSS "
                  f"{sample['VmRSS'] / 1024:7.1f} MiB (anon {sample['RssAnon'] / 1024:.1f},"
                  f" file {sample['RssFile'] / 1024:.1f})", file=sys.stderr)
    finally:
        shutil.rmtree(path, ignore_errors=True)


# ----------------------------------------------------------------------------- report


def fmt_rate(rate: float) -> str:
    return f"{rate:,.0f}" if rate >= 100 else f"{rate:,.1f}"


def ratio_text(ratio: float) -> str:
    return f"{ratio:.0f}×" if ratio >= 10 else f"{ratio:.2g}×"


def cell_text(results: Results, name: str, workload: str, size: int) -> str:
    cell = results.cells.get((name, workload, size))
    if cell is None:
        return "n/a" if name.startswith("floor") else "not run"
    if cell.note:
        return cell.note.split(":")[0]
    ref = results.cells.get(("mqstore", workload, size))
    text = fmt_rate(cell.rate)
    if ref and ref.rate and name != "mqstore":
        text += f" ({cell.rate / ref.rate:.3g}×)"
    return text


def goals(results: Results) -> List[Tuple[str, str, str]]:
    """(goal, figures, met / not met) for each goal of issue 9."""
    out = []

    def rate(name: str, workload: str, size: int) -> float:
        cell = results.cells.get((name, workload, size))
        return cell.rate if cell and not cell.note else 0.0

    for size in (SMALL, LARGE):
        mq = rate("mqstore", "put", size)
        rivals = {n: rate(n, "put", size) for n in ("pq-file", "pq-sqliteack", "diskcache",
                                                     "litequeue")}
        # At their own defaults: SQLiteAckQueue keeps synchronous=FULL (its durable
        # figure); the others' defaults are what the put column ran.
        defaults = dict(rivals, **{"pq-sqliteack": rate("pq-sqliteack", "durable", size)})
        for title, table in (("same (non-durable) settings", rivals),
                             ("each at its default settings", defaults)):
            best = max(table, key=table.get)
            if mq and table[best]:
                ratio = mq / table[best]
                out.append((f"put ≥ 50× the fastest of persist-queue, diskcache, litequeue, "
                            f"{title} ({size} B)",
                            f"{ratio:.1f}× ({best} {fmt_rate(table[best])})",
                            "met" if ratio >= 50 else "**not met**"))
        pairs = (("put", FLOOR_EACH, 2.5, "put within 2.5× of the per-message raw floor"),
                 ("batch", FLOOR_BATCH, 2.0, "put_batch within 2× of the batch raw floor"),
                 ("consume", FLOOR_BATCH, 2.0,
                  "sequential consume within 2× of the raw read floor"))
        for workload, floor, limit, title in pairs:
            mq, ref = rate("mqstore", workload, size), rate(floor, workload, size)
            if mq and ref:
                slower = ref / mq
                out.append((f"{title} ({size} B)", f"floor is {slower:.1f}× faster",
                            "met" if slower <= limit else "**not met**"))
    return out


def render(results: Results, info: List[Tuple[str, str]], systems: Sequence[System],
           load: Tuple[str, str], quick: bool, elapsed: float, runner_args,
           date: str = "") -> str:
    date = date or f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC"
    lines = [
        f"## Comparison with other Python queues (issue 9), {date}",
        "",
        f"`python bench/compare.py{' --quick' if quick else ''}`: one run, "
        f"{'quick' if quick else 'full'} mode, best of {runner_args[0]} runs of "
        f"~{runner_args[1]} s per system after a calibration run, systems interleaved "
        f"within each workload; whole run {elapsed / 60:.1f} min.",
        "",
        *(f"- {name}: {value}" for name, value in info),
        f"- Load average (1, 5, 15 min): {load[0]} before, {load[1]} after (a shared "
        "2-core machine: absolute numbers are noisy, ratios from the same run less so)",
        "- Versions: " + ", ".join(dict.fromkeys(
            f"{s.package or s.name} {s.version()}" for s in systems if s.name != "mqstore")),
        "",
    ]
    for size in (SMALL, LARGE):
        lines += [
            f"### {size} B bodies: messages per second (lookups per second for lookup); "
            "(ratio to mqstore)",
            "",
            "| system | " + " | ".join(WORKLOAD_TITLES[w] for w in WORKLOADS) + " |",
            "|---|" + "---:|" * len(WORKLOADS),
        ]
        for name, label in [(s.name, s.label) for s in systems] + list(FLOOR_LABELS.items()):
            cells = [cell_text(results, name, w, size) for w in WORKLOADS]
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
        lines.append("")
    lines += ["### Goals", "", "| goal | measured | |", "|---|---|---|"]
    lines += [f"| {g} | {m} | {v} |" for g, m, v in goals(results)]
    lines += ["", "### What each system was set to", ""]
    for s in systems:
        lines.append(f"- {s.label}: durable: {s.durable_note or 'n/a'}; batch: "
                     f"{s.batch_note or 'n/a (no batch API)'}.")
    lines += [
        "- Raw floors (no Python per message beyond the loop): put: one `lib.mq_copy` "
        "cffi call per pre-encoded record into a mapped file whose pages were touched "
        "first; durable: the same plus one `msync` per record; batch: one `mq_copy` per "
        "pre-encoded batch of 256; read: the mapped file written untimed, then one "
        "`lib.mq_scan` per 32 records (headers decoded in C, no CRC check) and one "
        "`ffi.unpack` per record copying its body into a Python `bytes`: the least a "
        "reader handing bodies to Python can do, analogous to the write floors.",
        "- n/a = the system has no such capability (lookup by key in a FIFO queue, a "
        "batch API, an fsync-per-put setting); nothing was emulated.",
        "- mqstore puts build a `Message(topic, body)` per call inside the timed loop "
        "(the alternatives take the body itself); its files are 1 GiB with the pages "
        "the run writes touched beforehand, as bench_append's rows. Consume: close, "
        "reopen (untimed), then `get(topic, 0, offset, 32)` until empty; sqlite3 "
        "`SELECT ... ORDER BY id` with fetchmany(32), lmdb a cursor; the FIFO queues pop "
        "and ack each message (persist-queue Queue `get`+`task_done`, SQLiteAckQueue "
        "`get`+`ack`, litequeue `pop`+`done`, Deque `popleft`, queuelib `pop`).",
        f"- Lookup: a store of {LOOKUP_STORE[quick]:,} messages with a unique key each "
        "(mqstore `keys=` and its IndexFile; sqlite3 an indexed column; lmdb a second "
        "named database key → sequence), then random keys.",
        f"- A run writes at most {MAX_DATA_BYTES >> 20} MiB of records (so 4 KiB runs of "
        "the fast systems are shorter than the target).",
        "- SQLiteAckQueue and litequeue keep acked rows in their table and each pop "
        "searches for the next ready row, so a pop costs more the more rows the table "
        "holds: their consume figure falls as the count grows (it is for the count of "
        "the run, printed on stderr), and reading 1,000,000 does not finish in the "
        "memory section's time limit.",
        "",
    ]
    if results.memory:
        count, limit = MEMORY_COUNT[quick], MEMORY_SECONDS[quick]
        lines += [
            f"### Peak RSS writing and reading {count:,} messages of {SMALL} B",
            "",
            "Each system in fresh subprocesses: one writes the messages (its batch API "
            "where it has one) and closes, another opens, consumes them all and closes. "
            "Peak = VmHWM from /proc/self/status, which counts file-backed mapped pages "
            "as resident; a thread sampling every 20 ms splits the peak into anonymous and "
            f"file-backed. A subprocess still writing after {limit:g} s stops there (the "
            "count written says how many); one still reading is stopped at that time "
            "with the peaks so far (read cut). mqstore maps its 1 GiB CommitLog files and "
            "its ConsumeQueue and index files, hence its file-backed peak (runs before "
            "2026-11-23 17:00 UTC also touched every page of the CommitLog file ahead of "
            "the writes: warm_mapped_file_enable was on by default then).",
            "",
            "| system | written | write peak MiB | (anon / file) | read peak MiB "
            "| (anon / file) | write + read s |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        mib = "{:.1f}".format
        for row in results.memory:
            if "error" in row:
                lines.append(f"| {row['system']} | error: {row['error']} | | | | | |")
                continue
            if "baseline" in row:
                b = row["baseline"]
                lines.append(f"| {row['system']} | | {mib(b['after']['VmHWM'] / 1024)} | "
                             f"{mib(b['peak']['RssAnon'] / 1024)} / "
                             f"{mib(b['peak']['RssFile'] / 1024)} | | | |")
                continue
            w, r = row["write"], row["read"]
            cut = "" if r["complete"] else " (read cut)"
            lines.append(
                f"| {row['system']} | {w['written']:,} | {mib(w['after']['VmHWM'] / 1024)} | "
                f"{mib(w['peak']['RssAnon'] / 1024)} / {mib(w['peak']['RssFile'] / 1024)} | "
                f"{mib(r['after']['VmHWM'] / 1024)}{cut} | "
                f"{mib(r['peak']['RssAnon'] / 1024)} / {mib(r['peak']['RssFile'] / 1024)} | "
                f"{w['seconds']:.0f} + {r['seconds']:.0f} |")
        lines.append("")
    if results.big:
        big = results.big
        lines += [
            f"### mqstore reading a {big['gib']:g} GiB store",
            "",
            f"{big['messages']:,} messages of {LARGE} B written by one subprocess, read "
            "sequentially with get(…, 32) by another, sampling /proc/self/status: RSS "
            f"at start {big['before']['VmRSS'] / 1024:.1f} MiB; read took "
            f"{big['read_s']:.1f} s (process start included). The size is bounded by "
            "the disk this benchmark may use on a shared machine, not by mqstore.",
            "",
            "| read so far | VmRSS MiB | anon MiB | file-backed MiB | VmHWM MiB |",
            "|---:|---:|---:|---:|---:|",
        ]
        for s in big["samples"]:
            lines.append(f"| {s['read_bytes'] / 2**30:.2f} GiB | {s['VmRSS'] / 1024:.1f} | "
                         f"{s['RssAnon'] / 1024:.1f} | {s['RssFile'] / 1024:.1f} | "
                         f"{s['VmHWM'] / 1024:.1f} |")
        lines.append("")
    return "\n".join(lines)


SECTION_RE = re.compile(r"^## Comparison with other Python queues \(issue 9\).*?(?=^## |\Z)",
                        re.S | re.M)


def write_results(path: str, text: str) -> None:
    """Replace the comparison section of RESULTS.md (or insert it after the title)."""
    with open(path) as f:
        old = f.read()
    if SECTION_RE.search(old):
        new = SECTION_RE.sub(lambda _m: text.rstrip() + "\n\n", old, count=1)
    else:
        head, sep, rest = old.partition("\n## ")
        new = head.rstrip() + "\n\n" + text.rstrip() + "\n\n" + (sep.lstrip("\n") + rest
                                                                  if sep else "")
    with open(path, "w") as f:
        f.write(new)


def plot(results: Results, systems: Sequence[System], path: str) -> None:
    """Grouped bars per workload: x = system (and the raw floors), one bar per body size,
    log scale from 100/s, ratios to mqstore above the bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [s.name for s in systems] + [FLOOR_EACH, FLOOR_BATCH]
    fig, axes = plt.subplots(3, 2, figsize=(13, 12))
    width = 0.4
    for ax, workload in zip(axes.flat, WORKLOADS):
        shown = [n for n in names if any(
            (c := results.cells.get((n, workload, size))) and c.rate and not c.note
            for size in (SMALL, LARGE))]
        for offset, size, color in ((-width / 2, SMALL, "tab:blue"),
                                    (width / 2, LARGE, "tab:orange")):
            ref = results.cells.get(("mqstore", workload, size))
            label: Optional[str] = f"{size} B"
            for x, name in enumerate(shown):
                cell = results.cells.get((name, workload, size))
                if not cell or cell.note or not cell.rate:
                    continue
                edge = "black" if name == "mqstore" else None
                ax.bar(x + offset, cell.rate, width, color=color, edgecolor=edge, label=label)
                label = None
                if ref and ref.rate and name != "mqstore":
                    ax.text(x + offset, cell.rate * 1.15, ratio_text(cell.rate / ref.rate),
                            ha="center", fontsize=6, rotation=90)
        ax.set_yscale("log")
        ax.set_ylim(100, 1e9)
        ax.set_xticks(range(len(shown)))
        ax.set_xticklabels(shown, rotation=30, ha="right", fontsize=8)
        unit = "lookups / s" if workload == "lookup" else "messages / s"
        ax.set_ylabel(unit, fontsize=8)
        ax.set_title(WORKLOAD_TITLES[workload], fontsize=10)
        ax.grid(axis="y", which="major", alpha=0.3)
        if shown:
            ax.legend(fontsize=7, loc="upper right")
    fig.suptitle("bench/compare.py: throughput by system and body size "
                 "(log scale; labels = ratio to mqstore; n/a systems omitted)", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def main(argv: Optional[List[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        return child_main(argv[1:])
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small counts, under 3 min")
    parser.add_argument("--dir", default="/work/tmp-compare",
                        help="where the stores go (a real disk, not tmpfs)")
    parser.add_argument("--results", default=os.path.join(HERE, "RESULTS.md"))
    parser.add_argument("--plot", default=os.path.join(HERE, "compare.png"))
    parser.add_argument("--workloads", default=",".join(WORKLOADS))
    parser.add_argument("--sizes", default=f"{SMALL},{LARGE}")
    parser.add_argument("--systems", default=",".join(s.name for s in SYSTEMS))
    parser.add_argument("--no-memory", action="store_true")
    parser.add_argument("--no-write", action="store_true",
                        help="print the section instead of writing RESULTS.md, the plot "
                        "and the raw results (unless --json is given)")
    parser.add_argument("--json", default=None,
                        help="raw results are saved here (and read back by --render); "
                        "default bench/compare.json")
    parser.add_argument("--render", action="store_true",
                        help="rebuild the section and the plot from --json without measuring")
    args = parser.parse_args(argv)
    keep_json = args.json is not None or not args.no_write
    if args.json is None:
        args.json = os.path.join(HERE, "compare.json")
    if args.render:
        with open(args.json) as f:
            results, meta = Results.from_json(f.read())
        systems = [system(name) for name in meta["systems"]]
        text = render(results, meta["info"], systems, tuple(meta["load"]), meta["quick"],
                      meta["elapsed"], tuple(meta["runner_args"]), meta["date"])
        write_results(args.results, text)
        plot(results, systems, args.plot)
        print(text)
        return 0
    if ba.filesystem_of(args.dir).startswith("tmpfs"):
        print(f"warning: {args.dir} is on tmpfs", file=sys.stderr)
    systems = []
    for name in args.systems.split(","):
        sys_ = system(name)
        if sys_.available():
            systems.append(sys_)
        else:
            print(f"skipping {name}: {sys_.module} is not installed (pip install "
                  "-e '.[bench]')", file=sys.stderr)
    runner_args = (1, 0.15) if args.quick else (3, 1.5)
    ws = Workspace(args.dir)
    results = Results()
    load_before = ba.load_average()
    started = time.perf_counter()
    try:
        for workload in args.workloads.split(","):
            for size in (int(s) for s in args.sizes.split(",")):
                run_section(results, runner_args, ws, workload, size, systems, args.quick)
        if not args.no_memory:
            run_memory(results, ws, systems, args.quick)
            run_big_read(results, ws, args.quick)
    finally:
        ws.cleanup()
        with contextlib.suppress(OSError):
            os.rmdir(args.dir)
    elapsed = time.perf_counter() - started
    info = ba.machine_info(args.dir if os.path.exists(args.dir) else HERE)
    load = (load_before, ba.load_average())
    date = f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC"
    if keep_json:
        with open(args.json, "w") as f:
            f.write(results.to_json(systems=[s.name for s in systems], info=info, load=load,
                                    quick=args.quick, elapsed=elapsed,
                                    runner_args=runner_args, date=date))
    text = render(results, info, systems, load, args.quick, elapsed, runner_args, date)
    if args.no_write:
        print(text)
    else:
        write_results(args.results, text)
        plot(results, systems, args.plot)
        print(text)
        print(f"wrote {args.results} and {args.plot}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
