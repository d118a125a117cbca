"""The dispatcher (RocketMQ's ReputMessageService): one thread that follows the
CommitLog and, for every new record, appends its ConsumeQueue unit and its index
entries, in bulk through the native scanner."""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable, Dict, List, Optional

from . import codec
from ._native import ffi, lib
from .message import PROPERTY_DELAY_TIME_LEVEL, SCHEDULE_TOPIC, decode_properties

log = logging.getLogger(__name__)

_CHUNK = 2048  # records decoded per native scan call
# After a round that found less than a full chunk, the dispatcher waits this long
# before the next one. Two Python threads that both make many cffi calls hand the GIL
# back and forth at every call; measured here, a dispatcher that re-polled at once
# cut single puts from ~700k/s to ~150k/s, and a 1 ms pause brought them back to
# ~450k/s. A message put while the dispatcher is idle is still dispatched at once.
_BUSY_PAUSE = 0.001
# Only a round this large counts as "busy"; after a smaller one the dispatcher goes
# back to waiting for a wake-up, so a lone message is visible within microseconds.
_BUSY_ROUND = 32


def delivery_time(ptr, out, i: int, levels) -> int:
    """The tag code of record `i` of a scan (`out` fields over `ptr`) in
    SCHEDULE_TOPIC_XXXX: its store time plus the delay of its level (clamped to the
    table; an unknown level counts 1 s), as RocketMQ computes it."""
    base = i * codec.FIELDS
    props = decode_properties(
        ffi.unpack(ptr + out[base + codec.F_PROPS_OFF], out[base + codec.F_PROPS_LEN])
    )
    try:
        level = int(props.get(PROPERTY_DELAY_TIME_LEVEL, "0"))
    except ValueError:
        level = 0
    delay = levels[min(level, len(levels)) - 1] if level > 0 else 1000
    return out[base + codec.F_STORE_TIMESTAMP] + delay


