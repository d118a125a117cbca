"""store.stats(): counts, bytes, rates, sampled put latency, dispatcher lag, CommitLog
offsets, disk use, per-queue offsets, and the periodic log line."""

from __future__ import annotations

import logging
import time

import pytest

from mqstore import Message, MessageStore, StoreClosedError
from mqstore.stats import LATENCY_BUCKETS_US, SAMPLES_PER_ROUND, LatencyHistogram, StoreStats


def wait_dispatched(store, timeout=10.0):
    deadline = time.monotonic() + timeout
    while store.dispatcher.behind() > 0:
        assert time.monotonic() < deadline
        time.sleep(0.002)


def test_counts_bytes_offsets_and_queues(small_store):
    store = small_store(disk_usage=lambda path: 0.42)
    store.put(Message("A", b"before"), 0)
    wait_dispatched(store)
    store.close()
    store = small_store(disk_usage=lambda path: 0.42)  # counts start at open
    start = store.max_commitlog_offset()
    for i in range(300):
        assert store.put(Message("A", b"x" * 300), i % 3).ok
    assert store.put_batch([Message("B", b"y" * 10)] * 5, 1).ok
    wait_dispatched(store)
    got = store.get("A", 0, 0, 32)
    store.get("A", 1, 5, 4)
    stats = store.stats()
    assert isinstance(stats, StoreStats)
    assert stats.put_messages == 305
    assert stats.put_bytes == store.max_commitlog_offset() - start > 305 * 300
    assert stats.get_calls == 2 and stats.get_messages == len(got.messages) + 4
    assert stats.commitlog_min_offset == 0
    assert stats.commitlog_max_offset == store.max_commitlog_offset()
    assert stats.dispatch_lag_bytes == 0
    assert stats.disk_used_ratio == 0.42 and not stats.disk_full
    assert stats.queues[("A", 0)].messages == 101  # one from before the reopen
    assert stats.queues[("A", 1)].max_offset == 100
    assert stats.queues[("B", 1)].messages == 5
    assert stats.put_tps > 0 and stats.uptime_ms >= 0
    assert "put 305 msgs" in stats.summary()


def test_dispatch_lag_counts_undispatched_bytes(small_store):
    store = small_store()
    store.dispatcher.shutdown()  # stop the dispatcher thread: nothing more is dispatched
    before = store.stats().dispatch_lag_bytes
    result = store.put(Message("A", b"z" * 100), 0)
    assert store.stats().dispatch_lag_bytes == before + result.store_size


def test_put_latency_is_sampled_in_rounds(small_store):
    store = small_store()
    collector = store._stats
    for _ in range(200):  # the scheduler's first round may be running: let it finish
        store.put(Message("A", b"l"), 0)
    baseline = store.stats().put_latency.samples
    assert store._append == store.commitlog.append  # no round armed: the raw append
    collector.sample()  # what the scheduler does every second
    assert store._append != store.commitlog.append  # the timed wrapper
    for _ in range(SAMPLES_PER_ROUND * 3):
        assert store.put(Message("A", b"l"), 0).ok
    histogram = store.stats().put_latency
    assert histogram.samples == baseline + SAMPLES_PER_ROUND  # one round, then off
    assert store._append == store.commitlog.append
    assert histogram.percentile(50) in LATENCY_BUCKETS_US


def test_latency_histogram_percentiles():
    bounds = (1, 10, 100)
    histogram = LatencyHistogram(bounds, (0, 90, 9, 1))
    assert histogram.samples == 100
    assert histogram.percentile(50) == 10
    assert histogram.percentile(99) == 100
    assert histogram.percentile(100) == -1  # in the open bucket
    assert LatencyHistogram(bounds, (0, 0, 0, 0)).percentile(50) is None


def test_rates_use_the_sampler_window(small_store):
    store = small_store()
    store._stats._history.clear()
    store._stats.sample()
    for _ in range(500):
        store.put(Message("A", b"r"), 0)
    wait_dispatched(store)
    for _ in range(10):
        store.get("A", 0, 0, 32)
    time.sleep(0.05)
    stats = store.stats()
    elapsed = time.monotonic() - store._stats._history[0][0]
    assert stats.put_tps == pytest.approx(500 / elapsed, rel=0.2)
    assert stats.get_tps == pytest.approx(320 / elapsed, rel=0.2)


def test_stats_line_is_logged_when_enabled(small_store, caplog):
    with caplog.at_level(logging.INFO, logger="mqstore.store"):
        store = small_store(stats_log_interval=50)
        store.put(Message("A", b"logged"), 0)
        deadline = time.monotonic() + 3
        while not any("put 1 msgs" in r.getMessage() for r in caplog.records):
            assert time.monotonic() < deadline, "no stats line was logged"
            time.sleep(0.02)
    quiet = small_store(path=store.path + "-quiet")
    assert not any(task[3] == "stats log" for task in quiet._scheduler._tasks)


def test_read_only_store_has_stats_and_no_scheduler(small_store, store_dir):
    store = small_store()
    store.put(Message("A", b"ro"), 0)
    store.close()
    readonly = MessageStore.open_readonly(
        store_dir, mapped_file_size_commitlog=64 * 1024, mapped_file_size_consume_queue=20 * 1024
    )
    try:
        assert readonly._scheduler is None
        stats = readonly.stats()
        assert stats.queues[("A", 0)].messages == 1
        assert 0 < stats.disk_used_ratio <= 1  # measured with statvfs
        assert stats.put_messages == 0
        with pytest.raises(Exception, match="read-only"):
            readonly.delete_expired_files()
    finally:
        readonly.close()
    with pytest.raises(StoreClosedError):
        readonly.stats()
