"""Consumers: RocketMQ's consumer model (groups, push and lite-pull consumers, offsets,
retries and dead letters, ordered consumption, backtracking) over a MessageStore."""

from __future__ import annotations

import asyncio
import copy
import enum
import itertools
import logging
import os
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import (
    TYPE_CHECKING,
    Any,
    AsyncIterator,
    Callable,
    Dict,
    Iterable,
    List,
    Optional,
    Sequence,
    Union,
)

from ..errors import ClientClosedError, MQClientError
from ..message import (
    PROPERTY_DELAY_TIME_LEVEL,
    PROPERTY_ORIGIN_MESSAGE_ID,
    PROPERTY_RETRY_TOPIC,
    PROPERTY_WAIT_STORE_MSG_OK,
    MessageExt,
)
from ..offsets import ConsumerOffsetManager
from ..results import GetStatus, PutStatus
from ..topics import DLQ_GROUP_TOPIC_PREFIX, PERM_READ_WRITE, RETRY_GROUP_TOPIC_PREFIX
from .filter import MessageSelector
from .producer import MessageQueue
from .rebalance import allocate_averagely, registry_of, topic_queue_ids
from .validators import check_group

if TYPE_CHECKING:
    from ..store import MessageStore

log = logging.getLogger(__name__)

BROKER_NAME = "mqstore"


class MessageModel(enum.Enum):
    """CLUSTERING: a group shares the queues; BROADCASTING: every consumer sees all."""

    CLUSTERING = "CLUSTERING"
    BROADCASTING = "BROADCASTING"


class ConsumeFromWhere(enum.Enum):
    """Where a group with no committed offset starts."""

    LAST_OFFSET = "CONSUME_FROM_LAST_OFFSET"
    FIRST_OFFSET = "CONSUME_FROM_FIRST_OFFSET"
    TIMESTAMP = "CONSUME_FROM_TIMESTAMP"


class ConsumeConcurrentlyStatus(enum.Enum):
    CONSUME_SUCCESS = "CONSUME_SUCCESS"
    RECONSUME_LATER = "RECONSUME_LATER"


class ConsumeOrderlyStatus(enum.Enum):
    SUCCESS = "SUCCESS"
    SUSPEND_CURRENT_QUEUE_A_MOMENT = "SUSPEND_CURRENT_QUEUE_A_MOMENT"


CLUSTERING = MessageModel.CLUSTERING
BROADCASTING = MessageModel.BROADCASTING
CONSUME_SUCCESS = ConsumeConcurrentlyStatus.CONSUME_SUCCESS
RECONSUME_LATER = ConsumeConcurrentlyStatus.RECONSUME_LATER

Listener = Callable[[List[MessageExt], "ConsumeContext"], Any]
Expression = Union[str, MessageSelector, None]

_client_ids = itertools.count()


class ConsumeContext:
    """Handed to a listener with each batch: the queue, and for concurrent listeners
    `delay_level_when_next_consume` (0: RocketMQ's 3 + reconsume times; -1: straight
    to the dead-letter queue)."""

    __slots__ = ("message_queue", "delay_level_when_next_consume")

    def __init__(self, message_queue: MessageQueue) -> None:
        self.message_queue = message_queue
        self.delay_level_when_next_consume = 0


class _ProcessQueue:
    """One assigned queue: where to pull next and what is being consumed."""

    __slots__ = (
        "mq", "next_offset", "inflight", "inflight_msgs", "dropped", "paused", "lock",
        "buffer", "consuming", "suspended_until", "selector",
    )

    def __init__(self, mq: MessageQueue, next_offset: int, selector: MessageSelector) -> None:
        self.mq = mq
        self.next_offset = next_offset
        self.inflight: Dict[int, int] = {}  # first queue offset of a chunk -> its size
        self.inflight_msgs = 0
        self.dropped = False
        self.paused = False
        self.lock = threading.Lock()
        self.buffer: List[MessageExt] = []  # orderly: pulled, not yet consumed, in order
        self.consuming = False
        self.suspended_until = 0.0
        self.selector = selector

    def add(self, first: int, count: int) -> None:
        with self.lock:
            self.inflight[first] = count
            self.inflight_msgs += count

    def done(self, first: int) -> int:
        """Chunk finished; the offset now safe to commit."""
        with self.lock:
            self.inflight_msgs -= self.inflight.pop(first, 0)
            return self._committable()

    def committable(self) -> int:
        with self.lock:  # min() over a dict other threads change
            return self._committable()

    def _committable(self) -> int:
        """The first offset not yet consumed: the oldest chunk in flight (or pull in
        progress), else the oldest buffered (orderly) message, else the next offset
        to pull. Call with the lock held."""
        if self.inflight:
            return min(self.inflight)
        if self.buffer:
            return self.buffer[0].queue_offset
        return self.next_offset


