"""Retention soak: put + read + cleanup at a fixed disk budget, for as long as asked.

``python bench/soak.py --minutes 10 [--budget-mb 256] [--rate 20000] [--dir DIR]``

A producer thread puts 1 KiB messages (each with a key) round-robin over 8 queues at
`--rate` messages per second; a consumer thread follows every queue with `get` (a
consumer that falls below a queue's minimum jumps to it, counting what it skipped)
and checks each body; a third thread looks messages up by key. The store runs its
own cleanup (scheduler every second, RocketMQ's other defaults, files kept 72 h) with
the disk use reported as (bytes the store directory occupies) / budget, so the only
thing that keeps it inside the budget is forced deletion above
`disk_space_clean_forcibly_ratio` (85%) and, above 90%, refusing puts.

Every `--report` seconds it prints elapsed time, messages put / refused / read /
skipped, store size, the budget ratio, the CommitLog window, files deleted, the
dispatcher lag and the process RSS; at the end a summary. Exit status 1 when a body
check failed or a thread raised.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import threading
import time

from mqstore import Message, MessageStore, PutStatus
from mqstore.results import GetStatus

HERE = os.path.dirname(os.path.abspath(__file__))
TOPIC = "Soak"
QUEUES = 8
BODY = 1024


def directory_bytes(path: str) -> int:
    """Blocks the files under `path` occupy (what the budget counts)."""
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.stat(os.path.join(root, name)).st_blocks * 512
            except FileNotFoundError:
                pass
    return total


def rss_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return -1.0


def make_body(queue_id: int, sequence: int) -> bytes:
    head = f"{queue_id}:{sequence}:".encode()
    return head + b"s" * (BODY - len(head))


class Soak:
    def __init__(self, path: str, budget: int, rate: int, pause_ms: int = 100) -> None:
        self.budget = budget
        self.rate = rate
        self.path = path
        self.stop = threading.Event()
        self.put_ok = self.refused = self.read = self.skipped = self.lookups = 0
        self.errors: list = []
        self.max_ratio = 0.0
        self.store = MessageStore(
            path,
            mapped_file_size_commitlog=16 * 1024 * 1024,
            mapped_file_size_consume_queue=60_000 * 20,
            max_hash_slot_num=50_000,
            max_index_num=200_000,
            clean_resource_interval=1000,
            delete_commit_log_files_interval=pause_ms,
            delete_consume_queue_files_interval=pause_ms,
            disk_usage=self.ratio,
        )

    def ratio(self, _path: str) -> float:
        """The injected disk measurement: the store's size against the budget."""
        ratio = directory_bytes(self.path) / self.budget
        self.max_ratio = max(self.max_ratio, ratio)
        return ratio

    def producer(self) -> None:
        sequence = 0
        started = time.monotonic()
        try:
            while not self.stop.is_set():
                for _ in range(100):
                    queue_id = sequence % QUEUES
                    message = Message(TOPIC, make_body(queue_id, sequence), keys=f"s{sequence}")
                    result = self.store.put(message, queue_id)
                    if result.status is PutStatus.PUT_OK:
                        self.put_ok += 1
                    elif result.status is PutStatus.SERVICE_NOT_AVAILABLE:
                        self.refused += 1
                    else:
                        raise AssertionError(f"put failed: {result}")
                    sequence += 1
                ahead = sequence / self.rate - (time.monotonic() - started)
                if ahead > 0:
                    time.sleep(ahead)
        except Exception as exc:
            self.errors.append(f"producer: {exc!r}")

    def consumer(self) -> None:
        offsets = [0] * QUEUES
        try:
            while not self.stop.is_set():
                idle = True
                for queue_id in range(QUEUES):
                    result = self.store.get(TOPIC, queue_id, offsets[queue_id], 32)
                    if result.status is GetStatus.OFFSET_TOO_SMALL:
                        self.skipped += result.next_begin_offset - offsets[queue_id]
                    for message in result.messages:
                        head = message.body[:24].split(b":")
                        if int(head[0]) != queue_id or len(message.body) != BODY:
                            raise AssertionError(f"wrong body in queue {queue_id}: {head}")
                        self.read += 1
                        idle = False
                    offsets[queue_id] = result.next_begin_offset
                if idle:
                    time.sleep(0.005)
        except Exception as exc:
            self.errors.append(f"consumer: {exc!r}")

    def looker(self) -> None:
        try:
            while not self.stop.is_set():
                sequence = max(0, self.put_ok - 1000)
                for message in self.store.query_by_key(TOPIC, f"s{sequence}"):
                    if not message.body.startswith(f"{sequence % QUEUES}:{sequence}:".encode()):
                        raise AssertionError(f"key s{sequence} found {message.body[:24]!r}")
                self.lookups += 1
                time.sleep(0.01)
        except Exception as exc:
            self.errors.append(f"looker: {exc!r}")

    def report(self, elapsed: float) -> str:
        stats = self.store.stats()
        size = directory_bytes(self.store.path)
        parts = [
            f"{elapsed:7.0f} s",
            f"put {self.put_ok:>10,}",
            f"refused {self.refused:>7,}",
            f"read {self.read:>10,}",
            f"skipped {self.skipped:>8,}",
            f"store {size / 2**20:6.1f} MiB ({size / self.budget:4.0%} of budget)",
            f"commitlog [{stats.commitlog_min_offset / 2**20:7.0f},"
            f" {stats.commitlog_max_offset / 2**20:7.0f}) MiB",
            f"deleted {stats.files_deleted:>5}",
            f"lag {stats.dispatch_lag_bytes:>9,} B",
            f"put p99<={stats.put_latency.percentile(99)}us",
            f"RSS {rss_mb():6.1f} MiB",
        ]
        return "  ".join(parts)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--budget-mb", type=int, default=256)
    parser.add_argument("--rate", type=int, default=20_000, help="messages per second")
    parser.add_argument("--report", type=float, default=30.0, help="seconds between lines")
    parser.add_argument("--dir", default=os.environ.get("MQSTORE_BENCH_DIR", HERE))
    parser.add_argument(
        "--pause-ms",
        type=int,
        default=100,
        help="delete_commit_log_files_interval and delete_consume_queue_files_interval",
    )
    args = parser.parse_args()
    workdir = tempfile.mkdtemp(prefix="mqstore-soak-", dir=args.dir)
    soak = Soak(os.path.join(workdir, "store"), args.budget_mb * 2**20, args.rate, args.pause_ms)
    print(
        f"soak: {args.minutes} min, budget {args.budget_mb} MiB, {args.rate} msg/s of "
        f"{BODY} B, {QUEUES} queues, store in {workdir}; Python {sys.version.split()[0]}, "
        f"{os.cpu_count()} CPUs, deletion pauses {args.pause_ms} ms",
        flush=True,
    )
    threads = [
        threading.Thread(target=fn, daemon=True)
        for fn in (soak.producer, soak.consumer, soak.looker)
    ]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    end = started + args.minutes * 60
    rss_samples = []
    try:
        while time.monotonic() < end and not soak.errors:
            time.sleep(min(args.report, max(0.0, end - time.monotonic())))
            rss_samples.append(rss_mb())
            print(soak.report(time.monotonic() - started), flush=True)
    finally:
        soak.stop.set()
        for thread in threads:
            thread.join()
        elapsed = time.monotonic() - started
        stats = soak.store.stats()
        soak.store.close()
        shutil.rmtree(workdir, ignore_errors=True)
    print(
        f"done: {elapsed:.0f} s, {soak.put_ok:,} put ({soak.put_ok / elapsed:,.0f}/s), "
        f"{soak.refused:,} refused, {soak.read:,} read, {soak.skipped:,} skipped by the "
        f"consumer, {soak.lookups:,} key lookups, {stats.files_deleted} files deleted, "
        f"highest budget ratio seen {soak.max_ratio:.0%}, RSS min/max "
        f"{min(rss_samples, default=0):.0f}/{max(rss_samples, default=0):.0f} MiB, "
        f"errors: {soak.errors or 'none'}",
        flush=True,
    )
    return 1 if soak.errors else 0


if __name__ == "__main__":
    sys.exit(main())
