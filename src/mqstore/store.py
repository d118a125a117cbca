"""MessageStore: the public face of the store, a thin coordinator over the CommitLog
(and, as they arrive, the ConsumeQueues, the index and recovery)."""

from __future__ import annotations

import logging
import os
import re
import threading
from array import array
from typing import Dict, Iterable, Iterator, Optional

from . import codec
from ._native import ffi
from .commitlog import CommitLog, CommitLogRecovery
from .config import SYNC_FLUSH, StoreConfig
from .errors import MQStoreError, StoreClosedError
from .lockfile import StoreLock
from .message import (
    PROPERTY_DELAY_TIME_LEVEL,
    PROPERTY_REAL_QUEUE_ID,
    PROPERTY_REAL_TOPIC,
    PROPERTY_WAIT_STORE_MSG_OK,
    SCHEDULE_TOPIC,
    Message,
    MessageExt,
    encode_host,
    encode_properties,
)
from .results import PutBatchResult, PutResult, PutStatus

log = logging.getLogger(__name__)

TOPIC_PATTERN = re.compile(r"[%|a-zA-Z0-9_-]+")
MAX_TOPIC_LENGTH = 127
_QUEUE_ID_MAX = 2**31 - 1


class MessageStore:
    """A RocketMQ-format message store in one directory.

    ``MessageStore(path, config=None, **overrides)`` opens (creating if needed) the
    store at `path`; keyword overrides replace fields of `config` (a StoreConfig).
    Raises ValueError for a bad setting, MQStoreError when `path` is a file or not
    writable, StoreLockedError when another store holds the directory,
    StoreCorruptedError when a store file is damaged beyond what opening repairs.

    Use it as a context manager, or call `close()` (idempotent).
    """

    def __init__(self, path, config: Optional[StoreConfig] = None, *, _readonly: bool = False,
                 **overrides) -> None:
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
        self._close_lock = threading.Lock()
        self._topic_bytes: Dict[str, bytes] = {}
        self._lock: Optional[StoreLock] = None
        self._prepare_directory()
        if not _readonly:
            self._lock = StoreLock(self.path)
            self._lock.acquire()
        try:
            self.commitlog = CommitLog(self.path, config, readonly=_readonly)
            self.commitlog.load()
            self.recovery: CommitLogRecovery = self.commitlog.recover()
            if self.recovery.bytes_truncated or self.recovery.files_deleted:
                log.warning("opened %s: %s", self.path, self.recovery)
            self.commitlog.start()
            self._append = self._refuse_write if _readonly else self.commitlog.append
            self._max_body = config.max_message_size
        except BaseException:
            if getattr(self, "commitlog", None) is not None:
                self.commitlog.shutdown()
            if self._lock is not None:
                self._lock.release()
            raise
        self._closed = False

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
            view = memoryview(body)
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
        return self._append(
            topic, topic_bytes, queue_id, body, body_len, props, msg.flag, sys_flag,
            msg.born_timestamp, msg.reconsume_times, msg.prepared_transaction_offset, hosts,
            wait,
        )

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
        topic = msgs[0].topic if isinstance(msgs[0], Message) else None
        for msg in msgs:
            if not isinstance(msg, Message):
                raise TypeError(f"put_batch takes Messages, got {type(msg).__name__}")
            if msg.topic != topic:
                raise ValueError(
                    f"all messages of a batch must have one topic: {topic!r} and {msg.topic!r}"
                )
        topic_bytes = self._topic_to_bytes(topic)
        illegal = PutStatus.MESSAGE_ILLEGAL
        if topic_bytes is None:
            return PutBatchResult(illegal, error=self._topic_error(topic))
        bodies = [msg.body for msg in msgs]
        body_lens = array("i", [len(b) if type(b) is bytes else memoryview(b).nbytes for b in bodies])
        props = [msg.encoded_properties() for msg in msgs]
        props_lens = array("i", map(len, props))
        if max(body_lens) > self.config.max_message_size:
            return PutBatchResult(illegal, error="a body is larger than max_message_size")
        if max(props_lens) > codec.MAX_PROPERTIES_BYTES:
            return PutBatchResult(
                PutStatus.PROPERTIES_SIZE_EXCEEDED,
                error=f"a message's properties exceed {codec.MAX_PROPERTIES_BYTES} bytes",
            )
        total = sum(body_lens) + sum(props_lens) + len(msgs) * codec.record_size(0, len(topic_bytes), 0)
        if total > self.config.max_message_size:
            return PutBatchResult(
                illegal,
                error=f"batch is {total} bytes encoded, more than max_message_size "
                f"{self.config.max_message_size}",
            )
        for msg in msgs:
            if msg.sys_flag & codec.TRANSACTION_TYPE_MASK:
                return PutBatchResult(illegal, error="a batch cannot carry a transaction type")
            if msg.delay_level > 0:
                return PutBatchResult(illegal, error="a batch cannot carry a delay level")
        return self.commitlog.append_batch(
            topic, topic_bytes, queue_id, b"".join(bodies), body_lens, b"".join(props),
            props_lens, array("i", [msg.flag for msg in msgs]), 0, msgs[0].born_timestamp, 0,
        )

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

    def min_commitlog_offset(self) -> int:
        return self.commitlog.min_offset()

    def max_commitlog_offset(self) -> int:
        """One past the last stored byte (where the next record goes, file roll aside)."""
        return self.commitlog.max_offset()

    # -- lifetime ----------------------------------------------------------------

    def flush(self) -> int:
        """Force everything written to disk; returns the flushed CommitLog offset."""
        if self._closed:
            raise StoreClosedError(f"store {self.path} is closed")
        if self.readonly:
            return self.commitlog.max_offset()
        return self.commitlog.flush()

    def close(self) -> None:
        """Flush, stop the services, unmap the files and release the lock. Idempotent."""
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
            try:
                self.commitlog.shutdown()
            finally:
                if self._lock is not None:
                    self._lock.release()

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