class _ConsumerBase:
    """What push and pull consumers share: group membership, subscriptions, queue
    assignment, offsets, backtracking and lag."""

    def __init__(
        self,
        store: MessageStore,
        group: str,
        *,
        model: MessageModel = MessageModel.CLUSTERING,
        consume_from_where: ConsumeFromWhere = ConsumeFromWhere.LAST_OFFSET,
        consume_timestamp: Optional[int] = None,
        instance_name: str = "DEFAULT",
        pull_batch_size: int = 32,
        persist_consumer_offset_interval: int = 5000,
    ) -> None:
        from ..store import MessageStore

        if not isinstance(store, MessageStore):
            raise TypeError(f"store must be a MessageStore, got {type(store).__name__}")
        if store.readonly:
            raise MQClientError(f"store {store.path} is read-only; consumers commit offsets")
        self.store = store
        self.group = check_group(group, "consumer")
        if not isinstance(model, MessageModel):
            raise TypeError(f"model must be a MessageModel, got {model!r}")
        if not isinstance(consume_from_where, ConsumeFromWhere):
            raise TypeError(
                f"consume_from_where must be a ConsumeFromWhere, got {consume_from_where!r}"
            )
        if consume_from_where is ConsumeFromWhere.TIMESTAMP and consume_timestamp is None:
            consume_timestamp = store.config.clock() - 30 * 60 * 1000  # RocketMQ: 30 min back
        for name, value, low in (
            ("pull_batch_size", pull_batch_size, 1),
            ("persist_consumer_offset_interval", persist_consumer_offset_interval, 1),
        ):
            if type(value) is not int or value < low:
                raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
        self.model = model
        self.consume_from_where = consume_from_where
        self.consume_timestamp = consume_timestamp
        self.instance_name = instance_name
        self.pull_batch_size = min(pull_batch_size, 1024)
        self.persist_interval = persist_consumer_offset_interval / 1000
        self.client_id = f"{socket.gethostname()}@{os.getpid()}@{instance_name}@{next(_client_ids)}"
        self.subscriptions: Dict[str, MessageSelector] = {}
        self._queues: Dict[MessageQueue, _ProcessQueue] = {}
        self._assign_lock = threading.RLock()
        self._manual = False
        self._started = False
        self._closed = False
        if model is MessageModel.BROADCASTING:
            path = os.path.join(store.path, "config", "broadcastOffset",
                                f"{instance_name}@{self.group}.json")
            self.offsets = ConsumerOffsetManager(store.path, path=path)
        else:
            self.offsets = store.consumer_offsets
        self._registry = registry_of(store)

    # -- subscriptions ------------------------------------------------------------

    def subscribe(self, topic: str, expression: Expression = "*") -> None:
        """Consume `topic`, filtered by a tag expression (``"*"``, ``"a || b"``) or a
        MessageSelector (tags or SQL92). ValueError, with the position, for a
        malformed expression."""
        if self._closed:
            raise ClientClosedError(f"consumer {self.group} is shut down")
        from ..topics import topic_error

        error = topic_error(topic)
        if error:
            raise (TypeError if not isinstance(topic, str) else MQClientError)(error)
        if expression is None or isinstance(expression, str):
            selector = MessageSelector.by_tag(expression or "*")
        elif isinstance(expression, MessageSelector):
            selector = expression
        else:
            raise TypeError(f"expression must be a str or MessageSelector, got {expression!r}")
        self.subscriptions[topic] = selector
        if self._started and not self._manual:
            self._rebalance()

    def unsubscribe(self, topic: str) -> None:
        self.subscriptions.pop(topic, None)
        if self._started:
            self._rebalance()

    def subscription_signature(self) -> tuple:
        return tuple(sorted((t, s.kind, s.expression) for t, s in self.subscriptions.items()
                            if not t.startswith(RETRY_GROUP_TOPIC_PREFIX)))

    # -- assignment ---------------------------------------------------------------

    def assignment(self) -> List[MessageQueue]:
        """The queues this consumer reads now."""
        with self._assign_lock:
            return sorted(self._queues)

    def _rebalance(self) -> None:
        if self._closed or self._manual:
            return
        wanted: Dict[MessageQueue, MessageSelector] = {}
        members = (
            self._registry.member_ids(self.group)
            if self.model is MessageModel.CLUSTERING else [self.client_id]
        )
        for topic, selector in list(self.subscriptions.items()):
            queues = [MessageQueue(topic, BROKER_NAME, q)
                      for q in topic_queue_ids(self.store, topic)]
            for mq in allocate_averagely(queues, members, self.client_id):
                wanted[mq] = selector
        self._set_assignment(wanted)

    def _set_assignment(self, wanted: Dict[MessageQueue, MessageSelector]) -> None:
        with self._assign_lock:
            for mq in [mq for mq in self._queues if mq not in wanted]:
                pq = self._queues.pop(mq)
                with pq.lock:
                    pq.dropped = True
                    offset = self._release_offset(pq)
                if offset is not None:
                    self.offsets.commit(self.group, mq.topic, mq.queue_id, offset)
            for mq, selector in wanted.items():
                pq = self._queues.get(mq)
                if pq is None:
                    self._queues[mq] = _ProcessQueue(mq, self._start_offset(mq), selector)
                else:
                    pq.selector = selector

    def _release_offset(self, pq: _ProcessQueue) -> Optional[int]:
        """The offset to commit for a queue taken away (its lock held), or None."""
        return pq._committable()

    def _start_offset(self, mq: MessageQueue) -> int:
        committed = self.offsets.query(self.group, mq.topic, mq.queue_id)
        store = self.store
        if committed >= 0:
            return committed
        where = self.consume_from_where
        if mq.topic.startswith(RETRY_GROUP_TOPIC_PREFIX) or where is ConsumeFromWhere.FIRST_OFFSET:
            return store.min_offset(mq.topic, mq.queue_id)
        if where is ConsumeFromWhere.TIMESTAMP:
            return store.offset_by_time(mq.topic, mq.queue_id, self.consume_timestamp)
        if self._young_queue(mq):
            return 0
        return store.max_offset(mq.topic, mq.queue_id)

    def _young_queue(self, mq: MessageQueue) -> bool:
        """RocketMQ 4.9.8's exception to LAST_OFFSET for a new group: a queue that
        still starts at offset 0 with its first message within the memory window
        (`accessMessageInMemoryMaxRatio`, 40% of RAM, behind the CommitLog's end) is
        read from 0, so the first messages of a new topic are not skipped."""
        store = self.store
        if store.min_offset(mq.topic, mq.queue_id) > 0:
            return False
        queue = store._consume_queues.get((mq.topic, mq.queue_id))
        unit = queue.unit(0) if queue is not None else None
        if unit is None:
            return True  # empty: the first message to come is the one to read
        try:
            memory = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError):
            memory = 1 << 30
        return store.max_commitlog_offset() - unit[0] <= memory * 40 // 100

    # -- offsets ------------------------------------------------------------------

    def _commit_pq(self, pq: _ProcessQueue) -> None:
        offset = pq.committable()
        if not pq.dropped:
            self.offsets.commit(self.group, pq.mq.topic, pq.mq.queue_id, offset)

    def persist_offsets(self) -> None:
        """Commit every assigned queue's progress and save it to disk now."""
        with self._assign_lock:
            queues = list(self._queues.values())
        for pq in queues:
            self._commit_pq(pq)
        self.offsets.persist()

    def committed(self, mq: MessageQueue) -> int:
        """The committed offset of a queue for this group (-1 when none)."""
        return self.offsets.query(self.group, mq.topic, mq.queue_id)

    def lag(self) -> Dict[MessageQueue, int]:
        """Messages not yet consumed, per queue of the subscribed topics (RocketMQ's
        accumulation: max offset minus the group's offset)."""
        result = {}
        with self._assign_lock:
            assigned = dict(self._queues)
        for topic in self.subscriptions:
            for queue_id in topic_queue_ids(self.store, topic):
                mq = MessageQueue(topic, BROKER_NAME, queue_id)
                pq = assigned.get(mq)
                done = pq.committable() if pq is not None else self.committed(mq)
                high = self.store.max_offset(topic, queue_id)
                result[mq] = max(0, high - max(done, 0)) if done >= 0 else high
        return result

    def reset_offset_by_time(self, topic: str, timestamp_ms: int) -> Dict[MessageQueue, int]:
        """Move the group's offsets on `topic` to the first message stored at or after
        `timestamp_ms`, backwards (re-delivery) or forwards (skip). Every live member of
        the group picks the new offsets up at once. Returns the new offsets."""
        if type(timestamp_ms) is not int:
            raise TypeError("timestamp_ms must be an int (milliseconds since the epoch)")
        new = {}
        for queue_id in topic_queue_ids(self.store, topic):
            mq = MessageQueue(topic, BROKER_NAME, queue_id)
            new[mq] = self.store.offset_by_time(topic, queue_id, timestamp_ms)
        members = (self._registry.members(self.group)
                   if self.model is MessageModel.CLUSTERING else [])
        for member in set(members) | {self}:
            member._seek_many(new)
        for mq, offset in new.items():
            self.offsets.commit(self.group, mq.topic, mq.queue_id, offset)
        self.offsets.persist()
        return new

    def _seek_many(self, offsets: Dict[MessageQueue, int]) -> None:
        with self._assign_lock:
            for mq, offset in offsets.items():
                old = self._queues.get(mq)
                if old is None:
                    continue
                with old.lock:
                    old.dropped = True  # in-flight results no longer move the offset
                pq = self._queues[mq] = _ProcessQueue(mq, offset, old.selector)
                pq.paused = old.paused
                self.offsets.commit(self.group, mq.topic, mq.queue_id, offset)
        self._wake()

    def _wake(self) -> None:
        dispatcher = self.store.dispatcher
        if dispatcher is not None:
            dispatcher.wake_waiters()

    # -- pulling ----------------------------------------------------------------------

    def _pull(self, pq: _ProcessQueue, max_msgs: int) -> List[MessageExt]:
        """Messages of one queue from its next offset (filtered), advancing it."""
        mq = pq.mq
        if pq.selector.tags is None:
            # Without a tag filter, ask for no more than the queue holds: the store then
            # has no reason to read on past the units it found (see the report on
            # reader.read_queue's stale CommitLog bound), and an idle queue costs no get.
            available = self.store.max_offset(mq.topic, mq.queue_id) - pq.next_offset
            if available == 0:
                return []
            if available > 0:
                max_msgs = min(max_msgs, available)
        got = self.store.get(mq.topic, mq.queue_id, pq.next_offset, max_msgs,
                             pq.selector.tag_expression)
        status = got.status
        if status is GetStatus.FOUND:
            messages = got.messages
            if pq.selector.predicate is not None:
                messages = [m for m in messages if pq.selector.matches(m.properties)]
            pq.next_offset = got.next_begin_offset
            return messages
        if status in (GetStatus.OFFSET_TOO_SMALL, GetStatus.OFFSET_OVERFLOW_BADLY,
                      GetStatus.NO_MATCHED_MESSAGE, GetStatus.OFFSET_FOUND_NULL,
                      GetStatus.MESSAGE_WAS_REMOVING):
            if status is GetStatus.OFFSET_TOO_SMALL:
                log.warning("%s %s: offset %d below the queue's minimum; moving to %d",
                            self.group, mq, pq.next_offset, got.next_begin_offset)
            pq.next_offset = got.next_begin_offset
        return []

    def _has_new(self, queues: Sequence[_ProcessQueue]) -> bool:
        store = self.store
        return any(
            not pq.paused and pq.next_offset < store.max_offset(pq.mq.topic, pq.mq.queue_id)
            for pq in queues
        )


