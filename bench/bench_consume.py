"""End-to-end produce -> consume: one Producer, one PushConsumer with a no-op listener,
128-byte bodies.

    python bench/bench_consume.py [--quick] [--messages N] [--seconds S] [--profile]
                                  [--dir /work/tmp-bench-consume]

(a) throughput: N messages pre-filled, then the time for a push consumer (consuming
    from the first offset) to deliver them all to the listener;
(b) latency: the producer sends at a fixed 10,000 msg/s while the consumer records
    listener time minus send time (high resolution, carried in the body) and minus
    the born timestamp (ms resolution), p50/p99;
--profile: cProfile of the consumption path (the pull thread and every consume
    thread, merged), printed as time per message.

Stores go in a fresh directory under --dir (small index files), deleted afterwards.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import platform
import pstats
import shutil
import struct
import tempfile
import threading
import time

from mqstore import Message, MessageStore
from mqstore.client import CONSUME_SUCCESS, ConsumeFromWhere, Producer, PushConsumer
from mqstore.client.consumer import PushConsumer as _Push

CONFIG = dict(
    mapped_file_size_commitlog=64 * 1024 * 1024,
    mapped_file_size_consume_queue=300_000 * 20,
    max_hash_slot_num=50_000,
    max_index_num=400_000,
)
BODY = 128


def settle(store: MessageStore) -> None:
    while store.dispatcher.behind():
        time.sleep(0.0005)


def prefill(store: MessageStore, n: int) -> None:
    producer = Producer(store, "bench_pg")
    body = b"x" * BODY
    queues = store.topic_config("Bench").write_queue_nums
    batch = 64
    sent = 0
    while sent < n:
        count = min(batch, n - sent)
        producer.send_batch([Message("Bench", body) for _ in range(count)],
                            queue=(sent // batch) % queues)
        sent += count
    settle(store)


def throughput(path: str, n: int, profile: bool) -> dict:
    store = MessageStore(path, **CONFIG)
    store.create_topic("Bench", 4)
    started = time.perf_counter()
    prefill(store, n)
    fill_seconds = time.perf_counter() - started
    profilers = []
    if profile:
        local = threading.local()

        def profiled(fn):
            def wrapper(*args):
                prof = getattr(local, "prof", None)
                if prof is None:
                    prof = local.prof = cProfile.Profile()
                    profilers.append(prof)
                return prof.runcall(fn, *args)
            return wrapper

        originals = {name: getattr(_Push, name) for name in ("_pull_loop", "_consume_chunk")}
        for name, fn in originals.items():
            setattr(_Push, name, profiled(fn))
    consumer = PushConsumer(store, "bench_cg", consume_from_where=ConsumeFromWhere.FIRST_OFFSET)
    consumer.subscribe("Bench")
    consumer.register(lambda msgs, context: CONSUME_SUCCESS)
    started = time.perf_counter()
    consumer.start()
    while consumer.consumed < n:
        time.sleep(0.001)
    seconds = time.perf_counter() - started
    consumer.shutdown()
    if profile:
        for name, fn in originals.items():
            setattr(_Push, name, fn)
    store.close()
    result = {"n": n, "seconds": seconds, "rate": n / seconds, "fill_rate": n / fill_seconds}
    if profilers:
        stats = pstats.Stats(profilers[0])
        for prof in profilers[1:]:
            stats.add(prof)
        result["stats"] = stats
    return result


def latency(path: str, seconds: float, rate: int) -> dict:
    store = MessageStore(path, **CONFIG)
    store.create_topic("Bench", 4)
    exact, born = [], []
    pad = b"x" * (BODY - 8)

    def listener(msgs, context):
        now_ns = time.time_ns()
        for m in msgs:
            exact.append((now_ns - struct.unpack_from("<q", m.body)[0]) / 1e6)
            born.append(now_ns / 1e6 - m.born_timestamp)
        return CONSUME_SUCCESS

    consumer = PushConsumer(store, "bench_lat", consume_from_where=ConsumeFromWhere.LAST_OFFSET)
    consumer.subscribe("Bench")
    consumer.register(listener)
    consumer.start()
    producer = Producer(store, "bench_pg")
    total = int(seconds * rate)
    interval = 1.0 / rate
    started = time.perf_counter()
    for i in range(total):
        target = started + i * interval
        delay = target - time.perf_counter()
        if delay > 0:  # sleep, never spin: a spinning sender would hold the GIL
            time.sleep(delay)
        producer.send(Message("Bench", struct.pack("<q", time.time_ns()) + pad))
    achieved = total / (time.perf_counter() - started)
    deadline = time.monotonic() + 10
    while len(exact) < total and time.monotonic() < deadline:
        time.sleep(0.01)
    consumer.shutdown()
    store.close()
    exact.sort()
    born.sort()

    def pct(values, p):
        return values[min(len(values) - 1, int(len(values) * p))] if values else float("nan")

    return {"sent": total, "received": len(exact), "achieved": achieved,
            "p50": pct(exact, 0.50), "p99": pct(exact, 0.99), "max": exact[-1],
            "born_p50": pct(born, 0.50), "born_p99": pct(born, 0.99)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="50k messages, 2 s of latency")
    parser.add_argument("--messages", type=int, default=None)
    parser.add_argument("--seconds", type=float, default=None)
    parser.add_argument("--rate", type=int, default=10_000)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--dir", default="/work/tmp-bench-consume")
    args = parser.parse_args()
    n = args.messages or (50_000 if args.quick else 300_000)
    seconds = args.seconds or (2.0 if args.quick else 5.0)
    os.makedirs(args.dir, exist_ok=True)
    root = tempfile.mkdtemp(prefix="bench-consume-", dir=args.dir)
    try:
        print(f"# bench_consume {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
              f"Python {platform.python_version()}, {os.cpu_count()} cores, "
              f"load {os.getloadavg()[0]:.1f}")
        tp = throughput(os.path.join(root, "tp"), n, args.profile)
        print(f"| (a) consume {n:,} pre-filled (no-op listener) | {tp['rate']:,.0f} msg/s "
              f"| goal >= 200,000 | (pre-fill {tp['fill_rate']:,.0f} msg/s) |")
        if "stats" in tp:
            stats = tp["stats"]
            per_msg_us = stats.total_tt / n * 1e6
            print(f"\nprofile: {per_msg_us:.2f} us of profiled CPU per message "
                  f"(profiler overhead included); top functions by own time:")
            rows = sorted(stats.stats.items(), key=lambda kv: kv[1][2], reverse=True)[:18]
            for (file, line, name), (_cc, nc, tt, ct, _) in rows:
                print(f"  {tt / n * 1e6:7.3f} us/msg own  {ct / n * 1e6:7.3f} us/msg cum  "
                      f"{nc:>9} calls  {os.path.basename(file)}:{line} {name}")
        lat = latency(os.path.join(root, "lat"), seconds, args.rate)
        print(f"| (b) latency at {lat['achieved']:,.0f} msg/s, {lat['received']}/{lat['sent']} "
              f"received | p50 {lat['p50']:.3f} ms, p99 {lat['p99']:.3f} ms, "
              f"max {lat['max']:.1f} ms | goal p99 < 5 ms | born_timestamp-based "
              f"p50 {lat['born_p50']:.1f} / p99 {lat['born_p99']:.1f} ms |")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
