"""MessageStore: the public face of the store, a thin coordinator over the CommitLog
(and, as they arrive, the ConsumeQueues, the index and recovery)."""

from __future__ import annotations

import atexit
import itertools
import logging
import operator
import os
import shutil
import signal
import sys
import threading
import weakref
from array import array
from typing import Dict, Iterable, Iterator, List, Optional, Tuple

from . import codec
from ._native import ffi
from .checkpoint import AbortFile, StoreCheckpoint
from .cleanup import DISK_CHECK_INTERVAL_MS, CleanupResult, RetentionService, Scheduler
from .commitlog import CommitLog
from .config import SYNC_FLUSH, StoreConfig
from .consumequeue import ConsumeQueue, FlushConsumeQueueService
from .dispatch import Dispatcher
from .errors import MQStoreError, StoreClosedError
from .index import IndexService
from .lockfile import StoreLock
from .message import (
    PROPERTY_DELAY_TIME_LEVEL,
    PROPERTY_REAL_QUEUE_ID,
    PROPERTY_REAL_TOPIC,
    PROPERTY_WAIT_STORE_MSG_OK,
    SCHEDULE_TOPIC,
    Message,
    MessageExt,
    decode_msg_id,
    encode_host,
    encode_properties,
)
from .offsets import ConsumerOffsetManager
from .reader import parse_tags, read_queue
from .recovery import RecoveryReport, abnormal_start_file
from .results import GetResult, PutBatchResult, PutResult, PutStatus
from .schedule import ScheduleService
from .stats import SAMPLE_INTERVAL_MS, StatsCollector, StoreStats
from .topics import (
    MAX_TOPIC_LENGTH,
    PERM_READ_WRITE,
    TOPIC_PATTERN,
    TopicConfig,
    TopicManager,
    check_queue_nums,
    is_system_topic,
    topic_error,
)
from .transaction import TransactionService

log = logging.getLogger(__name__)

_QUEUE_ID_MAX = 2**31 - 1
_BATCH_FIELDS = operator.attrgetter("topic", "body", "_properties", "flag", "sys_flag")
_DELAY_KEY = PROPERTY_DELAY_TIME_LEVEL.encode() + b"\x01"


# Writable stores still open at interpreter exit are closed cleanly (checkpoint written,
# abort file removed) before daemon threads stop.
_open_stores: weakref.WeakSet[MessageStore] = weakref.WeakSet()


@atexit.register
def _close_open_stores() -> None:
    for store in list(_open_stores):
        try:
            store.close()
        except Exception:  # exiting anyway; say why
            log.exception("closing %s at exit failed", store.path)


_PACKAGE_PREFIX = os.path.dirname(os.path.abspath(__file__)) + os.sep


def _handler_code(handler):
    """The code object a Python signal handler runs (None for SIG_DFL and the like)."""
    while hasattr(handler, "func"):  # functools.partial
        handler = handler.func
    handler = getattr(handler, "__func__", handler)  # bound methods
    code = getattr(handler, "__code__", None)
    if code is None and callable(handler):  # an object with __call__
        code = getattr(type(handler).__call__, "__code__", None)
    return code


def _interrupted_store_call() -> bool:
    """True when the calling code runs in a Python signal handler that interrupted
    mqstore code on this thread. That code may hold the store's locks or be writing to
    a mapped file, so a close() from there must not wait for locks or unmap anything."""
    if threading.current_thread() is not threading.main_thread():
        return False  # Python runs signal handlers on the main thread only
    handlers = set()
    for signum in signal.valid_signals():
        try:
            code = _handler_code(signal.getsignal(signum))
        except (OSError, ValueError):
            continue
        if code is not None:
            handlers.add(code)
    frame = sys._getframe(1)
    while frame is not None and frame.f_code not in handlers:
        frame = frame.f_back
    if frame is None:
        return False
    frame = frame.f_back  # the interrupted frame, then its callers
    while frame is not None:
        if frame.f_code.co_filename.startswith(_PACKAGE_PREFIX):
            return True
        frame = frame.f_back
    return False


def _body_view(body) -> memoryview:
    """A contiguous byte view of a non-bytes body; TypeError for anything else."""
    try:
        view = memoryview(body)
    except TypeError:
        raise TypeError(f"body must be bytes-like, got {type(body).__name__}") from None
    if not view.c_contiguous:
        raise TypeError("body must be a C-contiguous buffer (copy it with bytes(body))")
    return view.cast("B") if view.format != "B" or view.ndim != 1 else view


