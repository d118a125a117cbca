"""ConsumeQueue: one per (topic, queue id), a MappedFileQueue of 20-byte units
(commitlog offset, size, tag code) under ``consumequeue/TOPIC/QUEUEID/``; unit n is
the message at queue offset n."""

from __future__ import annotations

import logging
import os
import struct
import threading
import time
from typing import List, Optional, Tuple

from ._native import ffi, lib
from .errors import MQStoreError
from .mappedfile import MappedFile, MappedFileQueue

log = logging.getLogger(__name__)

CQ_STORE_UNIT_SIZE = 20
BLANK_UNIT_SIZE = 0x7FFFFFFF
_UNIT = struct.Struct(">qiq")
_I64_MAX = 2**63 - 1


class ConsumeQueue:
    """The units of one queue. Appends come from the dispatcher thread only; readers
    read below the published write position without a lock."""

    def __init__(self, store_path: str, topic: str, queue_id: int, file_size: int,
                 readonly: bool = False, in_memory: bool = False) -> None:
        self.topic = topic
        self.queue_id = queue_id
        self.file_size = file_size
        directory = os.path.join(store_path, "consumequeue", topic, str(queue_id))
        self.queue = MappedFileQueue(directory, file_size, readonly=readonly,
                                     in_memory=in_memory)
        #: one past the CommitLog bytes of the last unit (duplicate detection)
        self.max_physic_offset = -1
        self.min_logic_offset = 0
        self._lock = threading.Lock()  # appends and truncation vs. each other

    # -- opening -----------------------------------------------------------------

    def load(self) -> None:
        self.queue.load()

    def recover(self) -> None:
        """RocketMQ's ConsumeQueue recovery: from the third-last file, units are valid
        while CL offset >= 0 and size > 0; the queue ends after the last valid one."""
        files = self.queue.files
        if not files:
            return
        start = max(0, len(files) - 3)
        end = files[start].file_from_offset
        wipe_to = None
        for mapped in files[start:]:
            valid = lib.mq_cq_valid_end(mapped.ptr, 0, self.file_size, _I64_MAX)
            end = mapped.file_from_offset + valid
            if valid < self.file_size:
                if valid < self.file_size and any(self._unit_bytes(mapped, valid)):
                    # a damaged unit, maybe with stale units behind it: wipe them
                    wipe_to = mapped.last_nonzero(valid)
                break
        self.queue.truncate(end, wipe_to)
        self._refresh_max_physic_offset()

    def follow(self) -> None:
        """Read-only: take in units a live writer appended since the last look (and
        let go of files its cleanup deleted)."""
        self.queue.forget_deleted_head()
        self.queue.map_new_files()
        files = self.queue.files
        for index, mapped in enumerate(files):
            if mapped.wrote_position >= self.file_size and index < len(files) - 1:
                continue
            valid = lib.mq_cq_valid_end(mapped.ptr, mapped.wrote_position, self.file_size, _I64_MAX)
            mapped.set_positions(valid)
            if valid < self.file_size:
                break
        self._refresh_max_physic_offset()

    def truncate_to_commitlog(self, commitlog_end: int) -> bool:
        """Drop every unit pointing at or past `commitlog_end` (after the CommitLog was
        cut back there): from the last file backwards, a file whose first unit points
        past the end goes; else the end moves after its last unit below it. Returns
        whether any unit was dropped."""
        before = self.queue.max_offset()
        with self._lock:
            for mapped in reversed(list(self.queue.files)):
                first_offset = self._unit_at(mapped, 0)[0] if mapped.wrote_position else -1
                if mapped.wrote_position and first_offset < commitlog_end and first_offset >= 0:
                    valid = lib.mq_cq_valid_end(mapped.ptr, 0, mapped.wrote_position, commitlog_end)
                    self.queue.truncate(mapped.file_from_offset + valid, mapped.wrote_position)
                    break
                if self.queue.readonly:
                    self.queue.files.remove(mapped)
                    mapped.shutdown()
                else:
                    self.queue.files.remove(mapped)
                    mapped.destroy()
            self._refresh_max_physic_offset()
        return self.queue.max_offset() != before

    def _refresh_max_physic_offset(self) -> None:
        last = self.last_unit()
        self.max_physic_offset = last[0] + last[1] if last else -1

    @staticmethod
    def _unit_bytes(mapped: MappedFile, position: int) -> bytes:
        return ffi.unpack(
            mapped.ptr + position, min(CQ_STORE_UNIT_SIZE, mapped.file_size - position)
        )

    @staticmethod
    def _unit_at(mapped: MappedFile, position: int) -> Tuple[int, int, int]:
        return _UNIT.unpack(ffi.unpack(mapped.ptr + position, CQ_STORE_UNIT_SIZE))

    def last_unit(self) -> Optional[Tuple[int, int, int]]:
        """(commitlog offset, size, tag code) of the last unit, or None."""
        last = self.queue.last_file()
        if last is None or last.wrote_position == 0:
            files = self.queue.files
            if len(files) >= 2 and last is not None and last.wrote_position == 0:
                before = files[-2]
                return self._unit_at(before, before.wrote_position - CQ_STORE_UNIT_SIZE)
            return None
        return self._unit_at(last, last.wrote_position - CQ_STORE_UNIT_SIZE)

    def correct_min_offset(self, commitlog_min_offset: int) -> None:
        """Set the min logical offset to the first unit pointing at or above the
        CommitLog's min offset (RocketMQ's correctMinOffset, over the first file)."""
        first = self.queue.first_file()
        if first is None or not first.hold():
            return
        try:
            data = ffi.unpack(first.ptr, first.wrote_position)
        finally:
            first.release()
        for index, (offset, size, _tag) in enumerate(_UNIT.iter_unpack(data)):
            if offset >= commitlog_min_offset and size != BLANK_UNIT_SIZE:
                self.min_logic_offset = first.file_from_offset + index * CQ_STORE_UNIT_SIZE
                return
        self.min_logic_offset = max(
            self.min_logic_offset, first.file_from_offset + first.wrote_position
        )

    def delete_files_below(self, commitlog_min_offset: int, interval_forcibly_ms: int,
                           now_ms: int) -> Tuple[List[str], Optional[str]]:
        """Cleanup: delete files from the oldest (never the last) whose last unit points
        below `commitlog_min_offset` (RocketMQ's deleteExpiredFileByOffset), then move
        the min offset up (correct_min_offset). The min offset moves past the doomed
        files first, so a reader asks for nothing in them from then on. Returns (paths
        deleted, path of a file still held by a reader, or None)."""
        files = self.queue.files
        doomed: List[MappedFile] = []
        for mapped in files[:-1]:
            if not mapped.hold():
                doomed.append(mapped)  # a deletion waiting for its readers: retry it
                continue
            try:
                written = mapped.wrote_position
                last_offset = (self._unit_at(mapped, written - CQ_STORE_UNIT_SIZE)[0]
                               if written >= CQ_STORE_UNIT_SIZE else -1)
            finally:
                mapped.release()
            if written < self.file_size or last_offset >= commitlog_min_offset:
                break
            doomed.append(mapped)
        if not doomed:
            self.correct_min_offset(commitlog_min_offset)
            return [], None
        survivor = files[len(doomed)]
        self.min_logic_offset = max(self.min_logic_offset, survivor.file_from_offset)
        deleted: List[MappedFile] = []
        held = None
        for mapped in doomed:
            if not mapped.try_destroy(interval_forcibly_ms, now_ms):
                held = mapped.path
                break
            deleted.append(mapped)
        with self._lock:
            self.queue.drop_files(deleted)
        self.correct_min_offset(commitlog_min_offset)
        return [mapped.path for mapped in deleted], held

    # -- offsets -----------------------------------------------------------------

    def min_offset(self) -> int:
        """The smallest queue offset still readable."""
        return self.min_logic_offset // CQ_STORE_UNIT_SIZE

    def max_offset(self) -> int:
        """One past the last unit's queue offset."""
        return self.queue.max_offset() // CQ_STORE_UNIT_SIZE

    # -- appending (dispatcher) --------------------------------------------------

    def _writable_file(self, logical: int) -> MappedFile:
        last = self.queue.last_file()
        if last is not None and last.wrote_position < self.file_size:
            return last
        if last is None and logical > 0:
            # RocketMQ's pre-fill: the first file of a queue that starts mid-file is
            # filled with blank units up to the first real one.
            mapped = self.queue.next_file(logical)
            fill_to = logical - mapped.file_from_offset
            lib.mq_cq_write_blank_units(mapped.ptr, 0, fill_to)
            mapped.wrote_position = fill_to
            mapped.flushed_position = mapped.committed_position = 0
            self.min_logic_offset = logical
            return mapped
        return self.queue.next_file(logical)

    def put_units(self, fields, count: int, first_queue_offset: int) -> int:
        """Append the units of `count` scanned records (the native scan's cdata fields)
        whose queue offsets run from `first_queue_offset`. Duplicates (already in the
        queue) are skipped; a gap is logged and the units go at the current end, as
        RocketMQ does. Returns the number of units written."""
        from .codec import F_PHYSICAL_OFFSET, F_TOTAL_SIZE, FIELDS

        if self.queue.readonly:  # its files are mapped read-only: a write would crash
            raise MQStoreError(f"ConsumeQueue {self.topic}/{self.queue_id} is read-only")
        written = 0
        with self._lock:
            index = 0
            expected = first_queue_offset * CQ_STORE_UNIT_SIZE
            current = self.queue.max_offset()
            if self.queue.last_file() is None:
                current = expected
            if expected < current:
                skip = min(count, (current - expected) // CQ_STORE_UNIT_SIZE)
                index = skip
                expected += skip * CQ_STORE_UNIT_SIZE
            while index < count and (
                fields[index * FIELDS + F_PHYSICAL_OFFSET] + fields[index * FIELDS + F_TOTAL_SIZE]
                <= self.max_physic_offset
            ):
                index += 1
                expected += CQ_STORE_UNIT_SIZE
            if index < count and self.queue.last_file() is not None and expected > current:
                log.error(
                    "ConsumeQueue %s/%d: unit for queue offset %d arrives at %d (gap); "
                    "appended at the end as RocketMQ does",
                    self.topic,
                    self.queue_id,
                    expected // CQ_STORE_UNIT_SIZE,
                    current // CQ_STORE_UNIT_SIZE,
                )
                expected = current
            while index < count:
                mapped = self._writable_file(expected)
                position = mapped.wrote_position
                n = lib.mq_cq_write_units(
                    mapped.ptr, position, self.file_size, fields + index * FIELDS, count - index
                )
                mapped.wrote_position = position + n * CQ_STORE_UNIT_SIZE
                index += n
                written += n
                expected += n * CQ_STORE_UNIT_SIZE
            if written:
                last = (count - 1) * FIELDS
                self.max_physic_offset = (
                    fields[last + F_PHYSICAL_OFFSET] + fields[last + F_TOTAL_SIZE]
                )
        return written

    # -- reading -----------------------------------------------------------------

    def read_units(
        self, queue_offset: int, max_units: int
    ) -> Tuple[List[Tuple[int, int, int]], int]:
        """Units from `queue_offset` to at most `max_units` and never past the end of
        the file holding it (RocketMQ reads one CQ file per call). Returns (units,
        queue offset of the first unit returned), or ([], -1) when the offset is not
        in any file."""
        data = self.read_unit_bytes(queue_offset, max_units)
        if not data:
            return [], -1
        return list(_UNIT.iter_unpack(data)), queue_offset

    def read_unit_bytes(self, queue_offset: int, max_units: int) -> bytes:
        """As read_units, the raw 20-byte units (b"" when the offset is in no file)."""
        logical = queue_offset * CQ_STORE_UNIT_SIZE
        mapped = self.queue.find_by_offset(logical)
        if mapped is None or not mapped.hold():
            return b""
        try:
            position = logical - mapped.file_from_offset
            available = mapped.wrote_position - position
            if available <= 0:
                return b""
            size = min(available, max_units * CQ_STORE_UNIT_SIZE)
            return ffi.unpack(mapped.ptr + position, size - size % CQ_STORE_UNIT_SIZE)
        finally:
            mapped.release()

    def unit(self, queue_offset: int) -> Optional[Tuple[int, int, int]]:
        units, _ = self.read_units(queue_offset, 1)
        return units[0] if units else None

    def file_end_offset(self, queue_offset: int) -> int:
        """Queue offset of the first unit of the file after the one holding this one."""
        logical = queue_offset * CQ_STORE_UNIT_SIZE
        return (logical - logical % self.file_size + self.file_size) // CQ_STORE_UNIT_SIZE

    # -- flushing and closing ----------------------------------------------------

    def flush(self, least_pages: int = 0) -> bool:
        return self.queue.flush(least_pages)

    def flush_all(self) -> None:
        self.queue.flush_all()

    def destroy(self) -> None:
        """Delete every file of this queue."""
        with self._lock:
            for mapped in self.queue.files:
                mapped.destroy()
            self.queue.files = []
            self.max_physic_offset = -1
            self.min_logic_offset = 0

    def shutdown(self) -> None:
        self.queue.shutdown()


class FlushConsumeQueueService:
    """Flushes every ConsumeQueue each `flush_interval_consume_queue` ms once
    `flush_consume_queue_least_pages` dirty pages accumulated, and everything every
    `flush_consume_queue_thorough_interval` ms (RocketMQ's FlushConsumeQueueService)."""

    def __init__(self, queues, config, dispatched_timestamp, on_full_flush) -> None:
        self._queues = queues  # callable returning the current queues
        self._config = config
        self._dispatched_timestamp = dispatched_timestamp  # callable
        self._on_full_flush = on_full_flush  # called with the timestamp after a full flush
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="mqstore-flush-cq", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        config = self._config
        last_thorough = time.monotonic() * 1000
        while not self._stop.wait(config.flush_interval_consume_queue / 1000):
            now = time.monotonic() * 1000
            least = config.flush_consume_queue_least_pages
            thorough = now - last_thorough >= config.flush_consume_queue_thorough_interval
            if thorough:
                least, last_thorough = 0, now
            stamp = self._dispatched_timestamp()  # taken before flushing, as RocketMQ
            failed = False
            for queue in self._queues():
                try:
                    if thorough:
                        queue.flush_all()
                    else:
                        queue.flush(least)
                except Exception:
                    failed = True
                    log.exception("flush of ConsumeQueue %s/%d failed", queue.topic, queue.queue_id)
            if thorough and not failed:
                try:
                    self._on_full_flush(stamp)
                except Exception:
                    log.exception("checkpoint update failed")

    def shutdown(self) -> None:
        self._stop.set()
        self._thread.join()
