"""Producers: RocketMQ's producer model (topics, queue selection, sync / async / one-way
/ batch / ordered sends, delay levels, transactions) over an in-process MessageStore."""

from __future__ import annotations

import enum
import itertools
import logging
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import (
    TYPE_CHECKING,
    Any,
    Callable,
    Dict,
    Iterable,
    List,
    NamedTuple,
    Optional,
    Union,
)

from .. import codec
from ..errors import ClientClosedError, MQClientError, SendError, StoreClosedError
from ..message import (
    PROPERTY_DELAY_TIME_LEVEL,
    PROPERTY_UNIQ_CLIENT_MESSAGE_ID_KEYIDX,
    Message,
    MessageExt,
    UniqIdGenerator,
)
from ..results import PutResult, PutStatus
from ..topics import RETRY_GROUP_TOPIC_PREFIX, TopicConfig
from ..transaction import LocalTransactionState
from .validators import FORBIDDEN_PROPERTIES, check_group, check_send_topic

if TYPE_CHECKING:
    from ..store import MessageStore

log = logging.getLogger(__name__)

DEFAULT_MAX_MESSAGE_SIZE = 4 * 1024 * 1024
DEFAULT_BROKER_NAME = "mqstore"
_UNIQ = PROPERTY_UNIQ_CLIENT_MESSAGE_ID_KEYIDX


class SendStatus(enum.Enum):
    """Outcome of a send that stored the message (RocketMQ's SendStatus)."""

    SEND_OK = "SEND_OK"
    #: Stored, but SYNC_FLUSH did not confirm it on disk within sync_flush_timeout.
    FLUSH_DISK_TIMEOUT = "FLUSH_DISK_TIMEOUT"
    FLUSH_SLAVE_TIMEOUT = "FLUSH_SLAVE_TIMEOUT"
    SLAVE_NOT_AVAILABLE = "SLAVE_NOT_AVAILABLE"


class MessageQueue(NamedTuple):
    """One queue of a topic (RocketMQ's MessageQueue)."""

    topic: str
    broker_name: str
    queue_id: int


class SendResult:
    """What a send stored: status, client msg id (UNIQ_KEY), queue and queue offset."""

    __slots__ = ("send_status", "msg_id", "message_queue", "queue_offset", "_put")

    def __init__(
        self,
        send_status: SendStatus,
        msg_id: str,
        message_queue: MessageQueue,
        queue_offset: int,
        put: Any,
    ) -> None:
        self.send_status = send_status
        self.msg_id = msg_id
        self.message_queue = message_queue
        self.queue_offset = queue_offset
        self._put = put

    @property
    def offset_msg_id(self) -> str:
        """The store-side (offset) message id of the record."""
        return self._put.msg_id

    @property
    def commitlog_offset(self) -> int:
        return self._put.commitlog_offset

    def __repr__(self) -> str:
        return (
            f"SendResult({self.send_status.value}, msg_id={self.msg_id}, "
            f"queue={self.message_queue.topic}/{self.message_queue.queue_id}, "
            f"queue_offset={self.queue_offset})"
        )


class TransactionSendResult(SendResult):
    """A SendResult of the half message, with what the local transaction said."""

    __slots__ = ("local_transaction_state",)

    @property
    def transaction_id(self) -> str:
        return self.msg_id


_STATUS = {
    PutStatus.PUT_OK: SendStatus.SEND_OK,
    PutStatus.FLUSH_DISK_TIMEOUT: SendStatus.FLUSH_DISK_TIMEOUT,
    PutStatus.FLUSH_SLAVE_TIMEOUT: SendStatus.FLUSH_SLAVE_TIMEOUT,
    PutStatus.SLAVE_NOT_AVAILABLE: SendStatus.SLAVE_NOT_AVAILABLE,
}

Selector = Callable[[List[MessageQueue], Message, Any], Union[MessageQueue, int]]
QueueArg = Union[MessageQueue, int, None]


class _Route:
    """A topic's writable queues, as a producer sees them (cached per topic)."""

    __slots__ = ("config", "queues", "counter", "count")

    def __init__(self, config: TopicConfig, broker_name: str) -> None:
        self.config = config
        self.count = config.write_queue_nums
        self.queues = [
            MessageQueue(config.topic_name, broker_name, i) for i in range(self.count)
        ]
        self.counter = itertools.count()


