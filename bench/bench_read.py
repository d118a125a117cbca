"""The read side: sequential `get` of 32-message batches, `query_by_key`, dispatch
throughput and put-to-visible latency, on one machine in one run.

    python bench/bench_read.py [--messages 1000000] [--dir /path/on/real/disk]

Prints a markdown table; the numbers in bench/RESULTS.md come from this script.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import shutil
import statistics
import tempfile
import threading
import time

import cffi

import mqstore
from mqstore import Message, MessageStore

CONFIG = dict(mapped_file_size_commitlog=256 * 1024 * 1024)


def settle(store: MessageStore) -> float:
    started = time.perf_counter()
    while store.dispatcher.behind():
        time.sleep(0.0005)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--dir", default=os.path.join(os.path.dirname(__file__), ".."))
    args = parser.parse_args()
    count = args.messages - args.messages % 256
    root = tempfile.mkdtemp(prefix=".mqstore-bench-read-", dir=args.dir)
    rows = []
    try:
        store = MessageStore(os.path.join(root, "store"), **CONFIG)
        body = bytes(128)
        batches = [[Message("Bench", body, keys=f"key-{n * 256 + i}") for i in range(256)]
                   for n in range(count // 256)]
        for batch in batches:
            for message in batch:
                message.encoded_properties()  # built once, as a producer would
        started = time.perf_counter()
        for batch in batches:
            store.put_batch(batch)
        put_seconds = time.perf_counter() - started
        tail = settle(store)
        del batches
        rows.append(("put_batch(256) with a unique key each, dispatcher running",
                     count / put_seconds, f"dispatch finished {tail * 1000:.0f} ms after"))

        # Dispatch alone: rebuild the queues and index from the CommitLog.
        store.close()
        shutil.rmtree(os.path.join(root, "store", "consumequeue"))
        shutil.rmtree(os.path.join(root, "store", "index"))
        started = time.perf_counter()
        store = MessageStore(os.path.join(root, "store"), **CONFIG)
        rebuild = time.perf_counter() - started
        rows.append(("dispatch on reopen (rebuild queues and index)", count / rebuild, ""))

        for rounds in range(2):  # the second pass reads from warm pages
            offset, seen = 0, 0
            started = time.perf_counter()
            while True:
                result = store.get("Bench", 0, offset, 32)
                if not result.messages:
                    break
                seen += len(result.messages)
                offset = result.next_begin_offset
            seconds = time.perf_counter() - started
            assert seen == count, (seen, count)
            rows.append((f"get(max_msgs=32), sequential, pass {rounds + 1}", seen / seconds, ""))

        keys = [f"key-{random.randrange(count)}" for _ in range(20_000)]
        started = time.perf_counter()
        for key in keys:
            assert len(store.query_by_key("Bench", key)) == 1
        seconds = time.perf_counter() - started
        rows.append(("query_by_key, random unique keys", len(keys) / seconds, "lookups/s"))

        # put -> visible to get: one message at a time, and under a steady stream.
        latencies = []
        for i in range(2000):
            before = store.max_offset("Lat", 0)
            started = time.perf_counter()
            store.put(Message("Lat", b"x"))
            store.wait_for_message("Lat", 0, before, 1.0)
            latencies.append(time.perf_counter() - started)
            if i % 10 == 0:
                time.sleep(0.001)
        latencies.sort()
        rows.append(("put -> visible (idle dispatcher), median",
                     1 / statistics.median(latencies),
                     f"median {statistics.median(latencies) * 1e6:.0f} us, "
                     f"p99 {latencies[int(len(latencies) * 0.99)] * 1e6:.0f} us"))

        stop = threading.Event()

        def background() -> None:
            message = Message("Busy", bytes(128))
            while not stop.is_set():
                store.put(message)

        writer = threading.Thread(target=background)
        writer.start()
        latencies = []
        for _ in range(500):
            before = store.max_offset("Lat", 0)
            started = time.perf_counter()
            store.put(Message("Lat", b"x"))
            store.wait_for_message("Lat", 0, before, 1.0)
            latencies.append(time.perf_counter() - started)
            time.sleep(0.002)
        stop.set()
        writer.join()
        latencies.sort()
        rows.append(("put -> visible (another thread putting flat out), median",
                     1 / statistics.median(latencies),
                     f"median {statistics.median(latencies) * 1e6:.0f} us, "
                     f"p99 {latencies[int(len(latencies) * 0.99)] * 1e6:.0f} us"))
        store.close()
    finally:
        shutil.rmtree(root, ignore_errors=True)

    print(f"{time.strftime('%Y-%m-%d')}, {platform.node()}, {platform.platform()}, "
          f"{os.cpu_count()} cores, Python {platform.python_version()}, cffi {cffi.__version__}, "
          f"mqstore {mqstore.__version__}, {count:,} messages of 128 bytes, load "
          f"{os.getloadavg()[0]:.2f}")
    print("| workload | per second | note |")
    print("|---|---:|---|")
    for name, rate, note in rows:
        print(f"| {name} | {rate:,.0f} | {note} |")


if __name__ == "__main__":
    main()
