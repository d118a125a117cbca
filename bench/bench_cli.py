"""Throughput of the `mqstore` command line on a large store: `verify` (MB/s of
CommitLog) and `cat --format json > /dev/null` (messages/s), each run as the real
command in a subprocess.

    python bench/bench_cli.py [--size-mb 1024] [--body 1024] [--runs 3] [--profile]

Writes the store with put_batch under /work/tmp-bench-cli (or --dir) and deletes it
afterwards. Prints a markdown table; bench/RESULTS.md holds the recorded numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time

from mqstore import Message, MessageStore

CONFIG = dict(
    mapped_file_size_commitlog=256 * 1024 * 1024,
    mapped_file_size_consume_queue=300_000 * 20,
    max_hash_slot_num=1_000_000,
    max_index_num=4_000_000,
)
QUEUES = 8
BATCH = 64


def write_store(path: str, size_bytes: int, body_size: int) -> int:
    """Fill a store with about `size_bytes` of CommitLog; returns the message count."""
    filler = ('{"order":%d,"customer":"c-%d","items":[' + '"sku",' * 400)[: body_size - 16]
    count = 0
    with MessageStore(path, **CONFIG) as store:
        while store.max_commitlog_offset() < size_bytes:
            queue_id = (count // BATCH) % QUEUES
            batch = []
            for i in range(count, count + BATCH):
                text = (filler % (i, i % 997)).ljust(body_size - 2) + "]}"
                batch.append(Message("Orders", text.encode(), tags=f"t{i % 4}", keys=f"order-{i}"))
            result = store.put_batch(batch, queue_id)
            assert result.status.name == "PUT_OK", result
            count += BATCH
        while store.dispatcher.behind():
            time.sleep(0.01)
    return count


def timed(args, stdout=subprocess.DEVNULL) -> float:
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "mqstore", *args], stdout=stdout, stderr=subprocess.PIPE
    )
    elapsed = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"mqstore {' '.join(args)} failed: {proc.stderr.decode()}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size-mb", type=int, default=1024)
    parser.add_argument("--body", type=int, default=1024)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--dir", default="/work/tmp-bench-cli")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="also profile cat and verify in-process (cProfile, top 15)",
    )
    args = parser.parse_args()
    os.makedirs(args.dir, exist_ok=True)
    root = tempfile.mkdtemp(dir=args.dir)
    try:
        path = os.path.join(root, "store")
        started = time.perf_counter()
        messages = write_store(path, args.size_mb * 1024 * 1024, args.body)
        write_s = time.perf_counter() - started
        with MessageStore.open_readonly(path, **CONFIG) as store:
            log_bytes = store.max_commitlog_offset() - store.min_commitlog_offset()
        print(
            f"wrote {messages:,} messages of {args.body} B, {log_bytes / 2**20:,.0f} MiB "
            f"of CommitLog in {write_s:.1f} s"
        )
        verify, inner_s = [], []
        for _ in range(args.runs):
            started = time.perf_counter()
            proc = subprocess.run(
                [sys.executable, "-m", "mqstore", "verify", path, "--json"],
                capture_output=True,
                check=False,
            )
            verify.append(time.perf_counter() - started)
            report = json.loads(proc.stdout)
            assert report["ok"], report["problems"][:5]
            inner_s.append(report["seconds"])
        cat_json = [timed(["cat", path, "--format", "json"]) for _ in range(args.runs)]
        cat_text = [timed(["cat", path, "--format", "text"]) for _ in range(args.runs)]
        print()
        print(
            f"Python {platform.python_version()}, {os.cpu_count()} CPUs, "
            f"{platform.machine()}, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}"
        )
        print()
        print(f"| Measurement | best of {args.runs} | rate | goal |")
        print("|---|---:|---:|---|")
        rate = log_bytes / min(verify) / 1e6
        print(
            f"| `mqstore verify` (whole command, {log_bytes / 2**20:,.0f} MiB) | "
            f"{min(verify):.2f} s | {rate:,.0f} MB/s | ≥ 500 MB/s: "
            f"{'met' if rate >= 500 else '**not met**'} |"
        )
        inner = log_bytes / report["seconds"] / 1e6
        print(
            f"| verify's own check (no interpreter start-up) | {report['seconds']:.2f} s | "
            f"{inner:,.0f} MB/s | |"
        )
        rate = messages / min(cat_json)
        verdict = "met" if rate >= 300_000 else "**not met**"
        print(
            f"| `mqstore cat --format json > /dev/null` | {min(cat_json):.2f} s | "
            f"{rate:,.0f} msg/s | ≥ 300,000 msg/s: {verdict} |"
        )
        rate = messages / min(cat_text)
        print(
            f"| `mqstore cat --format text > /dev/null` | {min(cat_text):.2f} s | "
            f"{rate:,.0f} msg/s | |"
        )
        if args.profile:
            profile(path)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def profile(path: str) -> None:
    import cProfile
    import io
    import pstats

    from mqstore import cli

    for argv in (["verify", path], ["cat", path, "--format", "json"]):
        profiler = cProfile.Profile()
        saved = sys.stdout
        with open(os.devnull, "wb") as sink:
            sys.stdout = wrapper = io.TextIOWrapper(sink)
            try:
                profiler.runcall(cli.main, argv)
            finally:
                sys.stdout = saved
                wrapper.flush()
                wrapper.detach()
        print(f"\n### cProfile: mqstore {' '.join(argv[:1] + argv[2:])}\n")
        stats = pstats.Stats(profiler)
        stats.sort_stats("tottime").print_stats(15)


if __name__ == "__main__":
    main()
