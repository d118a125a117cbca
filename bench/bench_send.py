"""Producer cost next to a bare `store.put`, in one run, as ratios.

    python bench/bench_send.py [--messages 300000] [--rounds 3] [--dir /path]

Each round times, on the same store, 128-byte bodies:

- `store.put(Message(topic, body))`: the bare put, no properties;
- `store.put` of a message already carrying a UNIQ_KEY: the record a send stores;
- `Producer.send` (validation, UNIQ_KEY, round-robin queue, SendResult);
- `Producer.send_oneway`;
- `Producer.send_async` on 4 threads, waiting for every Future at the end.

Rounds interleave the workloads so machine noise hits them alike; the table gives the
best round of each and the ratio to the bare put.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import tempfile
import time

import mqstore
from mqstore import Message, MessageStore, Producer
from mqstore.message import create_uniq_id

CONFIG = dict(
    mapped_file_size_commitlog=256 * 1024 * 1024,
    mapped_file_size_consume_queue=300_000 * 20,
    max_hash_slot_num=50_000,
    max_index_num=200_000,
    message_index_enable=False,
)


def run(args) -> None:
    root = tempfile.mkdtemp(prefix=".mqstore-bench-send-", dir=args.dir)
    body = bytes(128)
    n = args.messages
    best: dict = {}
    try:
        store = MessageStore(os.path.join(root, "store"), **CONFIG)
        store.create_topic("Bench", 4)
        producer = Producer(store, "bench_producer")
        uniq = create_uniq_id()

        def bare():
            put = store.put
            for i in range(n):
                put(Message("Bench", body), i & 3)

        def put_with_uniq():
            put = store.put
            for i in range(n):
                put(Message("Bench", body, properties={"UNIQ_KEY": uniq}), i & 3)

        def send():
            s = producer.send
            for _ in range(n):
                s(Message("Bench", body))

        def oneway():
            s = producer.send_oneway
            for _ in range(n):
                s(Message("Bench", body))

        def send_async():
            s = producer.send_async
            futures = [s(Message("Bench", body)) for _ in range(n)]
            for future in futures:
                future.result()

        workloads = [
            ("store.put, bare message", bare),
            ("store.put, message with UNIQ_KEY (what send stores)", put_with_uniq),
            ("Producer.send", send),
            ("Producer.send_oneway", oneway),
            ("Producer.send_async (4 threads), all futures awaited", send_async),
        ]
        for _ in range(args.rounds):
            for name, fn in workloads:
                started = time.perf_counter()
                fn()
                rate = n / (time.perf_counter() - started)
                best[name] = max(best.get(name, 0), rate)
        producer.shutdown()
        store.close()
    finally:
        shutil.rmtree(root, ignore_errors=True)
    base = best["store.put, bare message"]
    same = best["store.put, message with UNIQ_KEY (what send stores)"]
    print(f"mqstore {mqstore.__version__}, Python {platform.python_version()}, "
          f"{os.cpu_count()} cpus, {n:,} messages x {args.rounds} rounds, load "
          f"{os.getloadavg()[0]:.2f}\n")
    print("| workload | msgs/s | cost vs bare put | cost vs put of the same record |")
    print("|---|---:|---:|---:|")
    for name, _ in workloads:
        rate = best[name]
        print(f"| {name} | {rate:,.0f} | {base / rate:.2f}x | {same / rate:.2f}x |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=300_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--dir", default=os.path.join(os.path.dirname(__file__), ".."))
    parser.add_argument("--quick", action="store_true", help="50,000 messages, 1 round")
    args = parser.parse_args()
    if args.quick:
        args.messages, args.rounds = 50_000, 1
    run(args)


if __name__ == "__main__":
    main()
