"""The CommitLog: every message of every topic, appended in one sequence of fixed-size
mapped files, and the services that flush it (ASYNC_FLUSH, SYNC_FLUSH group commit)."""

from __future__ import annotations

import logging
import os
import threading
import time
from array import array
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterator, List, Optional, Tuple

from . import codec
from ._native import ffi, lib
from .config import SYNC_FLUSH, StoreConfig, wall_clock_ms
from .errors import (
    DiskFullError,
    MQStoreError,
    RecordError,
    StoreClosedError,
    StoreCorruptedError,
)
from .mappedfile import AllocateMappedFileService, MappedFile, MappedFileQueue
from .message import MessageExt, encode_host
from .results import PutBatchResult, PutResult, PutStatus

log = logging.getLogger(__name__)

_SCAN_CHUNK = 4096  # records decoded per native scan call
# PREPARED (0x4) and ROLLBACK (0xC) records get no queue offset; both have bit 0x4.
_NOT_QUEUED_BIT = 0x4
_append = lib.mq_append
_tuple_new = tuple.__new__
PUT_OK = PutStatus.PUT_OK


@dataclass
class CommitLogRecovery:
    """What opening the CommitLog found: where the data ends and what was cut off."""

    start_offset: int = 0
    end_offset: int = 0
    records_checked: int = 0
    bytes_truncated: int = 0
    files_deleted: List[str] = field(default_factory=list)
    stop_reason: str = ""