class Dispatcher:
    """Builds ConsumeQueues and the index from the CommitLog, from `reput_from_offset`
    on. `catch_up()` runs it in the calling thread (start-up); `start()` runs it on its
    own thread, woken by `notify_appended()` after each append."""

    def __init__(
        self,
        commitlog,
        consume_queue_for: Callable,
        index_service,
        delay_levels_ms: List[int],
        flushed_only: bool = False,
    ) -> None:
        self.commitlog = commitlog
        self.consume_queue_for = consume_queue_for
        self.index_service = index_service
        self.delay_levels_ms = delay_levels_ms
        self.reput_from_offset = 0
        #: SYNC_FLUSH: expose only flushed records, so no consumer acts on a message
        #: a crash can still take back (RocketMQ 4 dispatches up to the written end).
        self.flushed_only = flushed_only
        self.dispatched_records = 0
        #: store time of the last record dispatched (for the checkpoint)
        self.last_dispatched_timestamp = 0
        self.damaged_records = 0
        self.idle = False
        self._wake = threading.Event()
        self._stopped = False
        self._thread: Optional[threading.Thread] = None
        self._arrival = threading.Condition()
        self._waiters = 0
        self._out = ffi.new("int64_t[]", _CHUNK * codec.FIELDS + 2)
        self._runs = ffi.new("int32_t[]", _CHUNK)
        self._topics: Dict[bytes, str] = {}

    # -- the loop ------------------------------------------------------------------

    def dispatch_limit(self) -> int:
        """How far records may be dispatched: the written end, or the flushed one."""
        if self.flushed_only:
            return min(self.commitlog.queue.flushed_where, self.commitlog.max_offset())
        return self.commitlog.max_offset()

    def behind(self) -> int:
        """CommitLog bytes written (flushed, in SYNC_FLUSH) but not dispatched yet."""
        return max(0, self.dispatch_limit() - self.reput_from_offset)

    def catch_up(self) -> None:
        """Dispatch everything written so far, in this thread."""
        while self.do_reput():
            pass

    def do_reput(self) -> bool:
        """Dispatch one chunk; False when there was nothing new."""
        commitlog = self.commitlog
        offset = self.reput_from_offset
        if offset < commitlog.min_offset():
            offset = self.reput_from_offset = commitlog.min_offset()
        limit = self.dispatch_limit()
        if offset >= limit:
            return False
        mapped = commitlog.queue.find_by_offset(offset)
        if mapped is None or not mapped.hold():
            return False
        commitlog.note_read(mapped)
        try:
            position = offset - mapped.file_from_offset
            readable = min(mapped.wrote_position, limit - mapped.file_from_offset)
            out = self._out
            stop = out + _CHUNK * codec.FIELDS
            count = lib.mq_scan(
                mapped.ptr, readable, position, _CHUNK, codec.SCAN_PROPERTIES, out, stop
            )
            if count:
                self._dispatch(mapped.ptr, out, count)
            stop_pos, reason = stop[0], stop[1]
            if reason == codec.STOP_BLANK or (
                reason == codec.STOP_END and readable >= commitlog.file_size
            ):
                stop_pos = commitlog.file_size
            elif codec.is_error(reason) or reason == codec.STOP_ZERO:
                stop_pos += self._skip_damage(mapped, stop_pos, readable, reason)
        finally:
            mapped.release()
        self.reput_from_offset = mapped.file_from_offset + stop_pos
        if count and self._waiters:
            with self._arrival:
                self._arrival.notify_all()
        return True

    def _skip_damage(self, mapped, position: int, readable: int, reason: int) -> int:
        """Below the wrote position every record is whole, so a bad one is damage:
        skip its TOTALSIZE when plausible, else the rest of the readable bytes."""
        total = (int.from_bytes(mapped.read(position, 4), "big", signed=True)
                 if readable - position >= 4 else 0)
        skip = total if 0 < total <= readable - position else readable - position
        self.damaged_records += 1
        log.error("[BUG] dispatch: %s at CommitLog offset %d; skipping %d bytes",
                  codec.STOP_REASONS[reason], mapped.file_from_offset + position, skip)
        return skip

    def _dispatch(self, ptr, out, count: int) -> None:
        runs = self._runs
        n_runs = lib.mq_queue_runs(ptr, out, count, runs)
        fields_per = codec.FIELDS
        topics = self._topics
        for r in range(n_runs):
            start = runs[r]
            end = runs[r + 1] if r + 1 < n_runs else count
            base = start * fields_per
            if out[base + codec.F_SYS_FLAG] & codec.TRANSACTION_PREPARED_TYPE:
                continue  # PREPARED and ROLLBACK records get no queue unit
            raw = ffi.unpack(ptr + out[base + codec.F_TOPIC_OFF], out[base + codec.F_TOPIC_LEN])
            topic = topics.get(raw)
            if topic is None:
                topic = topics[raw] = raw.decode("utf-8", "replace")
            if topic == SCHEDULE_TOPIC:
                self._schedule_tag_codes(ptr, out, start, end)
            queue = self.consume_queue_for(topic, out[base + codec.F_QUEUE_ID])
            queue.put_units(out + base, end - start, out[base + codec.F_QUEUE_OFFSET])
        if self.index_service is not None:
            self.index_service.add(ptr, out, count)
        self.dispatched_records += count
        self.last_dispatched_timestamp = out[(count - 1) * fields_per + codec.F_STORE_TIMESTAMP]

    def _schedule_tag_codes(self, ptr, out, start: int, end: int) -> None:
        """In SCHEDULE_TOPIC_XXXX the tag code is the delivery time: store time plus the
        delay of the record's level (clamped; an unknown level counts 1 s)."""
        levels = self.delay_levels_ms
        for i in range(start, end):
            out[i * codec.FIELDS + codec.F_TAGS_CODE] = delivery_time(ptr, out, i, levels)

    # -- thread --------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="mqstore-dispatch", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stopped:
            try:
                before = self.dispatched_records
                if self.do_reput():
                    if _BUSY_ROUND <= self.dispatched_records - before < _CHUNK:
                        time.sleep(_BUSY_PAUSE)
                    continue
            except Exception:  # keep dispatching; the error is logged
                log.exception("dispatch failed at CommitLog offset %d", self.reput_from_offset)
                self._wake.wait(0.1)
            self.idle = True
            if self.behind() > 0 or self._stopped:
                self.idle = False
                continue
            self._wake.wait(0.1)
            self._wake.clear()
            self.idle = False

    def notify_appended(self) -> None:
        """Called by writers after an append: wakes the thread if it is waiting."""
        if self.idle:
            self._wake.set()

    def wait_for_arrival(self, condition: Callable[[], bool], timeout: float) -> bool:
        """Block until `condition()` holds (re-checked after every dispatch round) or
        `timeout` seconds pass; returns the last value of `condition()`."""
        with self._arrival:
            self._waiters += 1
            try:
                return self._arrival.wait_for(condition, timeout)
            finally:
                self._waiters -= 1

    def wake_waiters(self) -> None:
        """Make every `wait_for_arrival` re-check its condition now."""
        with self._arrival:
            self._arrival.notify_all()

    def shutdown(self) -> None:
        """Dispatch what is left, then stop the thread."""
        self._stopped = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self.catch_up()