def sharding_hash(key: Union[str, int]) -> int:
    """Java `hashCode()` of a sharding key (String or Integer/Long), so that the queue
    chosen by `send_orderly` matches RocketMQ's SelectMessageQueueByHash."""
    if isinstance(key, str):
        return codec.java_hash(key)
    if isinstance(key, int) and not isinstance(key, bool):
        if -(2**31) <= key < 2**31:
            return key
        value = key & 0xFFFFFFFFFFFFFFFF
        folded = (value ^ (value >> 32)) & 0xFFFFFFFF
        return folded - 2**32 if folded >= 2**31 else folded
    raise TypeError(f"sharding_key must be a str or int, got {type(key).__name__}")


class Producer:
    """Sends messages to a MessageStore the way a RocketMQ producer sends to a broker.

    ``Producer(store, group)`` is ready at once (`start()` exists for RocketMQ-shaped
    code and does nothing more). Sends are validated as RocketMQ's client does it
    (topic name, system topics, empty or oversize body, reserved property names,
    delay level) and refused with MQClientError before anything is written. Every
    message gets a UNIQ_KEY (kept when it already has one); `SendResult.msg_id` is it.

    Topics unknown to the store are created with `default_topic_queue_nums` queues on
    first send when the store's `auto_create_topic_enable` is on (the default).
    A failure of the store (disk full, size limit) raises SendError; nothing of the
    message is stored. `shutdown()` waits for async sends in flight; later sends raise
    ClientClosedError. Thread-safe: share one producer between threads.
    """

    def __init__(
        self,
        store: MessageStore,
        group: str,
        *,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
        async_send_threads: int = 4,
        broker_name: str = DEFAULT_BROKER_NAME,
    ) -> None:
        from ..store import MessageStore

        if not isinstance(store, MessageStore):
            raise TypeError(f"store must be a MessageStore, got {type(store).__name__}")
        self.store = store
        self.group = check_group(group, "producer")
        if type(max_message_size) is not int or max_message_size <= 0:
            raise ValueError(f"max_message_size must be a positive int, got {max_message_size!r}")
        if type(async_send_threads) is not int or async_send_threads <= 0:
            raise ValueError(
                f"async_send_threads must be a positive int, got {async_send_threads!r}"
            )
        self.max_message_size = max_message_size
        self.broker_name = broker_name
        self._async_threads = async_send_threads
        self._executor: Optional[ThreadPoolExecutor] = None
        self._executor_lock = threading.Lock()
        self._routes: Dict[str, _Route] = {}
        self._topic_configs = store.topic_manager._topics
        self._levels = len(store.config.delay_levels_ms)
        self._ids = UniqIdGenerator(_host_ip(store.config.born_host or store.config.store_host))
        self._closed = False

    # -- lifecycle ----------------------------------------------------------------

    def start(self) -> Producer:
        """Nothing to do: a Producer is usable once constructed. Returns self."""
        self._check_open()
        return self

    def shutdown(self) -> None:
        """Finish async sends in flight, then refuse further sends. Idempotent."""
        self._closed = True
        executor = self._executor
        if executor is not None:
            executor.shutdown(wait=True)

    def __enter__(self) -> Producer:
        return self

    def __exit__(self, *exc_info) -> None:
        self.shutdown()

    def _check_open(self) -> None:
        if self._closed:
            raise ClientClosedError(f"producer {self.group} is shut down")
        if self.store.closed:
            raise ClientClosedError(f"store {self.store.path} is closed")

    # -- queues ---------------------------------------------------------------------

    def queues(self, topic: str) -> List[MessageQueue]:
        """The writable queues of `topic` (created if auto-creation is on)."""
        return list(self._route(topic).queues)

    def _route(self, topic: str) -> _Route:
        route = self._routes.get(topic)
        if route is not None and self._topic_configs.get(topic) is route.config:
            return route
        check_send_topic(topic)
        try:
            config = self.store._writable_topic(topic, self.store.config.default_topic_queue_nums)
        except (ClientClosedError, StoreClosedError):
            self._check_open()  # the store was closed: ClientClosedError
            raise
        except Exception as exc:
            raise MQClientError(str(exc)) from None
        if not config.writable:
            raise MQClientError(f"topic {topic} is not writable (perm {config.perm})")
        route = self._routes[topic] = _Route(config, self.broker_name)
        return route

    def _select(
        self, route: _Route, msg: Message, queue: QueueArg, selector: Optional[Selector], arg
    ) -> int:
        if queue is None and selector is None:
            return next(route.counter) % route.count
        if selector is not None:
            queue = selector(list(route.queues), msg, arg)
        if isinstance(queue, MessageQueue):
            if queue.topic != route.config.topic_name:
                raise MQClientError(
                    f"queue {queue} belongs to {queue.topic}, not {route.config.topic_name}"
                )
            queue = queue.queue_id
        if type(queue) is not int:
            raise TypeError(f"a queue must be a MessageQueue or an int, got {queue!r}")
        if not 0 <= queue < route.count:
            raise MQClientError(
                f"queue {queue} does not exist: {route.config.topic_name} has {route.count}"
            )
        return queue

    # -- validation -------------------------------------------------------------------

    def _prepare(self, msg: Message) -> _Route:
        """Validate `msg` for sending; its topic's route (the topic is auto-created
        only for a valid message). `_assign_id` gives it its UNIQ_KEY afterwards."""
        if self._closed or self.store._closed:
            self._check_open()
        if not isinstance(msg, Message):
            raise TypeError(f"send takes a Message, got {type(msg).__name__}")
        self._check_message(msg)
        route = self._routes.get(msg.topic)
        if route is None or self._topic_configs.get(msg.topic) is not route.config:
            route = self._route(msg.topic)
        return route

    def _check_message(self, msg: Message) -> None:
        body = msg.body
        size = len(body) if body.__class__ is bytes else memoryview(body).nbytes
        if not 0 < size <= self.max_message_size:
            if size == 0:
                raise MQClientError("message body is empty")
            raise MQClientError(
                f"message body is {size} bytes, more than max_message_size "
                f"{self.max_message_size}"
            )
        props = msg._props()
        if props:
            for name in props:
                if name in FORBIDDEN_PROPERTIES:
                    raise MQClientError(
                        f"property {name!r} is reserved for the system; use another name"
                    )
            if PROPERTY_DELAY_TIME_LEVEL in props:
                self._check_delay(props[PROPERTY_DELAY_TIME_LEVEL])

    def _assign_id(self, msg: Message) -> None:
        """Give a validated message a UNIQ_KEY unless it has one (a resend keeps it)."""
        props = msg._props()
        if _UNIQ not in props:
            props[_UNIQ] = self._ids.next_id()
            msg._encoded = None

    def _check_delay(self, text: str) -> None:
        level = int(text) if text.lstrip("-").isdigit() else None
        if level is None or not 0 <= level <= self._levels:
            raise MQClientError(
                f"delay level {text} is outside the store's table (1..{self._levels})"
            )

    # -- sends ----------------------------------------------------------------------

    def send(
        self,
        msg: Message,
        selector: Optional[Selector] = None,
        arg: Any = None,
        *,
        queue: QueueArg = None,
    ) -> SendResult:
        """Store `msg` and return its SendResult. The queue is chosen round-robin,
        by `selector(queues, msg, arg)` (returning a MessageQueue or queue id), or
        given as `queue`."""
        route = self._prepare(msg)
        if queue is None and selector is None:
            queue_id = next(route.counter) % route.count
        else:
            queue_id = self._select(route, msg, queue, selector, arg)
        self._assign_id(msg)
        put = self.store.put(msg, queue_id)
        status = _STATUS.get(put.status)
        if status is None:
            raise _send_error(put)
        return SendResult(
            status, msg._properties[_UNIQ], route.queues[queue_id], put.queue_offset, put
        )

    def send_orderly(self, msg: Message, sharding_key: Union[str, int]) -> SendResult:
        """Send to the queue chosen by the sharding key's Java hash (RocketMQ's
        SelectMessageQueueByHash): messages with one key go to one queue, in the order
        their sends return."""
        route = self._prepare(msg)
        return self.send(msg, queue=abs(sharding_hash(sharding_key)) % route.count)

    def send_oneway(
        self, msg: Message, selector: Optional[Selector] = None, arg: Any = None, *,
        queue: QueueArg = None,
    ) -> None:
        """Store `msg` without waiting for a flush or returning a result. Bad input
        still raises; a store failure is logged, not raised (as a one-way send
        cannot report it)."""
        route = self._prepare(msg)
        queue_id = self._select(route, msg, queue, selector, arg)
        self._assign_id(msg)
        props = msg._properties
        before = props.get("WAIT")
        props["WAIT"] = "false"  # nobody waits for the flush
        msg._encoded = None
        try:
            put = self.store.put(msg, queue_id)
        finally:
            if before is None:
                del props["WAIT"]
            else:
                props["WAIT"] = before
            msg._encoded = None
        if put.status not in _STATUS:
            log.warning("one-way send of %s failed: %s", msg._properties[_UNIQ], _send_error(put))

    def send_async(
        self,
        msg: Message,
        callback: Optional[Callable[[SendResult], Any]] = None,
        on_exception: Optional[Callable[[BaseException], Any]] = None,
        selector: Optional[Selector] = None,
        arg: Any = None,
        *,
        queue: QueueArg = None,
    ) -> Future:
        """Send on the producer's thread pool; returns a Future of the SendResult.
        `callback(result)` or `on_exception(exc)` runs on that thread before the
        Future completes; an exception in either is logged and does not change the
        send's outcome. Bad input raises here, at once. Order between async sends is
        not guaranteed."""
        route = self._prepare(msg)
        queue_id = self._select(route, msg, queue, selector, arg)
        self._assign_id(msg)
        executor = self._executor or self._make_executor()
        try:
            return executor.submit(self._send_task, msg, route, queue_id, callback, on_exception)
        except RuntimeError:  # executor shut down by a concurrent shutdown()
            raise ClientClosedError(f"producer {self.group} is shut down") from None

    def _make_executor(self) -> ThreadPoolExecutor:
        with self._executor_lock:
            self._check_open()
            if self._executor is None:
                self._executor = ThreadPoolExecutor(
                    self._async_threads, thread_name_prefix=f"mqstore-send-{self.group}"
                )
            return self._executor

    def _send_task(self, msg, route: _Route, queue_id: int, callback, on_exception):
        try:
            put = self.store.put(msg, queue_id)
            status = _STATUS.get(put.status)
            if status is None:
                raise _send_error(put)
        except BaseException as exc:
            if on_exception is not None:
                try:
                    on_exception(exc)
                except Exception:
                    log.exception("on_exception callback of an async send raised")
            raise
        result = SendResult(
            status, msg._properties[_UNIQ], route.queues[queue_id], put.queue_offset, put
        )
        if callback is not None:
            try:
                callback(result)
            except Exception:
                log.exception("callback of async send %s raised; the send succeeded",
                              result.msg_id)
        return result

    def send_batch(self, msgs: Iterable[Message], *, queue: QueueArg = None) -> SendResult:
        """Store messages of one topic to one queue atomically: all or none. Each gets
        a UNIQ_KEY; `msg_id` of the result joins them with commas (RocketMQ), and
        `queue_offset` is the first message's. MQClientError when any message is
        invalid, carries a delay level, or the topic is a retry topic."""
        if self._closed or self.store._closed:
            self._check_open()
        msgs = list(msgs)
        if not msgs:
            raise MQClientError("a batch needs at least one message")
        topic = msgs[0].topic if isinstance(msgs[0], Message) else None
        for msg in msgs:
            if not isinstance(msg, Message):
                raise TypeError(f"send_batch takes Messages, got {type(msg).__name__}")
            if msg.topic != topic:
                raise MQClientError(
                    f"a batch must have one topic: {topic!r} and {msg.topic!r}"
                )
            if msg.delay_level > 0:
                raise MQClientError("a batch cannot carry a delay level")
        if topic.startswith(RETRY_GROUP_TOPIC_PREFIX):
            raise MQClientError("a batch cannot be sent to a retry topic")
        for msg in msgs:  # every message valid before the topic may be auto-created
            self._check_message(msg)
        route = self._prepare(msgs[0])
        queue_id = self._select(route, msgs[0], queue, None, None)
        had_uniq = [_UNIQ in msg._props() for msg in msgs]
        for msg in msgs:
            self._assign_id(msg)
        result = self.store.put_batch(msgs, queue_id)
        status = _STATUS.get(result.status)
        if status is None:
            for msg, had in zip(msgs, had_uniq):  # nothing stored: leave them as they came
                if not had:
                    del msg._properties[_UNIQ]
                    msg._encoded = None
            raise SendError(
                f"batch refused by the store: {result.status.value}"
                + (f" ({result.error})" if result.error else ""),
                result.status,
            )
        first = result[0]
        msg_id = ",".join(msg._properties[_UNIQ] for msg in msgs)
        return SendResult(status, msg_id, route.queues[queue_id], first.queue_offset, first)


