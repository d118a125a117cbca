"""Recovery time: reopening a store holding about 1 GiB of CommitLog, after a clean
shutdown and after a kill -9 of the writer (abort file left, checkpoint behind).

    python bench/bench_recovery.py [--gib 1.0] [--dir /path/on/real/disk]

Prints a markdown table; the numbers in bench/RESULTS.md come from this script.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time

from mqstore import MessageStore

CONFIG = dict(mapped_file_size_commitlog=1024 * 1024 * 1024)


def fill(path: str, gib: float) -> int:
    """Write about `gib` GiB of 128-byte messages (batches of 256, 8 queues) in a child
    process, which is then SIGKILLed: returns the bytes written."""
    script = textwrap.dedent(f"""
        import sys
        from mqstore import Message, MessageStore
        store = MessageStore({path!r}, **{CONFIG!r})
        target = int({gib} * 2**30)
        batches = [[Message("Bench", bytes(128), keys=f"k{{q}}-{{i}}") for i in range(256)]
                   for q in range(8)]
        q = 0
        while store.max_commitlog_offset() < target:
            store.put_batch(batches[q % 8], queue_id=q % 8)
            q += 1
        while store.dispatcher.behind():
            pass
        store.flush()
        print(store.max_commitlog_offset(), flush=True)
        sys.stdin.readline()
    """)
    child = subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    written = int(child.stdout.readline())
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    return written


def timed_open(path: str):
    started = time.perf_counter()
    store = MessageStore(path, **CONFIG)
    elapsed = time.perf_counter() - started
    report = store.recovery
    return store, elapsed, report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--gib", type=float, default=1.0)
    parser.add_argument("--dir", default=os.path.join(os.path.dirname(__file__), ".."))
    args = parser.parse_args()
    root = tempfile.mkdtemp(prefix=".mqstore-bench-recovery-", dir=args.dir)
    path = os.path.join(root, "store")
    try:
        written = fill(path, args.gib)
        rows = []
        store, crash_s, report = timed_open(path)  # abort file present: abnormal
        rows.append(("after kill -9 (abort file, checkpoint behind)", crash_s, report))
        store.close()
        store, clean_s, report = timed_open(path)
        rows.append(("after clean close", clean_s, report))
        store.close()
        # A crash right after a clean run: the checkpoint is current.
        with open(os.path.join(path, "abort"), "w"):
            pass
        store, fresh_s, report = timed_open(path)
        rows.append(("abort file, checkpoint current", fresh_s, report))
        store.close()
        print(f"{time.strftime('%Y-%m-%d')}, {platform.node()}, {platform.platform()}, "
              f"Python {platform.python_version()}, {written / 2**30:.2f} GiB of CommitLog")
        print("| reopen | time | records walked | records re-dispatched |")
        print("|---|---:|---:|---:|")
        for name, seconds, rep in rows:
            print(f"| {name} | {seconds * 1000:.0f} ms | {rep.records_checked:,} | "
                  f"{rep.records_dispatched:,} |")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
