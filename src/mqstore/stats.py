"""Store statistics: `MessageStore.stats()` as typed dataclasses, and the collector
that gathers them without adding work to `put` (counts come from state the store
keeps anyway; put latency is sampled by briefly swapping in a timed append)."""

from __future__ import annotations

import bisect
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Deque, Dict, Optional, Tuple

from .diskspace import partition_used_ratio

#: upper bounds (microseconds) of the put-latency buckets; the last bucket is open
LATENCY_BUCKETS_US: Tuple[int, ...] = (
    1,
    2,
    4,
    8,
    16,
    32,
    64,
    128,
    256,
    512,
    1024,
    2048,
    4096,
    8192,
    16384,
    65536,
    262144,
    1048576,
)
#: puts timed each time the sampler arms (once per SAMPLE_INTERVAL_MS)
SAMPLES_PER_ROUND = 64
SAMPLE_INTERVAL_MS = 1000
#: rates (TPS) are averaged over this window
RATE_WINDOW_S = 10.0


@dataclass(frozen=True)
class LatencyHistogram:
    """Sampled `put` latencies (time inside the CommitLog append, including the
    SYNC_FLUSH wait): `counts[i]` puts took at most `bounds_us[i]` us (and more than
    the previous bound); `counts[-1]` took longer than the last bound."""

    bounds_us: Tuple[int, ...]
    counts: Tuple[int, ...]

    @property
    def samples(self) -> int:
        return sum(self.counts)

    def percentile(self, p: float) -> Optional[int]:
        """Upper bound (us) of the bucket holding the p-th percentile (0 < p <= 100);
        None without samples; -1 when it lies in the open last bucket."""
        total = self.samples
        if not total:
            return None
        rank = p / 100 * total
        seen = 0
        for index, count in enumerate(self.counts):
            seen += count
            if seen >= rank and count:
                return self.bounds_us[index] if index < len(self.bounds_us) else -1
        return -1


@dataclass(frozen=True)
class QueueStats:
    """One ConsumeQueue: readable offsets [min_offset, max_offset)."""

    min_offset: int
    max_offset: int

    @property
    def messages(self) -> int:
        return self.max_offset - self.min_offset


@dataclass(frozen=True)
class StoreStats:
    """A snapshot of a store's activity and state (`MessageStore.stats()`).

    Counts are since the store was opened. `put_bytes` counts CommitLog bytes
    appended, end-of-file blank records included. Rates are per second over the last
    ~10 s (since opening, before the first samples). `dispatch_lag_bytes` is the
    CommitLog written but not yet in the ConsumeQueues and index.
    """

    uptime_ms: int
    put_messages: int
    put_bytes: int
    put_tps: float
    put_refused_disk_full: int
    get_calls: int
    get_messages: int
    get_tps: float
    put_latency: LatencyHistogram
    dispatch_lag_bytes: int
    commitlog_min_offset: int
    commitlog_max_offset: int
    disk_used_ratio: float
    disk_full: bool
    files_deleted: int
    queues: Dict[Tuple[str, int], QueueStats] = field(default_factory=dict)

    def summary(self) -> str:
        """The one-line form logged every `stats_log_interval` ms."""
        p50, p99 = self.put_latency.percentile(50), self.put_latency.percentile(99)
        return (
            f"put {self.put_messages} msgs {self.put_bytes} B {self.put_tps:.0f}/s "
            f"(p50<={p50}us p99<={p99}us, {self.put_latency.samples} sampled), "
            f"get {self.get_messages} msgs {self.get_tps:.0f}/s, dispatch lag "
            f"{self.dispatch_lag_bytes} B, commitlog [{self.commitlog_min_offset}, "
            f"{self.commitlog_max_offset}), disk {self.disk_used_ratio:.0%}"
            f"{' FULL' if self.disk_full else ''}, {len(self.queues)} queues, "
            f"{self.files_deleted} files deleted"
        )


class StatsCollector:
    """Gathers a store's statistics. Nothing is counted on the put path: message and
    byte counts are derived from the CommitLog's next queue offsets and end offset;
    latency comes from SAMPLES_PER_ROUND puts per second that go through `timed_append`
    (the store swaps it in when `sample()` arms it and back when the round is done)."""

    def __init__(self, store) -> None:
        self.store = store
        self._started = time.monotonic()
        commitlog = store.commitlog
        self._base_puts = self._put_count()
        self._base_bytes = commitlog.max_offset()
        self._counts = [0] * (len(LATENCY_BUCKETS_US) + 1)
        self._samples_left = 0
        self._history: Deque[Tuple[float, int, int]] = deque()

    def _put_count(self) -> int:
        # dict.copy() is atomic under the GIL: a put adding a queue cannot break it
        return sum(self.store.commitlog.queue_offsets.copy().values())

    # -- latency sampling ------------------------------------------------------------

    @property
    def sampling(self) -> bool:
        return self._samples_left > 0

    def timed_append(self, raw):
        """`raw` (the CommitLog's append) wrapped to time SAMPLES_PER_ROUND calls."""
        counts = self._counts
        clock = time.perf_counter_ns

        def timed(*args):
            start = clock()
            result = raw(*args)
            elapsed_us = (clock() - start) / 1000
            counts[bisect.bisect_left(LATENCY_BUCKETS_US, elapsed_us)] += 1
            self._samples_left -= 1
            if self._samples_left <= 0:
                self.store._select_append()
            return result

        return timed

    def sample(self) -> None:
        """Scheduler task: remember counts for the rates and arm latency sampling."""
        now = time.monotonic()
        history = self._history
        history.append((now, self._put_count(), self.store._get_messages))
        while len(history) > 2 and now - history[1][0] >= RATE_WINDOW_S:
            history.popleft()
        if not self.sampling:
            self._samples_left = SAMPLES_PER_ROUND
            self.store._select_append()

    # -- snapshot ----------------------------------------------------------------------

    def snapshot(self, retention=None) -> StoreStats:
        store = self.store
        commitlog = store.commitlog
        now = time.monotonic()
        puts = self._put_count()
        gets = store._get_messages
        if self._history:
            then, puts_then, gets_then = self._history[0]
        else:
            then, puts_then, gets_then = self._started, self._base_puts, 0
        elapsed = max(now - then, 1e-9)
        queues = {
            (queue.topic, queue.queue_id): QueueStats(queue.min_offset(), queue.max_offset())
            for queue in store._consume_queues_snapshot()
        }
        max_offset = commitlog.max_offset()
        dispatcher = store.dispatcher
        lag = max(0, max_offset - dispatcher.reput_from_offset) if dispatcher else 0
        return StoreStats(
            uptime_ms=int((now - self._started) * 1000),
            put_messages=puts - self._base_puts,
            put_bytes=max_offset - self._base_bytes,
            put_tps=(puts - puts_then) / elapsed,
            put_refused_disk_full=store._put_refused,
            get_calls=store._get_calls,
            get_messages=gets,
            get_tps=(gets - gets_then) / elapsed,
            put_latency=LatencyHistogram(LATENCY_BUCKETS_US, tuple(self._counts)),
            dispatch_lag_bytes=lag,
            commitlog_min_offset=commitlog.min_offset(),
            commitlog_max_offset=max_offset,
            disk_used_ratio=(
                retention.disk_used_ratio if retention else partition_used_ratio(store.path)
            ),
            disk_full=bool(retention and retention.disk_full_reason),
            files_deleted=retention.files_deleted if retention else 0,
            queues=dict(sorted(queues.items())),
        )
