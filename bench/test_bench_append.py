"""pytest-benchmark of the append path: ``MessageStore.put`` and ``put_batch`` (256 per
batch), 128 B and 4 KiB bodies, ASYNC_FLUSH and SYNC_FLUSH.

One round appends PER_ROUND messages (pre-built, distinct Message objects cycled)
into pages touched before timing; the time reported is per round, and
``extra_info`` holds the messages per round and the best round's msg/s. Run with
``pytest bench/ --benchmark-only``; comparisons with the floors are in
bench_append.py.
"""

from __future__ import annotations

import pytest

from bench_append import BATCH, record_size
from mqstore import ASYNC_FLUSH, SYNC_FLUSH

ROUNDS = 3
#: Messages per round: about 0.2-1 s on the 2-core CI machine (SYNC_FLUSH depends on
#: the disk's flush latency), with ROUNDS rounds fitting in the first 1 GiB file.
PER_ROUND = {
    ("put", ASYNC_FLUSH, 128): 262_144,
    ("put", ASYNC_FLUSH, 4096): 81_920,
    ("put", SYNC_FLUSH, 128): 2_048,
    ("put", SYNC_FLUSH, 4096): 2_048,
    ("put_batch", ASYNC_FLUSH, 128): 524_288,
    ("put_batch", ASYNC_FLUSH, 4096): 81_920,
    ("put_batch", SYNC_FLUSH, 128): 131_072,
    ("put_batch", SYNC_FLUSH, 4096): 24_576,
}
BODY_SIZES = pytest.mark.parametrize("body_size", [128, 4096], ids=["128B", "4KiB"])
FLUSH_TYPES = pytest.mark.parametrize("flush_disk_type", [ASYNC_FLUSH, SYNC_FLUSH])


def _run(benchmark, store, one_round, count: int, body_size: int) -> None:
    """Time ROUNDS rounds, record msg/s, and check every message went into one file."""
    first = store.max_commitlog_offset()
    rounds_run = 0

    def counted_round() -> None:
        nonlocal rounds_run
        one_round()
        rounds_run += 1

    benchmark.pedantic(counted_round, rounds=ROUNDS, iterations=1, warmup_rounds=0)
    benchmark.extra_info["messages_per_round"] = count
    if benchmark.stats is not None:  # None under --benchmark-disable (one round)
        benchmark.extra_info["best_msg_per_s"] = round(count / benchmark.stats.stats.min)
    appended = store.max_commitlog_offset() - first
    assert appended == rounds_run * count * record_size(body_size)
    assert len(store.commitlog.queue.files) == 1, "a round crossed into a second file"


@BODY_SIZES
@FLUSH_TYPES
def test_put(benchmark, ready_store, messages, flush_disk_type, body_size):
    count = PER_ROUND[("put", flush_disk_type, body_size)]
    msgs = messages(body_size, 1024)
    store = ready_store(ROUNDS * count * record_size(body_size), flush_disk_type=flush_disk_type)
    put = store.put

    def one_round() -> None:
        for _ in range(count // len(msgs)):
            for msg in msgs:
                put(msg)

    _run(benchmark, store, one_round, count, body_size)


@BODY_SIZES
@FLUSH_TYPES
def test_put_batch(benchmark, ready_store, messages, flush_disk_type, body_size):
    count = PER_ROUND[("put_batch", flush_disk_type, body_size)]
    batches = [messages(body_size, BATCH) for _ in range(4)]
    store = ready_store(ROUNDS * count * record_size(body_size), flush_disk_type=flush_disk_type)
    put_batch = store.put_batch

    def one_round() -> None:
        for _ in range(count // (BATCH * len(batches))):
            for batch in batches:
                put_batch(batch)

    _run(benchmark, store, one_round, count, body_size)
