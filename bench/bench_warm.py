"""Does warming new CommitLog files (warm_mapped_file_enable) pay for itself?

    python bench/bench_warm.py [--rounds 3] [--dir DIR]

Each run is a fresh subprocess writing 8 x 25,600 messages into a new store with
1 GiB CommitLog files, the allocator preparing (and, when warm, touching every page
of) the next file in the background, as in production. Runs alternate warm and cold,
with `sync` before each so one run's writeback does not land on the next. Prints the
median ns per message of each run and the warm/cold ratio per workload.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile

CHILD = r"""
import os, shutil, sys, time
from mqstore import Message, MessageStore
warm, size, mode, path = sys.argv[1] == "warm", int(sys.argv[2]), sys.argv[3], sys.argv[4]
store = MessageStore(path, mapped_file_size_commitlog=1 << 30, warm_mapped_file_enable=warm,
                     max_hash_slot_num=1000, max_index_num=4000)
body = b"x" * size
timings = []
for _ in range(8):
    msgs = [Message("T", body) for _ in range(25600)]
    start = time.perf_counter()
    if mode == "put_batch":
        for i in range(0, len(msgs), 256):
            store.put_batch(msgs[i:i + 256])
    else:
        put = store.put
        for msg in msgs:
            put(msg)
    timings.append((time.perf_counter() - start) / len(msgs) * 1e9)
store.close()
shutil.rmtree(path)
print(sorted(timings)[len(timings) // 2])
"""


def run(warm: bool, size: int, mode: str, root: str) -> float:
    subprocess.run(["sync"], check=True)
    path = tempfile.mkdtemp(dir=root)
    out = subprocess.run([sys.executable, "-c", CHILD, "warm" if warm else "cold", str(size),
                          mode, os.path.join(path, "store")],
                         check=True, capture_output=True, text=True)
    os.rmdir(path)
    return float(out.stdout.strip())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--dir", default=os.environ.get("MQSTORE_BENCH_DIR", "/tmp"))
    args = parser.parse_args()
    print("| workload | warm ns/msg (runs) | cold ns/msg (runs) | warm / cold |")
    print("|---|---:|---:|---:|")
    for mode in ("put", "put_batch"):
        for size in (128, 4096):
            warm, cold = [], []
            for _ in range(args.rounds):
                warm.append(run(True, size, mode, args.dir))
                cold.append(run(False, size, mode, args.dir))
            ratio = statistics.median(warm) / statistics.median(cold)
            print(f"| {mode}, {size} B | {statistics.median(warm):,.0f} "
                  f"({', '.join(f'{x:,.0f}' for x in warm)}) | {statistics.median(cold):,.0f} "
                  f"({', '.join(f'{x:,.0f}' for x in cold)}) | {ratio:.2f} |", flush=True)


if __name__ == "__main__":
    main()