class FlushService:
    """ASYNC_FLUSH: a thread that flushes the CommitLog every `flush_interval_commitlog`
    ms once `flush_commitlog_least_pages` dirty pages accumulated, and everything every
    `flush_commitlog_thorough_interval` ms (RocketMQ's FlushRealTimeService)."""

    def __init__(self, commitlog: CommitLog, config: StoreConfig) -> None:
        self._commitlog = commitlog
        self._queue = commitlog.queue
        self._config = config
        self._stop = threading.Event()
        self.flush_count = 0
        self._thread = threading.Thread(target=self._run, name="mqstore-flush", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        config = self._config
        interval = config.flush_interval_commitlog / 1000
        last_thorough = time.monotonic() * 1000
        while not self._stop.wait(interval):
            now = time.monotonic() * 1000  # intervals run on real time, whatever the clock
            try:
                if now - last_thorough >= config.flush_commitlog_thorough_interval:
                    last_thorough = now
                    before = self._queue.flushed_where
                    self._commitlog.flush()
                    self.flush_count += self._queue.flushed_where != before
                    continue
                for _ in range(len(self._queue.files) + 1):
                    before = self._queue.flushed_where
                    done = self._queue.flush(config.flush_commitlog_least_pages)
                    if self._queue.flushed_where != before:
                        self.flush_count += 1
                    if done or self._queue.flushed_where == before:
                        break
            except MQStoreError:
                log.exception("CommitLog flush failed; will retry")

    def wait_for_flush(self, end_offset: int) -> bool:
        return True

    def shutdown(self) -> None:
        self._stop.set()
        self._thread.join()


class GroupCommitService:
    """SYNC_FLUSH group commit: a putter waits until one flush covers its record.

    When no flush is running, the first waiter becomes the leader and flushes
    everything written so far, outside the condition's lock; every putter that
    appended before it started is covered. When it finishes, all waiters wake at once
    (notify_all) and either find their record flushed or elect the next leader. So N
    concurrent putters cost about one msync per round, and a lone putter pays exactly
    one msync with no thread hand-off. A background thread also flushes every 10 ms,
    for records nobody waits on (WAIT=false).
    """

    def __init__(self, commitlog: CommitLog, config: StoreConfig) -> None:
        self._commitlog = commitlog
        self._queue = commitlog.queue
        self._timeout = config.sync_flush_timeout / 1000
        self._cond = threading.Condition()
        self._flushing = False
        self.flush_count = 0
        self._stop = threading.Event()
        # RocketMQ's group commit thread loops every 10 ms; so does this safety net.
        self._interval = 0.01
        self._thread = threading.Thread(target=self._run, name="mqstore-flush", daemon=True)
        self._thread.start()

    def _lead(self) -> bool:
        """Flush as leader (called holding the condition, which it releases while
        flushing); False when the flush failed (logged)."""
        self._flushing = True
        self._cond.release()
        try:
            self._commitlog.flush()
            ok = True
        except MQStoreError:
            log.exception("group commit flush failed")
            ok = False
        finally:
            self._cond.acquire()
            self._flushing = False
            self.flush_count += 1
            self._cond.notify_all()
        return ok

    def wait_for_flush(self, end_offset: int) -> bool:
        """True once [.., end_offset) is on disk; False after `sync_flush_timeout` or
        when the flush failed (logged)."""
        queue = self._queue
        if queue.flushed_where >= end_offset:
            return True
        deadline = time.monotonic() + self._timeout
        with self._cond:
            while queue.flushed_where < end_offset:
                if not self._flushing:
                    if not self._lead():
                        return False
                    continue
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(remaining)
            return True

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            queue = self._queue
            if queue.flushed_where < queue.max_offset():
                with self._cond:
                    if not self._flushing:
                        self._lead()

    def shutdown(self) -> None:
        self._stop.set()
        self._thread.join()


class CommitLog:
    """Appends records to `<store>/commitlog/` and reads them back by offset.

    One writer at a time (the append lock); readers never take it. Records are
    encoded by the C core straight into the mapped file and become visible when the
    file's wrote position moves past them, all records of a batch at once.
    """

    def __init__(self, store_path: str, config: StoreConfig, readonly: bool = False) -> None:
        self.config = config
        self.readonly = readonly
        self.file_size = config.mapped_file_size_commitlog
        self._allocator = (
            AllocateMappedFileService(config.warm_mapped_file_enable)
            if config.preallocate_mapped_file and not readonly
            else None
        )
        self.queue = MappedFileQueue(
            os.path.join(store_path, "commitlog"), self.file_size, self._allocator, readonly
        )
        # Re-entrant: a roll calls back into code that may append or read the offsets.
        # (A close from a signal handler never takes it re-entrantly: see
        # MessageStore.close.)
        self._lock = threading.RLock()
        self._clock = config.clock
        # The hot path wants one C-level call for "now"; an injected clock is wrapped.
        self._time_ns = (
            time.time_ns if config.clock is wall_clock_ms else (lambda: config.clock() * 1_000_000)
        )
        self._max_body = config.max_message_size
        self._sync = config.flush_disk_type == SYNC_FLUSH
        self.store_host = encode_host(config.store_host)
        self.born_host = encode_host(config.born_host or config.store_host)
        #: next queue offset per (topic, queue_id), assigned under the append lock
        self.queue_offsets: Dict[Tuple[str, int], int] = {}
        self._current: Optional[MappedFile] = None
        self._closed = False
        #: store time of the last record appended (for the checkpoint)
        self.last_store_timestamp = 0
        #: the store's StoreCheckpoint; flushes covering everything advance its physic time
        self.checkpoint = None
        self._ctx = ffi.new("mq_append_ctx *")
        self._ctx.file_size = self.file_size
        ffi.memmove(self._ctx.born_host, self.born_host, len(self.born_host))
        self._ctx.born_host_len = len(self.born_host)
        ffi.memmove(self._ctx.store_host, self.store_host, len(self.store_host))
        self._ctx.store_host_len = len(self.store_host)
        self.flush_service = None
        #: called (append lock held) after every file roll, failed or not: the store
        #: re-measures disk use there
        self.on_roll = None
        self._reading = threading.local()  # per reader thread: the file it is in

    # -- opening -----------------------------------------------------------------

    def load(self) -> None:
        """Map the existing files (StoreCorruptedError names a foreign or wrong-size one)."""
        self.queue.load()

    def recover(self, from_file: Optional[int] = None, from_offset: Optional[int] = None,
                after_crash: bool = False) -> CommitLogRecovery:
        """Find the end of the log: walk records from file `from_file` (default: the
        third-last file, RocketMQ's normal recovery), or from the record boundary
        `from_offset`, validating each (with CRC when `check_crc_on_recover`), and end
        the log after the last valid record.

        A damaged tail is truncated (reported, never silently dropped); after a crash
        (`after_crash`), so are records that follow zeroed bytes in the same file (a
        lost page), so they cannot come back once new records fill the gap. Files after
        the damage are deleted only when nothing was ever written to them (RocketMQ's
        pre-allocated next file); otherwise StoreCorruptedError, and nothing is deleted.
        """
        report = CommitLogRecovery()
        reason = codec.STOP_END
        flags = codec.SCAN_CHECK_CRC if self.config.check_crc_on_recover else 0
        files = self.queue.files
        first_position = 0
        if from_offset is not None and files:
            from_file = (from_offset - files[0].file_from_offset) // self.file_size
            first_position = from_offset - files[from_file].file_from_offset
        elif from_file is None:
            from_file = max(0, len(files) - 3)
        end = report.start_offset = (files[from_file].file_from_offset + first_position
                                     if files else 0)
        for index in range(from_file, len(files)):
            mapped = files[index]
            position, reason, checked = self._walk_file(
                mapped, flags, first_position if index == from_file else 0)
            report.records_checked += checked
            if reason in (codec.STOP_BLANK, codec.STOP_END):
                end = mapped.file_from_offset + self.file_size
                continue
            end = mapped.file_from_offset + position
            report.stop_reason = codec.STOP_REASONS[reason]
            if codec.is_error(reason):
                log.warning(
                    "CommitLog %s: %s at offset %d; the log ends there",
                    mapped.path,
                    codec.STOP_REASONS[reason],
                    end,
                )
            for later in files[index + 1 :]:
                if codec.scan_one(later.ptr, self.file_size, 0)[1] != codec.STOP_ZERO:
                    raise StoreCorruptedError(
                        f"{mapped.path}: {codec.STOP_REASONS[reason]} at offset {end}, but "
                        f"{later.path} after it holds data; refusing to delete it",
                        path=mapped.path,
                        offset=end,
                    )
            break
        if files:
            holder = self.queue.find_by_offset(end)
            wipe_to = None
            damaged = codec.is_error(reason) or (after_crash and reason == codec.STOP_ZERO)
            if holder is not None and report.stop_reason and damaged and not self.readonly:
                position = end - holder.file_from_offset
                wipe_to = holder.last_nonzero(position)
                report.bytes_truncated = wipe_to - position
            report.files_deleted = self.queue.truncate(end, wipe_to)
        report.end_offset = end
        self.queue.flushed_where = self.queue.committed_where = end
        return report

    def follow(self) -> int:
        """Read-only: take in what a live writer appended since the last look (new
        records in the last file, new files). Returns the new end offset."""
        queue = self.queue
        queue.forget_deleted_head()  # the writer's cleanup deleted them
        end = queue.max_offset()
        queue.map_new_files()
        mapped = queue.find_by_offset(end)
        while mapped is not None:
            position, reason, _checked = self._walk_file(mapped, 0, end - mapped.file_from_offset)
            if reason in (codec.STOP_BLANK, codec.STOP_END):
                mapped.set_positions(self.file_size)
                end = mapped.file_from_offset + self.file_size
                mapped = queue.find_by_offset(end)
                continue
            mapped.set_positions(position)  # a record still being written stops the walk
            break
        files = queue.files
        while len(files) > 1 and files[-1].wrote_position == 0 and not files[-2].is_full():
            files.pop().shutdown()  # the writer's pre-allocated next file: not yet data
        return queue.max_offset()

    def _walk_file(self, mapped: MappedFile, flags: int, position: int = 0) -> Tuple[int, int, int]:
        """(stop position, stop reason, records checked) of a walk through one file."""
        checked = 0
        out = ffi.new("int64_t[]", _SCAN_CHUNK * codec.FIELDS + 2)
        stop = out + _SCAN_CHUNK * codec.FIELDS
        while True:
            checked += lib.mq_scan(
                mapped.ptr, self.file_size, position, _SCAN_CHUNK, flags, out, stop
            )
            position = stop[0]
            if stop[1] != codec.STOP_LIMIT:
                return position, stop[1], checked

    def start(self) -> None:
        """Start the flush service of the configured flush_disk_type."""
        if self.readonly:
            return
        last = self.queue.last_file()
        self._set_current(last if last is not None and not last.is_full() else None)
        if self._sync:
            self.flush_service = GroupCommitService(self, self.config)
        else:
            self.flush_service = FlushService(self, self.config)

    # -- appending ---------------------------------------------------------------

    def _roll(self) -> MappedFile:
        """Close the current file with a blank record and open the next (append lock held)."""
        current = self._current
        if current is not None and current.wrote_position < self.file_size:
            lib.mq_write_blank(current.ptr, current.wrote_position, self.file_size)
            current.wrote_position = self.file_size
        start = current.file_from_offset + self.file_size if current else self.queue.max_offset()
        try:
            mapped = self.queue.next_file(start)
        finally:
            if self.on_roll is not None:
                self.on_roll()
        self._set_current(mapped)
        return mapped

    def _set_current(self, mapped: Optional[MappedFile]) -> None:
        self._current = mapped
        if mapped is not None:
            self._ctx.base = mapped.ptr
            self._ctx.file_from_offset = mapped.file_from_offset

    def forget_queues(self, keys) -> None:
        """Drop the next-offset counters of deleted queues (they restart at 0)."""
        with self._lock:
            for key in keys:
                self.queue_offsets.pop(key, None)

    def append(
        self,
        topic: str,
        topic_bytes: bytes,
        queue_id: int,
        body,
        body_len: int,
        props: bytes,
        flag: int,
        sys_flag: int,
        born_timestamp: Optional[int],
        reconsume_times: int,
        prepared_offset: int,
        hosts: Optional[Tuple[Optional[bytes], Optional[bytes]]] = None,
        wait_flush: bool = True,
    ) -> PutResult:
        """Append one validated record; PutResult with PUT_OK, FLUSH_DISK_TIMEOUT (the
        record exists) or a failure status (nothing written). `hosts` overrides the
        (born, store) host bytes of the config."""
        queued = not sys_flag & _NOT_QUEUED_BIT
        key = (topic, queue_id)
        with self._lock:
            if self._closed:
                raise StoreClosedError("the CommitLog is closed")
            now = self._time_ns() // 1_000_000
            queue_offset = self.queue_offsets.get(key, 0) if queued else 0
            mapped = self._current
            size = 0
            if mapped is not None and hosts is None:
                position = mapped.wrote_position
                size = _append(
                    self._ctx,
                    position,
                    body,
                    body_len,
                    topic_bytes,
                    len(topic_bytes),
                    props,
                    len(props),
                    queue_id,
                    flag,
                    queue_offset,
                    sys_flag,
                    now if born_timestamp is None else born_timestamp,
                    now,
                    reconsume_times,
                    prepared_offset,
                )
            if size > 0:
                store_host = self.store_host
            else:
                outcome = self._append_slow(
                    topic_bytes,
                    queue_id,
                    body,
                    body_len,
                    props,
                    flag,
                    sys_flag,
                    now if born_timestamp is None else born_timestamp,
                    now,
                    reconsume_times,
                    prepared_offset,
                    hosts,
                    queue_offset,
                )
                if outcome.__class__ is PutResult:
                    return outcome
                mapped, position, size, store_host = outcome
            mapped.wrote_position = position + size
            self.last_store_timestamp = now
            if queued:
                self.queue_offsets[key] = queue_offset + 1
        offset = mapped.file_from_offset + position
        status = PUT_OK
        if self._sync and wait_flush and not self.flush_service.wait_for_flush(offset + size):
            status = PutStatus.FLUSH_DISK_TIMEOUT
        return _tuple_new(
            PutResult, (status, offset, queue_id, queue_offset, now, size, store_host, None)
        )

    def _append_slow(
        self,
        topic_bytes,
        queue_id,
        body,
        body_len,
        props,
        flag,
        sys_flag,
        born_timestamp,
        now,
        reconsume_times,
        prepared_offset,
        hosts,
        queue_offset,
    ):
        """The rare cases of `append`: no current file, a full file (blank record, roll
        and retry), explicit hosts, and records that can never fit."""
        born_host, store_host = hosts or (None, None)
        born_host = born_host or self.born_host
        store_host = store_host or self.store_host

        def encode(mapped: MappedFile, position: int) -> int:
            return lib.mq_encode_record(
                mapped.ptr, position, self.file_size, mapped.file_from_offset + position,
                body, body_len, topic_bytes, len(topic_bytes), props, len(props), queue_id,
                flag, queue_offset, sys_flag, born_timestamp, born_host, len(born_host), now,
                store_host, len(store_host), reconsume_times, prepared_offset,
            )

        try:
            mapped, position, size = self._place(encode)
        except DiskFullError as exc:
            return PutResult.failed(PutStatus.CREATE_MAPPED_FILE_FAILED, str(exc), queue_id)
        if size > 0:
            return mapped, position, size, store_host
        return PutResult.failed(PutStatus.MESSAGE_ILLEGAL, self._refusal("record", size), queue_id)

    def _place(self, encode) -> Tuple[Optional[MappedFile], int, int]:
        """Run `encode(mapped, position)` at the end of the current file; when it does
        not fit, close the file with RocketMQ's blank record and run it again at the
        start of the next one. Returns (file, position, size or an ENC_* code).
        Raises DiskFullError when the next file cannot be created."""
        mapped = self._current
        size = codec.ENC_NOSPACE
        for _attempt in range(2):
            if mapped is None:
                mapped = self._roll()
            position = mapped.wrote_position
            size = encode(mapped, position)
            if size != codec.ENC_NOSPACE:
                return mapped, position, size
            lib.mq_write_blank(mapped.ptr, position, self.file_size)
            mapped.wrote_position = self.file_size
            mapped = None
        return None, 0, size

    def _refusal(self, what: str, code: int) -> str:
        if code == codec.ENC_TOOBIG:
            return f"{what} does not fit in a CommitLog file of {self.file_size} bytes"
        return "invalid record lengths"

    def append_batch(
        self,
        topic: str,
        topic_bytes: bytes,
        queue_id: int,
        bodies: bytes,
        body_lens: array,
        props: bytes,
        props_lens: array,
        flags: array,
        sys_flag: int,
        born_timestamp: Optional[int],
        reconsume_times: int,
    ) -> PutBatchResult:
        """Append a validated batch of one topic and queue atomically: every record is
        written before the wrote position moves, and the whole batch goes to the next
        file when it does not fit in this one."""
        count = len(body_lens)
        sizes = array("i", bytes(4 * count))
        born_host = self.born_host
        store_host = self.store_host
        key = (topic, queue_id)
        c_bodies = ffi.from_buffer(bodies)
        c_props = ffi.from_buffer(props)
        c_body_lens = ffi.from_buffer("int32_t[]", body_lens)
        c_props_lens = ffi.from_buffer("int32_t[]", props_lens)
        c_flags = ffi.from_buffer("int32_t[]", flags)
        c_sizes = ffi.from_buffer("int32_t[]", sizes, require_writable=True)
        with self._lock:
            if self._closed:
                raise StoreClosedError("the CommitLog is closed")
            now = self._time_ns() // 1_000_000
            first_queue_offset = self.queue_offsets.get(key, 0)
            born = now if born_timestamp is None else born_timestamp

            def encode(mapped: MappedFile, position: int) -> int:
                return lib.mq_encode_batch(
                    mapped.ptr, position, self.file_size, mapped.file_from_offset + position,
                    count, c_bodies, c_body_lens, c_props, c_props_lens, c_flags,
                    topic_bytes, len(topic_bytes), queue_id, first_queue_offset, sys_flag,
                    born, born_host, len(born_host), now, store_host, len(store_host),
                    reconsume_times, c_sizes,
                )

            try:
                mapped, position, total = self._place(encode)
            except DiskFullError as exc:
                return PutBatchResult(PutStatus.CREATE_MAPPED_FILE_FAILED, error=str(exc))
            if total <= 0:
                return PutBatchResult(PutStatus.MESSAGE_ILLEGAL,
                                      error=self._refusal("batch", total))
            mapped.wrote_position = position + total
            self.last_store_timestamp = now
            self.queue_offsets[key] = first_queue_offset + count
        start = mapped.file_from_offset + position
        status = PutStatus.PUT_OK
        if self._sync and not self.flush_service.wait_for_flush(
            mapped.file_from_offset + position + total
        ):
            status = PutStatus.FLUSH_DISK_TIMEOUT
        return PutBatchResult(status, queue_id, first_queue_offset, now, start, sizes, store_host)

    # -- reading -----------------------------------------------------------------

    def min_offset(self) -> int:
        return self.queue.min_offset()

    def max_offset(self) -> int:
        """One past the last visible byte of the log."""
        return self.queue.max_offset()

    def get_message(self, offset: int, check_crc: bool = False) -> Optional[MessageExt]:
        """The record starting at `offset`, or None when no whole record is there.
        Raises RecordError when the bytes at `offset` are not a valid record."""
        mapped = self.queue.find_by_offset(offset)
        if mapped is None or not mapped.hold():
            return None
        try:
            position = offset - mapped.file_from_offset
            readable = mapped.wrote_position
            if position >= readable:
                return None
            flags = codec.SCAN_CHECK_CRC if check_crc else 0
            fields, reason = codec.scan_one(mapped.ptr, readable, position, flags)
            if reason:
                if reason in (codec.STOP_BLANK, codec.STOP_ZERO, codec.STOP_END):
                    return None
                raise RecordError(codec.STOP_REASONS[reason], offset, mapped.path)
            return MessageExt._from_fields(mapped.ptr, fields)
        finally:
            mapped.release()

    def note_read(self, mapped: MappedFile) -> None:
        """A sequential reader (dispatcher, get, iteration) is in `mapped` now. When
        this thread has moved on from an older file the writer is done with, that
        file's pages are let go (they stay in the page cache), so reading or writing
        the whole log keeps the process's resident memory at about one file per
        reader, not the size of the store. The dispatcher reads everything written,
        so this covers the writer's pages too."""
        reading = self._reading
        previous = getattr(reading, "mapped", None)
        if previous is mapped:
            return
        reading.mapped = mapped
        if previous is None or previous.file_from_offset >= mapped.file_from_offset:
            return
        files = self.queue.files
        if files and previous.file_from_offset < files[-1].file_from_offset:
            previous.drop_resident()  # not the writer's file: it rolled past it

    def walk(self, from_offset: int, read: Callable) -> Iterator:
        """Chunks of records from `from_offset` to the current end, in CommitLog order.

        For each chunk, `read(mapped, position, readable)` runs while the file is held
        and returns (item, stop_pos, stop_reason) from a scan at `position`; `item` is
        yielded (after the file is released) unless it is None. The walk moves past
        blank records to the next file, follows a writer that appended meanwhile, and
        raises RecordError at a damaged record."""
        offset = from_offset
        while True:
            mapped = self.queue.find_by_offset(offset)
            if mapped is None or not mapped.hold():
                return
            try:
                self.note_read(mapped)
                position = offset - mapped.file_from_offset
                readable = mapped.wrote_position  # what this scan may see, fixed now
                item, stop_pos, reason = read(mapped, position, readable)
            finally:
                mapped.release()
            if item is not None:
                yield item
            offset = mapped.file_from_offset + stop_pos
            if reason == codec.STOP_LIMIT:
                continue
            if reason == codec.STOP_BLANK or (
                reason == codec.STOP_END and readable >= self.file_size
            ):
                offset = mapped.file_from_offset + self.file_size
                continue
            if codec.is_error(reason):
                raise RecordError(codec.STOP_REASONS[reason], offset, mapped.path)
            if mapped.wrote_position > readable:
                continue  # the writer appended while we were yielding: read on
            return

    def iter_messages(
        self, from_offset: Optional[int] = None, check_crc: bool = False
    ) -> Iterator[MessageExt]:
        """Every record from `from_offset` (default: the first) to the current end, in
        CommitLog order. Raises RecordError at a damaged record."""
        flags = codec.SCAN_CHECK_CRC if check_crc else 0

        def read(mapped, position, readable):
            result = codec.scan(mapped.ptr, readable, position, 256, flags)
            messages = [
                MessageExt._from_fields(mapped.ptr, result.fields, i)
                for i in range(result.count)
            ]
            return messages, result.stop_pos, result.stop_reason

        start = self.min_offset() if from_offset is None else from_offset
        for messages in self.walk(start, read):
            yield from messages

    # -- flushing and closing ----------------------------------------------------

    def flush(self) -> int:
        """Flush everything written; returns the flushed offset. When that covered the
        whole log, the checkpoint's physic time moves to the last record's store time."""
        stamp = self.last_store_timestamp
        target = self.queue.max_offset()
        self.queue.flush_all()
        checkpoint = self.checkpoint
        covered = self.queue.flushed_where >= target
        if checkpoint is not None and covered and stamp > checkpoint.physic_msg_timestamp:
            checkpoint.physic_msg_timestamp = stamp
        return self.queue.flushed_where

    def refuse_appends(self) -> None:
        """Refuse appends that have not started (no lock: safe from a signal handler
        that interrupted an append, which finishes)."""
        self._closed = True

    def stop_appends(self) -> None:
        """Refuse appends from now on (StoreClosedError); one in progress finishes."""
        with self._lock:
            self._closed = True

    def shutdown(self) -> None:
        """Stop the services, flush everything and unmap the files."""
        if self.flush_service is not None:
            self.flush_service.shutdown()
        if self._allocator is not None:
            self._allocator.shutdown()
        with self._lock:
            self._closed = True
        if not self.readonly:
            with self._lock:
                self.flush()
                self._current = None
                self._ctx.base = ffi.NULL
        self.queue.shutdown()