def _restore_retry_topic(msg: MessageExt, group: str) -> MessageExt:
    """A message from the group's retry topic, shown with its original topic."""
    if msg.topic.startswith(RETRY_GROUP_TOPIC_PREFIX):
        original = msg.properties.get(PROPERTY_RETRY_TOPIC)
        if original:
            msg = copy.copy(msg)
            msg.topic = original
    return msg


class PushConsumer(_ConsumerBase):
    """Calls a listener with messages as they arrive, on a pool of threads.

    ``PushConsumer(store, group)``; `subscribe(topic, expression)`; `register(listener)`
    (concurrent: ``listener(msgs, context)`` returns CONSUME_SUCCESS or
    RECONSUME_LATER; an exception, any other return, or running past
    `consume_timeout` seconds count as RECONSUME_LATER) or `register_orderly(listener)`
    (one thread per queue at a time, in queue order); then `start()`.

    In CLUSTERING, a message returned for later goes to ``%RETRY%group`` with delay
    level 3 + reconsume times and comes back to this group with its original topic;
    after `max_reconsume_times` it goes to ``%DLQ%group``. In BROADCASTING a failed
    message is logged and dropped, as in RocketMQ.
    """

    def __init__(
        self,
        store: MessageStore,
        group: str,
        *,
        consume_thread_min: int = 4,
        consume_thread_max: int = 4,
        consume_message_batch_max_size: int = 1,
        max_reconsume_times: Optional[int] = None,
        consume_timeout: float = 15 * 60,
        suspend_current_queue_time_millis: int = 1000,
        pull_threshold_for_queue: int = 1000,
        **options,
    ) -> None:
        super().__init__(store, group, **options)
        for name, value in (
            ("consume_thread_min", consume_thread_min),
            ("consume_thread_max", consume_thread_max),
            ("consume_message_batch_max_size", consume_message_batch_max_size),
            ("pull_threshold_for_queue", pull_threshold_for_queue),
        ):
            if type(value) is not int or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if consume_thread_min > consume_thread_max:
            raise ValueError("consume_thread_min must not exceed consume_thread_max")
        if max_reconsume_times is not None and (
            type(max_reconsume_times) is not int or max_reconsume_times < 0
        ):
            raise ValueError(
                f"max_reconsume_times must be an int >= 0, got {max_reconsume_times!r}"
            )
        if not consume_timeout > 0:
            raise ValueError(f"consume_timeout must be > 0 seconds, got {consume_timeout!r}")
        self.consume_thread_min = consume_thread_min
        self.consume_thread_max = consume_thread_max
        self.batch_size = consume_message_batch_max_size
        self._max_reconsume = max_reconsume_times
        self.consume_timeout = consume_timeout
        self.suspend_seconds = suspend_current_queue_time_millis / 1000
        self.pull_threshold = pull_threshold_for_queue
        self._listener: Optional[Listener] = None
        self._orderly = False
        self._executor: Optional[ThreadPoolExecutor] = None
        self._thread: Optional[threading.Thread] = None
        self._running: Dict[int, list] = {}  # chunk id -> [started, pq, msgs, first, expired]
        self._running_lock = threading.Lock()
        self._chunk_ids = itertools.count()
        self._timers: List[threading.Timer] = []
        #: Messages the listener accepted / returned for later, since start.
        self.consumed = 0
        self.reconsumed = 0

    @property
    def max_reconsume_times(self) -> int:
        if self._max_reconsume is not None:
            return self._max_reconsume
        return 2**31 - 1 if self._orderly else 16

    def register(self, listener: Listener) -> None:
        """Consume concurrently with `listener(msgs, context)`."""
        self._set_listener(listener, orderly=False)

    def register_orderly(self, listener: Listener) -> None:
        """Consume each queue in order, one batch at a time, with `listener(msgs,
        context)` returning ConsumeOrderlyStatus.SUCCESS or SUSPEND_CURRENT_QUEUE_A_MOMENT."""
        self._set_listener(listener, orderly=True)

    def _set_listener(self, listener: Listener, orderly: bool) -> None:
        if not callable(listener):
            raise TypeError("listener must be callable: listener(msgs, context)")
        if self._started:
            raise MQClientError("register the listener before start()")
        self._listener = listener
        self._orderly = orderly

    # -- lifecycle ----------------------------------------------------------------

    def start(self) -> PushConsumer:
        if self._closed:
            raise ClientClosedError(f"consumer {self.group} is shut down")
        if self._started:
            return self
        if self._listener is None:
            raise MQClientError("register a listener before start()")
        if not self.subscriptions:
            raise MQClientError("subscribe to a topic before start()")
        if self.model is MessageModel.CLUSTERING:
            retry = RETRY_GROUP_TOPIC_PREFIX + self.group
            self.store.topic_manager.ensure(retry, 1, PERM_READ_WRITE)
            self.subscriptions[retry] = MessageSelector.by_tag("*")
        self._executor = ThreadPoolExecutor(
            self.consume_thread_max, thread_name_prefix=f"mqstore-consume-{self.group}"
        )
        self._started = True
        if self.model is MessageModel.CLUSTERING:
            self._registry.join(self)
        else:
            self._rebalance()
        self._thread = threading.Thread(
            target=self._pull_loop, name=f"mqstore-pull-{self.group}", daemon=True
        )
        self._thread.start()
        return self

    def shutdown(self, timeout: float = 30.0) -> None:
        """Stop pulling, let batches being consumed finish (up to `timeout` seconds),
        commit and save offsets, and leave the group. Messages pulled but not consumed
        are not lost: the offset stays before them. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._wake()
        if self._thread is not None:
            self._thread.join()
        for timer in self._timers:
            timer.cancel()
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
        if self._started:
            # Commit this member's progress and release its queues before the others
            # take them over, so they start where this one stopped.
            with self._assign_lock:
                self._set_assignment({})
            if not self.store.closed:
                self.offsets.persist()
        if self._started and self.model is MessageModel.CLUSTERING:
            self._registry.leave(self)

    def __enter__(self) -> PushConsumer:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.shutdown()

    # -- the pull loop ------------------------------------------------------------

    def _pull_loop(self) -> None:
        next_rebalance = next_persist = time.monotonic()
        topics = self.store.topic_manager
        seen_version = -1
        while not self._closed:
            try:
                now = time.monotonic()
                if now >= next_rebalance or topics.version != seen_version:
                    seen_version = topics.version
                    self._rebalance()
                    next_rebalance = now + 1.0
                if now >= next_persist:
                    self.persist_offsets()
                    next_persist = now + self.persist_interval
                self._expire_stuck(now)
                if not self._pull_round():
                    with self._assign_lock:
                        queues = list(self._queues.values())
                    ready = [pq for pq in queues if not self._throttled(pq)]
                    timeout = 0.5 if len(ready) == len(queues) else 0.01
                    # wake in time for the next offset persist and rebalance
                    timeout = max(0.001, min(timeout, next_persist - now,
                                             next_rebalance - now))
                    self.store.dispatcher.wait_for_arrival(
                        lambda ready=ready, v=seen_version: (
                            self._closed or topics.version != v or self._has_new(ready)
                        ),
                        timeout,
                    )
            except ClientClosedError:
                return
            except Exception as exc:
                if self._closed or self.store.closed:
                    return
                log.exception("consumer %s pull loop: %s", self.group, exc)
                time.sleep(0.1)

    def _throttled(self, pq: _ProcessQueue) -> bool:
        if self._orderly:
            return len(pq.buffer) >= self.pull_threshold
        return pq.inflight_msgs >= self.pull_threshold

    def _pull_round(self) -> bool:
        """Pull once from every assigned queue; True when anything moved."""
        with self._assign_lock:
            queues = list(self._queues.values())
        moved = False
        for pq in queues:
            if self._closed:
                break
            if pq.dropped or pq.paused or self._throttled(pq):
                continue
            # While a pull runs, its start offset counts as in flight: a rebalance
            # dropping the queue meanwhile must not commit the advanced next offset
            # before the pulled messages are registered (they would be lost).
            with pq.lock:
                if pq.dropped:
                    continue
                before = pq.next_offset
                pq.inflight[before] = 0
            try:
                messages = self._pull(pq, self.pull_batch_size)
            except BaseException:
                with pq.lock:
                    del pq.inflight[before]
                raise
            if pq.next_offset != before:
                moved = True
            with pq.lock:
                del pq.inflight[before]
                if not messages or pq.dropped:
                    continue
                first = messages[0].queue_offset
                if self._orderly:
                    pq.buffer.extend(messages)
                    start = not pq.consuming
                    pq.consuming = True
                else:
                    pq.inflight[first] = len(messages)
                    pq.inflight_msgs += len(messages)
            if self._orderly:
                if start:
                    self._submit(self._drain_orderly, pq)
            else:
                chunk = next(self._chunk_ids)
                with self._running_lock:
                    self._running[chunk] = [None, pq, messages, first, False]
                self._submit(self._consume_chunk, chunk)
        return moved

    def _submit(self, fn, *args) -> None:
        try:
            self._executor.submit(fn, *args)
        except RuntimeError:
            raise ClientClosedError("consumer is shut down") from None

    # -- concurrent consumption -------------------------------------------------------

    def _consume_chunk(self, chunk: int) -> None:
        try:
            self._consume_chunk_unsafe(chunk)
        except Exception:
            log.exception("consumer %s: consuming a batch failed", self.group)

    def _consume_chunk_unsafe(self, chunk: int) -> None:
        with self._running_lock:
            entry = self._running.get(chunk)
            if entry is None:
                return
            entry[0] = time.monotonic()
        _, pq, messages, first, _ = entry
        later: List[tuple] = []
        context = ConsumeContext(pq.mq)
        size = self.batch_size
        succeeded = 0
        retry = pq.mq.topic.startswith(RETRY_GROUP_TOPIC_PREFIX)  # one queue per chunk
        for i in range(0, len(messages), size):
            if pq.dropped:
                break
            batch = messages[i : i + size]
            shown = [_restore_retry_topic(m, self.group) for m in batch] if retry else batch
            context.delay_level_when_next_consume = 0
            status = self._call(shown, context)
            if status is CONSUME_SUCCESS:
                succeeded += len(batch)
            else:
                level = context.delay_level_when_next_consume
                later.extend((m, level) for m in batch)
        with self._running_lock:
            entry = self._running.pop(chunk, None)
            if entry is None or entry[4]:
                return  # expired meanwhile: already sent back and released; ignored
            self.consumed += succeeded
            if later and not pq.dropped:
                self.reconsumed += len(later)
        if later and not pq.dropped:
            failed = [m for m, level in later if not self._send_back(m, level)]
            if failed:
                self._consume_later(pq, failed, first)
                return
        pq.done(first)
        self._commit_pq(pq)

    def _call(self, msgs: List[MessageExt], context: ConsumeContext):
        try:
            status = self._listener(msgs, context)
        except Exception:
            log.exception("listener of %s raised on %d messages; reconsume later",
                          self.group, len(msgs))
            return RECONSUME_LATER
        if status is CONSUME_SUCCESS or status is ConsumeOrderlyStatus.SUCCESS:
            return CONSUME_SUCCESS
        if status is not RECONSUME_LATER and status is not (
            ConsumeOrderlyStatus.SUSPEND_CURRENT_QUEUE_A_MOMENT
        ):
            log.error("listener of %s returned %r; reconsume later", self.group, status)
        return RECONSUME_LATER

    def _expire_stuck(self, now: float) -> None:
        """Batches consumed for longer than consume_timeout: returned for later."""
        if self._orderly:
            return
        expired = []
        with self._running_lock:
            for chunk, entry in list(self._running.items()):
                if entry[0] is not None and now - entry[0] > self.consume_timeout:
                    entry[4] = True
                    expired.append(self._running.pop(chunk))
        for _, pq, messages, first, _ in expired:
            log.warning("consumer %s: %d messages of %s consumed for over %ss; "
                        "returned for later", self.group, len(messages), pq.mq,
                        self.consume_timeout)
            if not pq.dropped:
                failed = [m for m in messages if not self._send_back(m, 0)]
                if failed:
                    self._consume_later(pq, failed, first)
                    continue
            pq.done(first)
            self._commit_pq(pq)

    def _consume_later(self, pq: _ProcessQueue, messages: List[MessageExt], first: int) -> None:
        """Messages the store would not take back are consumed again here in 5 s;
        their chunk stays in flight meanwhile, so the offset does not pass them."""

        def again() -> None:
            if self._closed or pq.dropped:
                return
            chunk = next(self._chunk_ids)
            with self._running_lock:
                self._running[chunk] = [None, pq, messages, first, False]
            self._submit(self._consume_chunk, chunk)

        timer = threading.Timer(5.0, again)
        timer.daemon = True
        self._timers = [t for t in self._timers if t.is_alive()] + [timer]
        timer.start()

    def _send_back(self, msg: MessageExt, delay_level: int) -> bool:
        """RocketMQ's consumerSendMsgBack: to the retry topic with a delay, or to the
        dead-letter queue after max_reconsume_times. False when the store refused."""
        if self.model is MessageModel.BROADCASTING:
            log.warning("broadcast consumer %s dropped %s after a failure", self.group,
                        msg.uniq_key or msg.msg_id)
            return True
        properties = dict(msg.properties)
        properties.setdefault(PROPERTY_RETRY_TOPIC, msg.topic)
        properties.setdefault(PROPERTY_ORIGIN_MESSAGE_ID, msg.msg_id)
        properties[PROPERTY_WAIT_STORE_MSG_OK] = "false"
        times = msg.reconsume_times
        if times >= self.max_reconsume_times or delay_level < 0:
            topic = DLQ_GROUP_TOPIC_PREFIX + self.group
            properties.pop(PROPERTY_DELAY_TIME_LEVEL, None)
        else:
            topic = RETRY_GROUP_TOPIC_PREFIX + self.group
            properties[PROPERTY_DELAY_TIME_LEVEL] = str(delay_level or 3 + times)
        self.store.topic_manager.ensure(topic, 1, PERM_READ_WRITE)
        copy_ = msg.derive(topic, properties, reconsume_times=times + 1)
        try:
            result = self.store.put(copy_, 0)
        except Exception as exc:
            log.error("sending %s back failed: %s", msg.msg_id, exc)
            return False
        if result.status not in (PutStatus.PUT_OK, PutStatus.FLUSH_DISK_TIMEOUT):
            log.error("sending %s back failed: %s", msg.msg_id, result.status.value)
            return False
        return True

    # -- orderly consumption ----------------------------------------------------------

    def _drain_orderly(self, pq: _ProcessQueue) -> None:
        try:
            self._drain_orderly_unsafe(pq)
        except Exception:
            log.exception("consumer %s: orderly consumption of %s failed", self.group, pq.mq)
            with pq.lock:
                pq.consuming = False

    def _drain_orderly_unsafe(self, pq: _ProcessQueue) -> None:
        context = ConsumeContext(pq.mq)
        while not self._closed and not pq.dropped:
            with pq.lock:
                batch = pq.buffer[: self.batch_size]
                if not batch:
                    pq.consuming = False
                    return
            wait = pq.suspended_until - time.monotonic()
            if wait > 0:
                self._drain_later(pq, wait)
                return
            shown = [_restore_retry_topic(m, self.group) for m in batch]
            status = self._call(shown, context)
            if status is CONSUME_SUCCESS:
                with self._running_lock:
                    self.consumed += len(batch)
                self._orderly_done(pq, len(batch))
                continue
            with self._running_lock:
                self.reconsumed += len(batch)
            if any(m.reconsume_times >= self.max_reconsume_times for m in batch):
                for m in batch:
                    self._send_back(m, -1)  # to the dead-letter queue
                self._orderly_done(pq, len(batch))
                continue
            for m in batch:
                m.reconsume_times += 1  # in memory, as RocketMQ's orderly service
            pq.suspended_until = time.monotonic() + self.suspend_seconds
        with pq.lock:
            pq.consuming = False

    def _orderly_done(self, pq: _ProcessQueue, count: int) -> None:
        with pq.lock:
            del pq.buffer[:count]
            offset = pq._committable()
        if not pq.dropped:
            self.offsets.commit(self.group, pq.mq.topic, pq.mq.queue_id, offset)

    def _drain_later(self, pq: _ProcessQueue, seconds: float) -> None:
        def again() -> None:
            if not self._closed:
                self._submit(self._drain_orderly, pq)

        timer = threading.Timer(seconds, again)
        timer.daemon = True
        self._timers = [t for t in self._timers if t.is_alive()] + [timer]
        timer.start()


class PullConsumer(_ConsumerBase):
    """RocketMQ's lite pull consumer: `poll()` returns messages of the assigned queues.

    `subscribe(topic, expr)` then `start()` shares queues with the group (CLUSTERING)
    or reads all (BROADCASTING); or `assign(queues)` picks queues by hand. With
    `auto_commit` (default) the offsets of what a poll returned are committed at the
    next poll and at shutdown; else call `commit()`. `stream()` is an async iterator.
    """

    def __init__(self, store: MessageStore, group: str, *, auto_commit: bool = True,
                 **options) -> None:
        super().__init__(store, group, **options)
        self.auto_commit = auto_commit
        self._polled: Dict[MessageQueue, int] = {}
        self._poll_lock = threading.Lock()
        self._rotation = 0
        self._last_rebalance = 0.0

    def start(self) -> PullConsumer:
        if self._closed:
            raise ClientClosedError(f"consumer {self.group} is shut down")
        if self._started:
            return self
        self._started = True
        if not self._manual:
            if self.model is MessageModel.CLUSTERING:
                self._registry.join(self)
            else:
                self._rebalance()
        return self

    def assign(self, queues: Iterable[MessageQueue]) -> None:
        """Read exactly these queues (no group rebalancing)."""
        queues = list(queues)
        for mq in queues:
            if not isinstance(mq, MessageQueue):
                raise TypeError(f"assign takes MessageQueues, got {mq!r}")
        self._manual = True
        wanted = {mq: self.subscriptions.get(mq.topic) or MessageSelector.by_tag("*")
                  for mq in queues}
        self._set_assignment(wanted)

    def shutdown(self) -> None:
        if self._closed:
            return
        if self.auto_commit:
            self.commit()
        self._closed = True
        self._wake()
        if self._started and not self._manual and self.model is MessageModel.CLUSTERING:
            self._registry.leave(self)
        if not self.store.closed:
            self.persist_offsets()

    def __enter__(self) -> PullConsumer:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.shutdown()

    def poll(self, timeout: float = 1.0) -> List[MessageExt]:
        """Up to `pull_batch_size` messages from the assigned, unpaused queues, waiting
        up to `timeout` seconds for some to arrive (woken by arrival, not polling)."""
        if self._closed:
            raise ClientClosedError(f"consumer {self.group} is shut down")
        if not self._started:
            self.start()
        deadline = time.monotonic() + max(0.0, timeout)
        with self._poll_lock:
            if self.auto_commit:
                self._commit_polled()
            while True:
                now = time.monotonic()
                if not self._manual and now - self._last_rebalance > 1.0:
                    self._last_rebalance = now
                    self._rebalance()
                with self._assign_lock:
                    queues = [pq for pq in self._queues.values() if not pq.paused]
                if queues:
                    self._rotation = (self._rotation + 1) % len(queues)
                    queues = queues[self._rotation :] + queues[: self._rotation]
                for pq in queues:
                    messages = self._pull(pq, self.pull_batch_size)
                    if messages:
                        self._polled[pq.mq] = pq.next_offset
                        return [_restore_retry_topic(m, self.group) for m in messages]
                    if pq.next_offset != self._polled.get(pq.mq, pq.next_offset):
                        self._polled[pq.mq] = pq.next_offset  # filtered: still progress
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._closed:
                    return []
                self.store.dispatcher.wait_for_arrival(
                    lambda queues=queues: self._closed or self._has_new(queues),
                    min(remaining, 0.5),
                )

    def _commit_polled(self) -> None:
        for mq, offset in list(self._polled.items()):  # a rebalance may pop entries
            pq = self._queues.get(mq)
            if pq is not None and not pq.dropped:
                self.offsets.commit(self.group, mq.topic, mq.queue_id, offset)
        self._polled.clear()

    def commit(self) -> None:
        """Commit the offsets of everything `poll` returned so far, and save them."""
        with self._poll_lock:
            self._commit_polled()
        self.offsets.persist()

    def _commit_pq(self, pq: _ProcessQueue) -> None:
        pass  # a pull consumer commits what poll returned, not what it fetched

    def _release_offset(self, pq: _ProcessQueue) -> Optional[int]:
        # A queue taken away keeps its committed offset: with auto-commit, what poll
        # returned is committed now; without, only commit() moves it (messages polled
        # but not committed are delivered again to the new owner).
        if self.auto_commit:
            return self._polled.pop(pq.mq, None)
        return None

    def persist_offsets(self) -> None:
        self.offsets.persist()

    def seek(self, mq: MessageQueue, offset: int) -> None:
        """Read `mq` from `offset` next (clamped into the queue)."""
        if type(offset) is not int or offset < 0:
            raise ValueError(f"offset must be an int >= 0, got {offset!r}")
        if mq not in self._queues:
            raise MQClientError(f"{mq} is not assigned to this consumer")
        high = self.store.max_offset(mq.topic, mq.queue_id)
        low = self.store.min_offset(mq.topic, mq.queue_id)
        with self._poll_lock:
            self._polled.pop(mq, None)
            self._seek_many({mq: min(max(offset, low), high)})

    def seek_by_time(self, mq: MessageQueue, timestamp_ms: int) -> int:
        """Seek to the first message stored at or after `timestamp_ms`; the offset."""
        offset = self.store.offset_by_time(mq.topic, mq.queue_id, timestamp_ms)
        self.seek(mq, offset)
        return offset

    def seek_to_begin(self, mq: MessageQueue) -> None:
        self.seek(mq, self.store.min_offset(mq.topic, mq.queue_id))

    def seek_to_end(self, mq: MessageQueue) -> None:
        self.seek(mq, self.store.max_offset(mq.topic, mq.queue_id))

    def pause(self, queues: Iterable[MessageQueue]) -> None:
        with self._assign_lock:
            for mq in queues:
                if mq in self._queues:
                    self._queues[mq].paused = True

    def resume(self, queues: Iterable[MessageQueue]) -> None:
        with self._assign_lock:
            for mq in queues:
                if mq in self._queues:
                    self._queues[mq].paused = False
        self._wake()

    async def stream(self, timeout: float = 1.0) -> AsyncIterator[MessageExt]:
        """``async for msg in consumer.stream()``: messages as they arrive, each
        `poll` run in the event loop's default executor (one call per batch)."""
        loop = asyncio.get_running_loop()
        while not self._closed:
            try:
                batch = await loop.run_in_executor(None, self.poll, timeout)
            except ClientClosedError:
                return
            for msg in batch:
                yield msg