class MessageStore:
    """A RocketMQ-format message store in one directory.

    ``MessageStore(path, config=None, **overrides)`` opens (creating if needed) the
    store at `path`; keyword overrides replace fields of `config` (a StoreConfig).
    Raises ValueError for a bad setting, MQStoreError when `path` is a file or not
    writable, StoreLockedError when another store holds the directory,
    StoreCorruptedError when a store file is damaged beyond what opening repairs.

    Use it as a context manager, or call `close()` (idempotent).
    """

    def __init__(
        self, path, config: Optional[StoreConfig] = None, *, _readonly: bool = False, **overrides
    ) -> None:
        if config is None:
            config = StoreConfig(**overrides)
        elif overrides:
            config = config.replace(**overrides)
        elif not isinstance(config, StoreConfig):
            raise TypeError(f"config must be a StoreConfig, got {type(config).__name__}")
        self.path = os.fspath(path)
        self.config = config
        self.readonly = _readonly
        self._closed = True
        self._close_claims = itertools.count()  # next() is atomic: the first caller closes
        self._close_done = threading.Event()
        self._topic_bytes: Dict[str, bytes] = {}
        self._lock: Optional[StoreLock] = None
        self._prepare_directory()
        if not _readonly:
            self._lock = StoreLock(self.path)
            self._lock.acquire()
        self._consume_queues: Dict[Tuple[str, int], ConsumeQueue] = {}
        self._cq_lock = threading.RLock()  # re-entrant so close() can tell it is held
        #: ConsumeQueue units skipped by `get` because they point at no valid record
        self.damaged_units = 0
        self.commitlog: Optional[CommitLog] = None
        self.index: Optional[IndexService] = None
        self.dispatcher: Optional[Dispatcher] = None
        self._abort: Optional[AbortFile] = None
        self._cq_flush: Optional[FlushConsumeQueueService] = None
        #: Delivers delayed messages (writable stores only).
        self.schedule: Optional[ScheduleService] = None
        #: Transactions' half messages and check-backs (writable stores only).
        self.transactions: Optional[TransactionService] = None
        self.in_memory = False
        self._scheduler: Optional[Scheduler] = None  # retention and statistics
        self._retention: Optional[RetentionService] = None
        self._stats: Optional[StatsCollector] = None
        self._get_calls = self._get_messages = self._put_refused = 0
        try:
            self._open()
        except BaseException:
            self._shutdown_parts()
            if self._lock is not None:
                self._lock.release()
            raise
        self._closed = False
        if not _readonly:
            try:
                self._start_services()
            except BaseException:
                self.close()
                raise

    def _start_services(self) -> None:
        """Start the services that read and write through the open store."""
        self.schedule = ScheduleService(self)
        self.transactions = TransactionService(self)
        if self.config.schedule_delivery_enable:
            self.schedule.start()
        if self.config.transaction_check_enable:
            self.transactions.start()

    def _open(self) -> None:
        config = self.config
        readonly = self.readonly
        self._abort = AbortFile(self.path)
        self.topic_manager = TopicManager(self.path, readonly, config.clock)
        self.consumer_offsets = ConsumerOffsetManager(
            self.path, readonly, fsync=config.flush_disk_type == SYNC_FLUSH
        )
        self.checkpoint = StoreCheckpoint(os.path.join(self.path, "checkpoint"), readonly)
        report = self.recovery = RecoveryReport(abnormal=self._abort.exists())
        self.commitlog = CommitLog(self.path, config, readonly=readonly)
        self.commitlog.checkpoint = self.checkpoint
        self.commitlog.load()
        # A read-only store of a directory without ConsumeQueues (a copied CommitLog)
        # rebuilds queues and index in anonymous memory; it still writes nothing.
        self.in_memory = readonly and not os.path.isdir(os.path.join(self.path, "consumequeue"))
        if not self.in_memory:  # decided once: a writer may create the directory meanwhile
            self._load_consume_queues()
        if config.message_index_enable:
            self.index = IndexService(self.path, config.max_hash_slot_num, config.max_index_num,
                                      config.clock, self.checkpoint,
                                      readonly=readonly and not self.in_memory,
                                      in_memory=self.in_memory)
            self.index.load()
            if report.abnormal and not readonly:
                # RocketMQ drops index files written after the checkpoint's index time
                # (and rebuilds them by re-dispatching; a read-only store cannot).
                report.index_files_dropped = self.index.delete_newer_than(
                    self.checkpoint.index_msg_timestamp)
        for queue in self._consume_queues.values():
            queue.recover()
        max_cq_end = max((q.max_physic_offset for q in self._consume_queues.values()), default=-1)
        start_file = start_offset = None
        if report.abnormal and self.commitlog.queue.files:
            start_file = abnormal_start_file(self.commitlog, self.checkpoint.min_timestamp())
        elif self.commitlog.queue.files:
            start_offset = self._clean_end_hint(max_cq_end)
        walk = self.commitlog.recover(start_file, start_offset, after_crash=report.abnormal)
        report.start_offset = walk.start_offset
        report.end_offset, report.records_checked = walk.end_offset, walk.records_checked
        report.bytes_truncated, report.files_deleted = walk.bytes_truncated, walk.files_deleted
        report.stop_reason = walk.stop_reason
        end = walk.end_offset
        if not self.commitlog.queue.files and not readonly:
            for queue in self._consume_queues.values():
                queue.destroy()
        elif max_cq_end >= end:
            for queue in self._consume_queues.values():
                if queue.truncate_to_commitlog(end):
                    report.queues_truncated += 1
        self.dispatcher = Dispatcher(self.commitlog, self.consume_queue, self.index,
                                     config.delay_levels_ms,
                                     flushed_only=config.flush_disk_type == SYNC_FLUSH)
        max_cq_end = max((q.max_physic_offset for q in self._consume_queues.values()), default=-1)
        reput_from = max(max_cq_end, self.commitlog.min_offset())
        if report.abnormal:
            # Re-dispatch everything from the recovery start; queues and index skip
            # what they already hold and fill what a crash took from them.
            reput_from = min(reput_from, walk.start_offset)
        self.dispatcher.reput_from_offset = reput_from
        if not readonly:
            self._catch_up(report)
        elif self.in_memory:
            before = self.dispatcher.dispatched_records
            self.dispatcher.catch_up()
            report.records_dispatched = self.dispatcher.dispatched_records - before
        min_offset = self.commitlog.min_offset()
        for (topic, queue_id), queue in self._consume_queues.items():
            self.commitlog.queue_offsets[(topic, queue_id)] = queue.max_offset()
            queue.correct_min_offset(min_offset)
        if report.changed_anything or report.abnormal:
            log.warning("%s: %s", self.path, report.summary())
        else:
            log.info("%s: %s", self.path, report.summary())
        self.commitlog.start()
        self._append = self._refuse_write if readonly else self.commitlog.append
        self._max_body = config.max_message_size
        if not readonly:
            self._abort.create()
            _open_stores.add(self)
            self.dispatcher.start()
            self._cq_flush = FlushConsumeQueueService(
                self._consume_queues_snapshot, config,
                lambda: self.dispatcher.last_dispatched_timestamp, self._save_logics_checkpoint)
        self._start_retention()

    def _clean_end_hint(self, max_cq_end: int) -> Optional[int]:
        """After a clean shutdown every record up to the largest ConsumeQueue end was
        dispatched (close removes the abort file only then), so the walk may start
        there instead of re-reading the last three files: opening then costs a few
        milliseconds, not a pass over up to 3 GiB. The hint is used only when the
        record that ends there is intact (CRC included); otherwise, None: the normal
        walk from the third-last file."""
        if max_cq_end <= 0:
            return None
        queue = max(self._consume_queues.values(), key=lambda q: q.max_physic_offset)
        last = queue.last_unit()
        if last is None or last[0] + last[1] != max_cq_end:
            return None
        mapped = self.commitlog.queue.find_by_offset(last[0])
        if mapped is None or mapped.file_from_offset > max_cq_end:
            return None
        fields, reason = codec.scan_one(mapped.ptr, self.commitlog.file_size,
                                        last[0] - mapped.file_from_offset, codec.SCAN_CHECK_CRC)
        if reason or fields[codec.F_TOTAL_SIZE] != last[1]:
            return None
        files = self.commitlog.queue.files
        if len(files) >= 3 and mapped.file_from_offset < files[-3].file_from_offset:
            return None  # the hint points further back than a normal walk would start
        return max_cq_end

    def _catch_up(self, report: RecoveryReport) -> None:
        """Dispatch what the queues and index lack, saving progress in the checkpoint
        at every CommitLog file boundary, so a process killed while recovering a
        large log resumes near where it stopped instead of starting over."""
        dispatcher = self.dispatcher
        before = dispatcher.dispatched_records
        file_size = self.commitlog.file_size
        current_file = dispatcher.reput_from_offset // file_size
        while dispatcher.do_reput():
            if dispatcher.reput_from_offset // file_size != current_file:
                current_file = dispatcher.reput_from_offset // file_size
                if report.abnormal:
                    self._save_progress()
        report.records_dispatched = dispatcher.dispatched_records - before

    def _save_progress(self) -> None:
        """Flush CommitLog, queues and index, then record how far that covers."""
        self.commitlog.flush()
        for queue in self._consume_queues_snapshot():
            queue.flush_all()
        if self.index is not None:
            self.index.flush()
        stamp = self.dispatcher.last_dispatched_timestamp
        if stamp > 0:
            self.checkpoint.physic_msg_timestamp = max(self.checkpoint.physic_msg_timestamp, stamp)
            self.checkpoint.logics_msg_timestamp = stamp
            self.checkpoint.flush()

    def _save_logics_checkpoint(self, dispatched_timestamp: int) -> None:
        """After a full ConsumeQueue flush: record how far dispatch is on disk."""
        if dispatched_timestamp > 0:
            self.checkpoint.logics_msg_timestamp = dispatched_timestamp
        self.checkpoint.flush()

    def _load_consume_queues(self, skip=frozenset()) -> None:
        root = os.path.join(self.path, "consumequeue")
        if not os.path.isdir(root):
            return
        for topic in sorted(os.listdir(root)):
            topic_dir = os.path.join(root, topic)
            if not os.path.isdir(topic_dir):
                continue
            for name in sorted(os.listdir(topic_dir)):
                if not (name.isascii() and name.isdigit()) or not os.path.isdir(
                    os.path.join(topic_dir, name)
                ):
                    continue  # RocketMQ ignores queue directories that are not numbers
                if (topic, int(name)) in skip:
                    continue
                queue = ConsumeQueue(
                    self.path,
                    topic,
                    int(name),
                    self.config.mapped_file_size_consume_queue,
                    self.readonly,
                )
                queue.load()
                self._consume_queues[(topic, int(name))] = queue

    def consume_queue(self, topic: str, queue_id: int) -> ConsumeQueue:
        """The ConsumeQueue of (topic, queue_id), created (empty, no files) if new."""
        queue = self._consume_queues.get((topic, queue_id))
        if queue is None:
            with self._cq_lock:
                queue = self._consume_queues.get((topic, queue_id))
                if queue is None:
                    queue = ConsumeQueue(
                        self.path,
                        topic,
                        queue_id,
                        self.config.mapped_file_size_consume_queue,
                        self.readonly and not self.in_memory,
                        in_memory=self.in_memory,
                    )
                    self._consume_queues[(topic, queue_id)] = queue
        return queue

    def note_damaged_unit(self, topic: str, queue_id: int, queue_offset: int, why: str) -> None:
        """Count and log a ConsumeQueue unit that cannot be served (a damaged file)."""
        self.damaged_units += 1
        log.warning("ConsumeQueue %s/%d: unit %d skipped: %s", topic, queue_id, queue_offset, why)

    def _consume_queues_snapshot(self) -> List[ConsumeQueue]:
        with self._cq_lock:
            return list(self._consume_queues.values())

    @classmethod
    def open_readonly(cls, path, config: Optional[StoreConfig] = None, **overrides) -> MessageStore:
        """Open a store (also one a RocketMQ broker wrote) for reading only: no lock, no
        writes, nothing truncated or deleted on disk."""
        if not os.path.isdir(path):
            raise MQStoreError(f"{path}: no such store directory")
        return cls(path, config, _readonly=True, **overrides)

    def _prepare_directory(self) -> None:
        path = self.path
        if os.path.exists(path) and not os.path.isdir(path):
            raise MQStoreError(f"store path {path} exists and is not a directory")
        if self.readonly:
            return
        try:
            os.makedirs(os.path.join(path, "commitlog"), exist_ok=True)
        except OSError as exc:
            raise MQStoreError(f"cannot create store directory {path}: {exc.strerror}") from exc
        if not os.access(path, os.W_OK | os.X_OK):
            raise MQStoreError(f"store directory {path} is not writable")

    # -- validation --------------------------------------------------------------

    def _topic_to_bytes(self, topic: str) -> Optional[bytes]:
        """UTF-8 of a legal topic (cached), None when the topic is illegal."""
        encoded = self._topic_bytes.get(topic)
        if encoded is None:
            if len(topic) > MAX_TOPIC_LENGTH or not TOPIC_PATTERN.fullmatch(topic):
                return None
            encoded = self._topic_bytes[topic] = topic.encode("ascii")
        return encoded

    @staticmethod
    def _topic_error(topic: str) -> str:
        if not topic:
            return "topic is empty"
        if len(topic) > MAX_TOPIC_LENGTH:
            return f"topic is {len(topic)} characters, more than {MAX_TOPIC_LENGTH}"
        return f"topic {topic!r} has characters outside [%|a-zA-Z0-9_-]"

    def _check_open(self) -> None:
        if self._closed:
            raise StoreClosedError(f"store {self.path} is closed")
        if self.readonly:
            raise MQStoreError(f"store {self.path} is open read-only")

    # -- writing -----------------------------------------------------------------

    def put(self, msg: Message, queue_id: int = 0) -> PutResult:
        """Append one message to `queue_id` of its topic.

        Returns a PutResult: PUT_OK (in SYNC_FLUSH only once on disk),
        FLUSH_DISK_TIMEOUT (written, not confirmed on disk in time), MESSAGE_ILLEGAL
        (illegal topic, body over `max_message_size`), PROPERTIES_SIZE_EXCEEDED, or
        CREATE_MAPPED_FILE_FAILED (disk full); a failed put writes nothing.
        Raises TypeError when `msg` is not a Message or `queue_id` not an int,
        ValueError for a negative queue id, StoreClosedError after close().

        A Message with a delay level is stored in SCHEDULE_TOPIC_XXXX (queue
        level - 1) with its real topic and queue in REAL_TOPIC / REAL_QID, as RocketMQ
        does. A MessageExt (a record read back from a store) is stored as it is:
        same properties string, no delay rewrite; only offsets and store time are new.
        """
        if self._closed:
            self._check_open()
        if msg.__class__ is not Message and not isinstance(msg, Message):
            raise TypeError(f"put takes a Message, got {type(msg).__name__}")
        if queue_id.__class__ is not int or not 0 <= queue_id <= _QUEUE_ID_MAX:
            queue_id = self._check_queue_id(queue_id)
        topic = msg.topic
        topic_bytes = self._topic_bytes.get(topic) or self._topic_to_bytes(topic)
        if topic_bytes is None:
            return PutResult.failed(PutStatus.MESSAGE_ILLEGAL, self._topic_error(topic), queue_id)
        body = msg.body
        if body.__class__ is bytes:
            body_len = len(body)
        else:
            view = _body_view(body)
            body_len = view.nbytes
            body = ffi.from_buffer(view)
        if body_len > self._max_body:
            return PutResult.failed(
                PutStatus.MESSAGE_ILLEGAL,
                f"body is {body_len} bytes, more than max_message_size {self._max_body}",
                queue_id,
            )
        props = msg.encoded_properties()
        sys_flag = msg.sys_flag
        hosts = None
        wait = True
        if msg.__class__ is not Message:
            if isinstance(msg, MessageExt):
                # A stored record put again (replay, migration, delivery of a delayed
                # message): kept as it is, its properties string byte for byte.
                hosts = (msg._born_host_raw, msg._store_host_raw)
            elif msg.born_host or msg.store_host:
                hosts = self._hosts(msg)
        elif msg.born_host or msg.store_host:
            hosts = self._hosts(msg)
        if props:
            if len(props) > codec.MAX_PROPERTIES_BYTES:
                return PutResult.failed(
                    PutStatus.PROPERTIES_SIZE_EXCEEDED,
                    f"properties are {len(props)} bytes, more than {codec.MAX_PROPERTIES_BYTES}",
                    queue_id,
                )
            properties = msg._props()
            if (
                PROPERTY_DELAY_TIME_LEVEL in properties
                and not isinstance(msg, MessageExt)
                and msg.delay_level > 0
                and not sys_flag & codec.TRANSACTION_PREPARED_TYPE
            ):
                topic, queue_id, props = self._schedule(msg, topic, queue_id)
                topic_bytes = self._topic_to_bytes(topic)
                if len(props) > codec.MAX_PROPERTIES_BYTES:
                    return PutResult.failed(
                        PutStatus.PROPERTIES_SIZE_EXCEEDED,
                        f"properties are {len(props)} bytes with REAL_TOPIC/REAL_QID, more "
                        f"than {codec.MAX_PROPERTIES_BYTES}",
                        queue_id,
                    )
            wait = properties.get(PROPERTY_WAIT_STORE_MSG_OK) != "false"
        result = self._append(
            topic,
            topic_bytes,
            queue_id,
            body,
            body_len,
            props,
            msg.flag,
            sys_flag,
            msg.born_timestamp,
            msg.reconsume_times,
            msg.prepared_transaction_offset,
            hosts,
            wait,
        )
        dispatcher = self.dispatcher
        if dispatcher.idle:
            dispatcher.notify_appended()
        return result

    def _refuse_write(self, *args) -> PutResult:
        raise MQStoreError(f"store {self.path} is open read-only")

    @staticmethod
    def _hosts(msg: Message):
        return (
            encode_host(msg.born_host) if msg.born_host else None,
            encode_host(msg.store_host) if msg.store_host else None,
        )

    @staticmethod
    def _check_queue_id(queue_id) -> int:
        if type(queue_id) is not int:
            raise TypeError(f"queue_id must be an int, got {type(queue_id).__name__}")
        raise ValueError(f"queue_id {queue_id} is negative or larger than {_QUEUE_ID_MAX}")

    def _schedule(self, msg: Message, topic: str, queue_id: int):
        """RocketMQ's put-time rewrite of a delayed message (level clamped to the table)."""
        levels = len(self.config.delay_levels_ms)
        level = min(msg.delay_level, levels)
        properties = dict(msg.properties)
        properties[PROPERTY_REAL_TOPIC] = topic
        properties[PROPERTY_REAL_QUEUE_ID] = str(queue_id)
        return SCHEDULE_TOPIC, level - 1, encode_properties(properties)

    def put_batch(self, msgs: Iterable[Message], queue_id: int = 0) -> PutBatchResult:
        """Append messages of one topic to `queue_id`, atomically: all become visible
        together, or none is written. Returns a PutBatchResult (a sequence of one
        PutResult per message) with one status for the batch; MESSAGE_ILLEGAL when any
        message is illegal, has a delay level or a transaction type, or the batch
        exceeds `max_message_size` in total (RocketMQ's batch rules).
        Raises TypeError / ValueError as `put` does, and ValueError for an empty batch
        or mixed topics.
        """
        if self._closed or self.readonly:
            self._check_open()
        msgs = list(msgs)
        if not msgs:
            raise ValueError("put_batch needs at least one message")
        if queue_id.__class__ is not int or not 0 <= queue_id <= _QUEUE_ID_MAX:
            queue_id = self._check_queue_id(queue_id)
        for msg in msgs:
            if msg.__class__ is not Message and not isinstance(msg, Message):
                raise TypeError(f"put_batch takes Messages, got {type(msg).__name__}")
        # One pass over the messages in C (attrgetter, zip) instead of one per field.
        topics, bodies, properties, flags, sys_flags = zip(*map(_BATCH_FIELDS, msgs))
        topic = topics[0]
        if topics.count(topic) != len(topics):
            other = next(t for t in topics if t != topic)
            raise ValueError(
                f"all messages of a batch must have one topic: {topic!r} and {other!r}")
        topic_bytes = self._topic_to_bytes(topic)
        illegal = PutStatus.MESSAGE_ILLEGAL
        if topic_bytes is None:
            return PutBatchResult(illegal, error=self._topic_error(topic))
        if any(b.__class__ is not bytes for b in bodies):
            bodies = [b if b.__class__ is bytes else _body_view(b) for b in bodies]
            body_lens = array("i", [len(b) if b.__class__ is bytes else b.nbytes
                                    for b in bodies])
        else:
            body_lens = array("i", map(len, bodies))
        if any(properties) or None in properties:  # (None: a MessageExt not decoded yet)
            encoded = [msg.encoded_properties() for msg in msgs]
            props = b"".join(encoded)
            props_lens = array("i", map(len, encoded))
        else:
            props, props_lens = b"", array("i", bytes(4 * len(msgs)))
        if max(body_lens) > self.config.max_message_size:
            return PutBatchResult(illegal, error="a body is larger than max_message_size")
        if max(props_lens) > codec.MAX_PROPERTIES_BYTES:
            return PutBatchResult(
                PutStatus.PROPERTIES_SIZE_EXCEEDED,
                error=f"a message's properties exceed {codec.MAX_PROPERTIES_BYTES} bytes",
            )
        total = (
            sum(body_lens) + len(props) + len(msgs) * codec.record_size(0, len(topic_bytes), 0)
        )
        if total > self.config.max_message_size:
            return PutBatchResult(
                illegal,
                error=f"batch is {total} bytes encoded, more than max_message_size "
                f"{self.config.max_message_size}",
            )
        if any(sys_flags) and any(flag & codec.TRANSACTION_TYPE_MASK for flag in sys_flags):
            return PutBatchResult(illegal, error="a batch cannot carry a transaction type")
        if _DELAY_KEY in props and any(
                PROPERTY_DELAY_TIME_LEVEL in msg._props() and msg.delay_level > 0
                for msg in msgs):
            return PutBatchResult(illegal, error="a batch cannot carry a delay level")
        if self._retention is not None and self._retention.disk_full_reason:
            self._put_refused += 1
            return PutBatchResult(PutStatus.SERVICE_NOT_AVAILABLE,
                                  error=self._retention.disk_full_reason)
        result = self.commitlog.append_batch(
            topic,
            topic_bytes,
            queue_id,
            b"".join(bodies),
            body_lens,
            props,
            props_lens,
            array("i", flags),
            0,
            msgs[0].born_timestamp,
            0,
        )
        self.dispatcher.notify_appended()
        return result

    # -- reading -----------------------------------------------------------------

    def look_by_offset(self, commitlog_offset: int) -> Optional[MessageExt]:
        """The message whose record starts at `commitlog_offset`, or None when there is
        no whole record there. Raises ValueError for a negative offset, RecordError
        when the bytes there are not a valid record."""
        if type(commitlog_offset) is not int:
            raise TypeError("commitlog_offset must be an int")
        if commitlog_offset < 0:
            raise ValueError(f"commitlog_offset {commitlog_offset} is negative")
        if self._closed:
            raise StoreClosedError(f"store {self.path} is closed")
        return self.commitlog.get_message(commitlog_offset)

    def iter_commitlog(self, from_offset: Optional[int] = None) -> Iterator[MessageExt]:
        """Every stored record in CommitLog order from `from_offset` (default: the
        first), up to the end at the time each file is reached."""
        if self._closed:
            raise StoreClosedError(f"store {self.path} is closed")
        return self.commitlog.iter_messages(from_offset)

    def get(
        self, topic: str, queue_id: int, offset: int, max_msgs: int = 32, tags: Optional[str] = None
    ) -> GetResult:
        """Up to `max_msgs` messages of (topic, queue_id) from queue offset `offset`, as
        RocketMQ's getMessage answers (statuses, next_begin_offset, min/max offsets;
        at most `max_transfer_count_on_message_in_memory` messages and about
        `max_transfer_bytes_on_message_in_memory` bytes per call, units of one
        ConsumeQueue file per call).

        `tags` filters: None or "*" for all, else "a || b": the ConsumeQueue tag code
        is matched first, then the exact tag (so hash collisions are not returned).
        Messages carry `bytes` bodies copied once from the mapped file; they stay valid
        after the store is closed.

        An unknown queue is NO_MESSAGE_IN_QUEUE, not an error. Raises TypeError or
        ValueError for a non-str topic, a negative queue id or offset, max_msgs <= 0,
        or a malformed tag expression.
        """
        if not isinstance(topic, str):
            raise TypeError(f"topic must be a str, got {type(topic).__name__}")
        if queue_id.__class__ is not int or not 0 <= queue_id <= _QUEUE_ID_MAX:
            queue_id = self._check_queue_id(queue_id)
        if offset.__class__ is not int:
            raise TypeError(f"offset must be an int, got {type(offset).__name__}")
        if offset < 0:
            raise ValueError(f"offset {offset} is negative")
        if max_msgs.__class__ is not int or max_msgs <= 0:
            raise ValueError(f"max_msgs must be a positive int, got {max_msgs!r}")
        tag_filter = parse_tags(tags)
        if self._closed:
            raise StoreClosedError(f"store {self.path} is closed")
        result = read_queue(self, topic, queue_id, offset, max_msgs, tag_filter)
        self._get_calls += 1  # statistics (not exact under concurrent readers)
        self._get_messages += len(result.messages)
        return result

    def wait_for_message(self, topic: str, queue_id: int, offset: int, timeout: float) -> bool:
        """Block until the queue holds a message at `offset` (its max offset passed it)
        or `timeout` seconds pass; True when one is there. Woken by the dispatcher as
        soon as the unit lands, not by polling."""
        def arrived() -> bool:
            return self.max_offset(topic, queue_id) > offset  # creates no queue

        if arrived() or self.dispatcher is None or self.readonly:
            return arrived()
        return self.dispatcher.wait_for_arrival(arrived, timeout)

    def query_by_key(
        self, topic: str, key: str, max_msgs: int = 32, begin: int = 0, end: Optional[int] = None
    ) -> List[MessageExt]:
        """Messages of `topic` whose KEYS (or UNIQ_KEY) include `key`, stored between
        `begin` and `end` (ms, inclusive; `end` defaults to no limit, which is "now"
        for a store whose clock never runs backwards): the newest
        `max_msgs` (capped at `max_msgs_num_batch`), in ascending CommitLog order.
        Hash collisions in the index are filtered out by checking the stored keys.
        Raises TypeError for a non-str topic or key, ValueError for max_msgs <= 0.
        """
        if not isinstance(topic, str) or not isinstance(key, str):
            raise TypeError("topic and key must be str")
        if max_msgs.__class__ is not int or max_msgs <= 0:
            raise ValueError(f"max_msgs must be a positive int, got {max_msgs!r}")
        if self._closed:
            raise StoreClosedError(f"store {self.path} is closed")
        if self.index is None:
            return []
        if end is None:
            end = 2**63 - 1
        limit = min(max_msgs, self.config.max_msgs_num_batch)
        found: Dict[int, MessageExt] = {}
        for commitlog_offset in self.index.iter_offsets(topic, key, begin, end):
            if commitlog_offset in found:
                continue
            try:
                message = self.commitlog.get_message(commitlog_offset)
            except MQStoreError:
                message = None
            if message is None or message.topic != topic:
                continue  # beyond the end (after a crash) or another topic
            if not begin <= message.store_timestamp <= end:
                continue
            if key in message.keys or message.uniq_key == key:
                found[commitlog_offset] = message
                if len(found) >= limit:
                    break
        return [found[offset] for offset in sorted(found)]

    def look_by_msg_id(self, msg_id: str) -> Optional[MessageExt]:
        """The message with this offset message id, or None. Raises ValueError for a
        string that is not an offset message id (32 or 56 hex digits)."""
        _host, commitlog_offset = decode_msg_id(msg_id)
        return self.look_by_offset(commitlog_offset)

    def offset_by_time(self, topic: str, queue_id: int, timestamp_ms: int) -> int:
        """The queue offset of the first message stored at or after `timestamp_ms`
        (RocketMQ 5's LOWER boundary): the max offset when every message is older, the
        min offset when every message is newer; 0 for an unknown queue."""
        queue = self._consume_queues.get((topic, queue_id))
        if queue is None:
            return 0
        low, high = queue.min_offset(), queue.max_offset()
        while low < high:
            middle = (low + high) // 2
            if self._unit_store_time(queue, middle) < timestamp_ms:
                low = middle + 1
            else:
                high = middle
        return low

    def _unit_store_time(self, queue: ConsumeQueue, queue_offset: int) -> int:
        """Store time of the message at a queue offset; -1 when it is gone or damaged
        (so it counts as older than anything)."""
        unit = queue.unit(queue_offset)
        if unit is None or unit[0] < self.commitlog.min_offset():
            return -1
        try:
            message = self.commitlog.get_message(unit[0])
        except MQStoreError:
            return -1
        return message.store_timestamp if message is not None else -1

    def min_offset(self, topic: str, queue_id: int) -> int:
        """The smallest queue offset still readable (0 for an unknown queue)."""
        queue = self._consume_queues.get((topic, queue_id))
        return queue.min_offset() if queue is not None else 0

    def max_offset(self, topic: str, queue_id: int) -> int:
        """One past the last queue offset (0 for an unknown queue)."""
        queue = self._consume_queues.get((topic, queue_id))
        return queue.max_offset() if queue is not None else 0

    def topics(self) -> Dict[str, List[int]]:
        """Every topic with a ConsumeQueue, mapped to its queue ids, sorted."""
        result: Dict[str, List[int]] = {}
        for topic, queue_id in sorted(self._consume_queues):
            result.setdefault(topic, []).append(queue_id)
        return result

    # -- topic configuration ---------------------------------------------------------

    def create_topic(
        self, name: str, queue_nums: int = 4, perm: int = PERM_READ_WRITE, order: bool = False
    ) -> TopicConfig:
        """Create (or update) a topic with `queue_nums` read and write queues, recorded
        in `config/topics.json`. Raises TypeError / ValueError for an illegal name, a
        system topic or a queue count outside 1..1024."""
        self._check_open()
        error = topic_error(name)
        if error:
            raise ValueError(error)
        if is_system_topic(name):
            raise ValueError(f"topic {name!r} is a system topic and cannot be created")
        if type(perm) is not int or not 0 <= perm <= 15:
            raise ValueError(f"perm must be a RocketMQ permission (0..15), got {perm!r}")
        check_queue_nums(queue_nums)
        return self.topic_manager.put(
            TopicConfig(name, queue_nums, queue_nums, perm, order=bool(order))
        )

    def topic_config(self, name: str) -> Optional[TopicConfig]:
        """The config of a topic, or None when it was never created."""
        return self.topic_manager.get(name)

    def topic_configs(self) -> List[TopicConfig]:
        """Every configured topic, sorted by name."""
        return self.topic_manager.all()

    def delete_topic(self, name: str) -> bool:
        """Delete a topic's config and its ConsumeQueues (its records stay in the
        CommitLog until retention removes them; its queue offsets restart at 0).
        Returns False when the topic did not exist. Stop sending to the topic first:
        a message sent meanwhile recreates its queue."""
        self._check_open()
        if is_system_topic(name):
            raise ValueError(f"topic {name!r} is a system topic and cannot be deleted")
        existed = self.topic_manager.remove(name) is not None
        self.dispatcher.wait_for_arrival(lambda: self.dispatcher.behind() == 0, 5.0)
        with self._cq_lock:
            doomed = [key for key in self._consume_queues if key[0] == name]
            queues = [self._consume_queues.pop(key) for key in doomed]
        for queue in queues:
            queue.destroy()
        self.commitlog.forget_queues(doomed)
        topic_dir = os.path.join(self.path, "consumequeue", name)
        if os.path.isdir(topic_dir):
            shutil.rmtree(topic_dir, ignore_errors=True)
        return existed or bool(doomed)

    def _writable_topic(self, topic: str, default_queue_nums: int) -> TopicConfig:
        """The topic's config for a producer, auto-created when allowed."""
        config = self.topic_manager.get(topic)
        if config is None:
            if not self.config.auto_create_topic_enable:
                raise MQStoreError(
                    f"topic {topic!r} does not exist and auto_create_topic_enable is off"
                )
            self._check_open()
            config = self.topic_manager.ensure(topic, default_queue_nums)
        return config

    def _repost(
        self,
        source: MessageExt,
        topic: str,
        queue_id: int,
        *,
        properties: Optional[bytes] = None,
        sys_flag: Optional[int] = None,
        reconsume_times: Optional[int] = None,
        prepared_offset: Optional[int] = None,
        born_timestamp: Optional[int] = None,
        wait: bool = False,
    ) -> PutResult:
        """Store a copy of a stored record under another topic and queue (delay
        delivery, transaction commit, retry): same body, flag, born data and hosts,
        with the given fields replaced. Internal: callers validate."""
        self._check_open()
        body = source.body
        result = self._append(
            topic,
            topic.encode("ascii"),
            queue_id,
            body,
            len(body),
            source.encoded_properties() if properties is None else properties,
            source.flag,
            source.sys_flag if sys_flag is None else sys_flag,
            source.born_timestamp if born_timestamp is None else born_timestamp,
            source.reconsume_times if reconsume_times is None else reconsume_times,
            source.prepared_transaction_offset if prepared_offset is None else prepared_offset,
            (source._born_host_raw, source._store_host_raw),
            wait,
        )
        self.dispatcher.notify_appended()
        return result

    def refresh(self) -> None:
        """A read-only store: take in what a live writer appended since it was opened
        (or since the last refresh): new CommitLog records and files, ConsumeQueue
        units, queues and index files. A writable store is always current."""
        if self._closed:
            raise StoreClosedError(f"store {self.path} is closed")
        if not self.readonly:
            return
        self.commitlog.follow()
        if self.in_memory:
            self.dispatcher.catch_up()
            return
        for queue in list(self._consume_queues.values()):
            queue.follow()
        known = set(self._consume_queues)
        self._load_consume_queues(skip=known)
        for key in set(self._consume_queues) - known:
            self._consume_queues[key].recover()
            self._consume_queues[key].correct_min_offset(self.commitlog.min_offset())
        if self.index is not None:
            self.index.map_new_files()
        commitlog_min = self.commitlog.min_offset()
        if commitlog_min != self._followed_min:  # the writer's cleanup deleted files
            self._followed_min = commitlog_min
            for queue in list(self._consume_queues.values()):
                queue.correct_min_offset(commitlog_min)

    def min_commitlog_offset(self) -> int:
        return self.commitlog.min_offset()

    def max_commitlog_offset(self) -> int:
        """One past the last stored byte (where the next record goes, file roll aside)."""
        return self.commitlog.max_offset()

    # -- retention and statistics ----------------------------------------------------

    def _start_retention(self) -> None:
        """Statistics for every store; for a writable one also the scheduler thread
        (cleanup, disk check, stats sampling and logging) and the disk-full mark,
        measured once now and again at every CommitLog file roll."""
        self._append_lock = threading.Lock()
        self._stats = StatsCollector(self)
        self._followed_min = self.commitlog.min_offset()  # see refresh()
        if self.readonly:
            return
        config = self.config
        scheduler = self._scheduler = Scheduler()
        retention = self._retention = RetentionService(self, scheduler)
        retention.check_disk()
        self.commitlog.on_roll = retention.check_disk
        scheduler.add("cleanup", config.clean_resource_interval, retention.run)
        scheduler.add("disk check", min(DISK_CHECK_INTERVAL_MS, config.clean_resource_interval),
                      retention.check_disk)
        scheduler.add("stats sample", SAMPLE_INTERVAL_MS, self._stats.sample, first_delay_ms=0)
        if config.stats_log_interval:
            scheduler.add("stats log", config.stats_log_interval,
                          lambda: log.info("%s: %s", self.path, self.stats().summary()))
        scheduler.start()

    def _select_append(self) -> None:
        """Route `put` to the CommitLog's append, to its timed (sampled) version, or to
        a refusal while the disk is full: the put path itself reads no flag."""
        with self._append_lock:
            if self.readonly or self.commitlog is None:
                return
            raw = self.commitlog.append
            if self._retention is not None and self._retention.disk_full_reason:
                self._append = self._refuse_disk_full
            elif self._stats is not None and self._stats.sampling:
                self._append = self._stats.timed_append(raw)
            else:
                self._append = raw

    def _refuse_disk_full(self, topic, topic_bytes, queue_id, *_rest) -> PutResult:
        self._put_refused += 1
        reason = self._retention.disk_full_reason if self._retention else None
        if reason is None:  # cleared while this put was on its way: write it
            return self.commitlog.append(topic, topic_bytes, queue_id, *_rest)
        return PutResult.failed(PutStatus.SERVICE_NOT_AVAILABLE, reason, queue_id)

    @property
    def disk_full(self) -> Optional[str]:
        """Why puts are refused (disk use above `disk_space_warning_level_ratio`), or
        None while writes are accepted."""
        return self._retention.disk_full_reason if self._retention is not None else None

    def delete_expired_files(self, force: bool = False) -> CleanupResult:
        """Run one cleanup pass now, as RocketMQ's manual delete: CommitLog files older
        than `file_reserved_time` hours go whatever the hour (never the current file;
        at most `delete_file_batch_max`), then the ConsumeQueue and index files below
        the new CommitLog minimum. `force` deletes unexpired files too. Returns what
        was deleted (a file readers still hold is listed as pending). Raises
        MQStoreError for a read-only store, StoreClosedError after close()."""
        self._check_open()
        return self._retention.run(manual=True, force=force)

    def stats(self) -> StoreStats:
        """Counts, rates, sampled put latency, dispatcher lag, CommitLog offsets, disk
        use and per-queue offsets (see mqstore.stats.StoreStats)."""
        if self._closed:
            raise StoreClosedError(f"store {self.path} is closed")
        return self._stats.snapshot(self._retention)

    # -- lifetime ----------------------------------------------------------------

    def flush(self) -> int:
        """Force everything written to disk; returns the flushed CommitLog offset."""
        if self._closed:
            raise StoreClosedError(f"store {self.path} is closed")
        if self.readonly:
            return self.commitlog.max_offset()
        flushed = self.commitlog.flush()
        for queue in self._consume_queues_snapshot():
            queue.flush_all()
        if self.index is not None:
            self.index.flush()
        return flushed

    def close(self) -> None:
        """Dispatch what is left, flush everything, write the checkpoint, remove the
        abort file, stop the services, unmap the files and release the lock.

        Idempotent and safe from any thread; a second caller waits until the store is
        closed. Called from inside a store call on the same thread (a signal handler
        that interrupted a put half-way through, a callback the store runs), the store
        refuses new calls at once and a helper thread finishes the close as soon as
        the interrupted call lets go of the store's locks; this call does not wait.
        Open stores are also closed at interpreter exit."""
        if next(self._close_claims):
            if not self._inside_store_call():
                self._close_done.wait()
            return
        self._closed = True
        _open_stores.discard(self)
        if self._inside_store_call():
            if self.commitlog is not None:
                self.commitlog.refuse_appends()
            try:
                threading.Thread(target=self._close_now, name="mqstore-close").start()
            except RuntimeError:  # no new threads (interpreter shutdown): close at exit
                log.warning("%s: close() from inside a store call could not start its "
                            "helper thread; the store closes at interpreter exit", self.path)
                self._close_claims = itertools.count()
                _open_stores.add(self)
            return
        self._close_now()

    def _inside_store_call(self) -> bool:
        """True when this thread is inside a call into this store that close() would
        wait for or pull files from under: it holds one of the store's re-entrant locks
        (the append lock during a put or a file roll, the index lock during a key
        lookup, the queue table or the dispatcher's arrival condition), it runs a
        transaction check-back (the check thread, or a pass on this thread), or a
        Python signal handler interrupted mqstore code on this thread."""
        for lock in (getattr(self.commitlog, "_lock", None), getattr(self.index, "_lock", None),
                     self._cq_lock, getattr(self.dispatcher, "_arrival", None)):
            if lock is not None and lock._is_owned():
                return True
        if self.transactions is not None and self.transactions.inside():
            return True
        return _interrupted_store_call()

    def _close_now(self) -> None:
        try:
            self._shutdown_parts()
        finally:
            if self._lock is not None:
                self._lock.release()
            self._close_done.set()

    def _shutdown_parts(self) -> None:
        clean = False
        # Services that put messages stop first, while appends are still accepted.
        for service in (self.transactions, self.schedule):
            if service is not None:
                service.shutdown()
        if not self.readonly and getattr(self, "consumer_offsets", None) is not None:
            self.consumer_offsets.persist()
        if self._scheduler is not None:
            self._scheduler.shutdown()  # no cleanup runs from here on
        if self.commitlog is not None:
            self.commitlog.stop_appends()  # so the dispatcher's catch-up below is final
        if self.dispatcher is not None and not self.readonly:
            self.dispatcher.shutdown()
            clean = self.dispatcher.behind() == 0
        if self._cq_flush is not None:
            self._cq_flush.shutdown()
        if self.commitlog is not None:
            self.commitlog.shutdown()
        for queue in self._consume_queues.values():
            if not self.readonly:
                queue.flush_all()
            queue.shutdown()
        if self.index is not None:
            self.index.shutdown()
        if self.readonly or self.commitlog is None or self.dispatcher is None:
            return
        checkpoint = self.checkpoint
        if self.commitlog.last_store_timestamp:
            checkpoint.physic_msg_timestamp = self.commitlog.last_store_timestamp
        if self.dispatcher.last_dispatched_timestamp:
            checkpoint.logics_msg_timestamp = self.dispatcher.last_dispatched_timestamp
        checkpoint.flush()
        if clean:
            self._abort.remove()

    @property
    def closed(self) -> bool:
        return self._closed

    def __enter__(self) -> MessageStore:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"MessageStore({self.path!r}, {state})"