class TransactionProducer(Producer):
    """A Producer that also sends transactional messages.

    ``TransactionProducer(store, group, check=fn)``: `fn(msg)` answers a check-back
    for a transaction left in doubt (a MessageExt with its real topic; returns a
    LocalTransactionState). One per group in a store.
    """

    def __init__(
        self, store: MessageStore, group: str, *, check: Callable[[MessageExt], Any], **options
    ) -> None:
        if check is None or not callable(check):
            raise TypeError("a TransactionProducer needs a check function: check(msg) -> state")
        super().__init__(store, group, **options)
        if store.transactions is None:
            raise MQClientError(f"store {store.path} is read-only: no transactions")
        self.check = check
        store.transactions.register_checker(self.group, check, self._make_executor())

    def shutdown(self) -> None:
        if not self._closed and self.store.transactions is not None:
            self.store.transactions.unregister_checker(self.group)
        super().shutdown()

    def send_in_transaction(
        self, msg: Message, execute: Callable[[Message, Any], Any], arg: Any = None
    ) -> TransactionSendResult:
        """Store `msg` as a half message (invisible to consumers), run
        `execute(msg, arg)` (the local transaction), then commit (the message becomes
        visible), roll back (it never will) or, for UNKNOW, leave it to the check-back.
        An exception from `execute`, or a return that is not a LocalTransactionState,
        counts as UNKNOW and is logged. A delay level is ignored, as in RocketMQ."""
        if not callable(execute):
            raise TypeError("execute must be callable: execute(msg, arg) -> state")
        if msg.delay_level if isinstance(msg, Message) else False:
            msg.remove_property(PROPERTY_DELAY_TIME_LEVEL)
        route = self._prepare(msg)
        queue_id = next(route.counter) % route.count
        self._assign_id(msg)
        put = self.store.transactions.prepare(msg, queue_id, self.group)
        status = _STATUS.get(put.status)
        if status is None:
            raise _send_error(put)
        half = self.store.look_by_offset(put.commitlog_offset)
        try:
            state = execute(msg, arg)
        except Exception:
            log.exception("local transaction of %s raised; state UNKNOW", msg._properties[_UNIQ])
            state = LocalTransactionState.UNKNOW
        if not isinstance(state, LocalTransactionState):
            log.error("local transaction of %s returned %r; state UNKNOW",
                      msg._properties[_UNIQ], state)
            state = LocalTransactionState.UNKNOW
        self.store.transactions.end(half, state)
        result = TransactionSendResult(
            status, msg._properties[_UNIQ], route.queues[queue_id], put.queue_offset, put
        )
        result.local_transaction_state = state
        return result


def _send_error(put: PutResult) -> SendError:
    reason = f" ({put.error})" if getattr(put, "error", None) else ""
    return SendError(f"store refused the message: {put.status.value}{reason}", put.status)


def _host_ip(host: str) -> str:
    if host.startswith("["):
        return host[1:].partition("]")[0]
    return host.rpartition(":")[0]


__all__ = [
    "MessageQueue",
    "Producer",
    "SendResult",
    "SendStatus",
    "TransactionProducer",
    "TransactionSendResult",
    "sharding_hash",
]
