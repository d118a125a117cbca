"""Transactional messages, stored as a RocketMQ 4.9.8 broker stores them.

- prepare: a *half message* in RMQ_SYS_TRANS_HALF_TOPIC queue 0, with REAL_TOPIC /
  REAL_QID and the transaction type reset to NOT, so no consumer of the real topic
  sees it.
- commit: a copy in the real topic and queue (type COMMIT, PREPARED TRANSACTION OFFSET
  = the half's CommitLog offset, properties string unchanged), then an *op message*.
- rollback: only the op message.
- op message: RMQ_SYS_TRANS_OP_HALF_TOPIC, same queue as the half, tag ``d``, body the
  half's queue offset in decimal. A half with an op message is resolved.

A check pass (every `transaction_check_interval` ms) walks the half queue from the
progress of group CID_RMQ_SYS_TRANS (kept in consumerOffset.json, as a broker does).
A half in doubt for longer than `transaction_timeout` is re-appended with
TRANSACTION_CHECK_TIMES + 1 and its producer group's checker is asked; after
`transaction_check_max` checks it is moved to TRANS_CHECK_MAX_TIME_TOPIC and dropped.
A broker reading these files therefore agrees on each transaction's state.
"""

from __future__ import annotations

import copy
import enum
import logging
import threading
from concurrent.futures import Executor
from typing import TYPE_CHECKING, Callable, Dict, Optional, Set, Tuple

from . import codec
from .errors import MQStoreError
from .message import (
    PROPERTY_PRODUCER_GROUP,
    PROPERTY_REAL_QUEUE_ID,
    PROPERTY_REAL_TOPIC,
    PROPERTY_TRANSACTION_PREPARED,
    PROPERTY_UNIQ_CLIENT_MESSAGE_ID_KEYIDX,
    PROPERTY_WAIT_STORE_MSG_OK,
    Message,
    MessageExt,
    encode_properties,
)
from .results import GetStatus, PutResult, PutStatus
from .topics import TRANS_CHECK_MAX_TIME_TOPIC, TRANS_HALF_TOPIC, TRANS_OP_HALF_TOPIC

if TYPE_CHECKING:
    from .store import MessageStore

log = logging.getLogger(__name__)

SYSTEM_GROUP = "CID_RMQ_SYS_TRANS"
OP_TAG = "d"
PROPERTY_TRANSACTION_CHECK_TIMES = "TRANSACTION_CHECK_TIMES"
PROPERTY_CHECK_IMMUNITY_TIME = "CHECK_IMMUNITY_TIME_IN_SECONDS"
#: On a half put back to the half queue during its immunity time: the queue offset of
#: the original half (an op message naming that offset resolves the copy too).
PROPERTY_PREPARED_QUEUE_OFFSET = "TRAN_PREPARED_QUEUE_OFFSET"
HALF_QUEUE_ID = 0


class LocalTransactionState(enum.Enum):
    """What a local transaction says about its message (RocketMQ's names)."""

    COMMIT_MESSAGE = "COMMIT_MESSAGE"
    ROLLBACK_MESSAGE = "ROLLBACK_MESSAGE"
    UNKNOW = "UNKNOW"


Checker = Callable[[MessageExt], LocalTransactionState]


class TransactionService:
    """Half messages, commit / rollback and check-backs of one store."""

    def __init__(self, store: MessageStore) -> None:
        self.store = store
        self._checkers: Dict[str, Tuple[Checker, Optional[Executor]]] = {}
        # One pass at a time; re-entrant so the store's close() can tell that a checker
        # called from a pass on this thread is inside one.
        self._pass_lock = threading.RLock()
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        #: Check-backs asked, and halves dropped after the max, since open.
        self.checks = 0
        self.dropped = 0

    # -- lifecycle -----------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="mqstore-tx-check", daemon=True)
        self._thread.start()

    def shutdown(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()

    def inside(self) -> bool:
        """True on the check thread, or in a check pass on this thread (a checker
        running inline)."""
        return self._thread is threading.current_thread() or self._pass_lock._is_owned()

    def _run(self) -> None:
        interval = self.store.config.transaction_check_interval / 1000
        while not self._stop.wait(interval):
            try:
                self.check_now()
            except MQStoreError as exc:
                log.warning("transaction check pass stopped: %s", exc)
            except Exception:
                log.exception("transaction check pass failed")

    def register_checker(self, group: str, checker: Checker, executor: Optional[Executor]) -> None:
        """Route check-backs of `group`'s transactions to `checker` (run on `executor`,
        or inline). One checker per group; ValueError for a second."""
        if group in self._checkers:
            raise ValueError(f"producer group {group!r} already has a transaction checker")
        self._checkers[group] = (checker, executor)

    def unregister_checker(self, group: str) -> None:
        self._checkers.pop(group, None)

    # -- the three record kinds -------------------------------------------------------

    def prepare(self, msg: Message, queue_id: int, group: str) -> PutResult:
        """Store `msg`, sent by producer `group` to `queue_id`, as a half message."""
        properties = dict(msg.properties)
        properties[PROPERTY_TRANSACTION_PREPARED] = "true"
        properties[PROPERTY_PRODUCER_GROUP] = group
        properties[PROPERTY_REAL_TOPIC] = msg.topic
        properties[PROPERTY_REAL_QUEUE_ID] = str(queue_id)
        properties[PROPERTY_WAIT_STORE_MSG_OK] = "true"
        half = msg.derive(
            TRANS_HALF_TOPIC, properties,
            sys_flag=msg.sys_flag & ~codec.TRANSACTION_TYPE_MASK & ~0x30,
        )
        return self.store.put(half, HALF_QUEUE_ID)

    def end(self, half: MessageExt, state: LocalTransactionState) -> Optional[PutResult]:
        """Commit or roll back the transaction of a stored half message; UNKNOW leaves
        it in doubt. Returns the commit's PutResult (None for rollback / unknown)."""
        if state is LocalTransactionState.UNKNOW:
            return None
        result = None
        if state is LocalTransactionState.COMMIT_MESSAGE:
            properties = half.properties
            sys_flag = (half.sys_flag & ~codec.TRANSACTION_TYPE_MASK) | (
                codec.TRANSACTION_COMMIT_TYPE
            )
            result = self.store._repost(
                half,
                properties[PROPERTY_REAL_TOPIC],
                int(properties[PROPERTY_REAL_QUEUE_ID]),
                sys_flag=sys_flag,
                prepared_offset=half.commitlog_offset,
                wait=False,
            )
            if result.status not in (PutStatus.PUT_OK, PutStatus.FLUSH_DISK_TIMEOUT):
                raise MQStoreError(
                    f"commit of transaction {half.uniq_key} failed: {result.status.value}"
                    + (f" ({result.error})" if result.error else "")
                )
        elif state is not LocalTransactionState.ROLLBACK_MESSAGE:
            raise TypeError(f"state must be a LocalTransactionState, got {state!r}")
        self._write_op(half)
        return result

    def _write_op(self, half: MessageExt) -> None:
        op = Message(
            TRANS_OP_HALF_TOPIC,
            str(half.queue_offset).encode("ascii"),
            properties={"TAGS": OP_TAG, PROPERTY_WAIT_STORE_MSG_OK: "true"},
            born_host=self.store.config.store_host,
        )
        result = self.store.put(op, half.queue_id)
        if result.status not in (PutStatus.PUT_OK, PutStatus.FLUSH_DISK_TIMEOUT):
            raise MQStoreError(f"op message for half {half.queue_offset} failed: {result.status}")

    # -- check-back -------------------------------------------------------------------

    def resolved_half_offsets(self, from_op_offset: int = 0) -> Set[int]:
        """Queue offsets of half messages that have an op message."""
        done: Set[int] = set()
        store = self.store
        offset = max(from_op_offset, store.min_offset(TRANS_OP_HALF_TOPIC, HALF_QUEUE_ID))
        end = store.max_offset(TRANS_OP_HALF_TOPIC, HALF_QUEUE_ID)
        while offset < end:
            got = store.get(TRANS_OP_HALF_TOPIC, HALF_QUEUE_ID, offset, 32)
            for message in got.messages:
                if message.tags != OP_TAG:
                    continue
                for part in message.body.decode("ascii", "replace").split(","):
                    if part.strip().isdigit():
                        done.add(int(part))
            if got.next_begin_offset <= offset:
                break
            offset = got.next_begin_offset
        return done

    def check_now(self, now: Optional[int] = None) -> int:
        """Run one check pass; returns how many halves were checked back or dropped."""
        with self._pass_lock:
            return self._check_pass(self.store.config.clock() if now is None else now)

    def _check_pass(self, now: int) -> int:
        store = self.store
        config = store.config
        offsets = store.consumer_offsets
        half_offset = offsets.query(SYSTEM_GROUP, TRANS_HALF_TOPIC, HALF_QUEUE_ID)
        half_offset = max(half_offset, store.min_offset(TRANS_HALF_TOPIC, HALF_QUEUE_ID))
        end = store.max_offset(TRANS_HALF_TOPIC, HALF_QUEUE_ID)
        if half_offset >= end:
            return 0
        op_offset = max(0, offsets.query(SYSTEM_GROUP, TRANS_OP_HALF_TOPIC, HALF_QUEUE_ID))
        done = self.resolved_half_offsets(op_offset)
        all_done: Optional[Set[int]] = None  # every op, read only if a put-back needs it
        acted = 0
        while half_offset < end:
            if half_offset in done:
                half_offset += 1
                continue
            got = store.get(TRANS_HALF_TOPIC, HALF_QUEUE_ID, half_offset, 1)
            if got.status is not GetStatus.FOUND:
                if got.next_begin_offset > half_offset:
                    half_offset = got.next_begin_offset
                    continue
                break
            half = got.messages[0]
            properties = half.properties
            checks = int(properties.get(PROPERTY_TRANSACTION_CHECK_TIMES, "0") or 0)
            if checks >= config.transaction_check_max or (
                now - half.born_timestamp > config.file_reserved_time * 3_600_000
            ):
                self._drop(half, checks)
                acted += 1
                half_offset += 1
                continue
            timeout = config.transaction_timeout
            immunity = properties.get(PROPERTY_CHECK_IMMUNITY_TIME)
            if immunity and immunity.isdigit():
                # RocketMQ: an immunity time is never shorter than the timeout, and a
                # half still immune is put back at the end of the half queue (with
                # its original's offset) instead of holding back the halves behind it.
                timeout = max(timeout, int(immunity) * 1000)
                original = properties.get(PROPERTY_PREPARED_QUEUE_OFFSET, "")
                if original.isdigit():
                    if int(original) not in done and all_done is None:
                        all_done = self.resolved_half_offsets(0)
                    if int(original) in done or int(original) in (all_done or ()):
                        half_offset += 1  # the original was committed or rolled back
                        continue
                if now - half.born_timestamp < timeout:
                    self._put_back(half)
                    half_offset += 1
                    continue
            elif now - half.born_timestamp < timeout:
                break  # later halves are younger
            self._check_back(half, checks + 1)
            acted += 1
            half_offset += 1
        offsets.commit(SYSTEM_GROUP, TRANS_HALF_TOPIC, HALF_QUEUE_ID, half_offset)
        offsets.commit(
            SYSTEM_GROUP,
            TRANS_OP_HALF_TOPIC,
            HALF_QUEUE_ID,
            self._op_progress(op_offset, half_offset),
        )
        offsets.persist()
        return acted

    def _op_progress(self, op_offset: int, half_offset: int) -> int:
        """How far op messages are fully used: past every op naming a half below the
        half progress (RocketMQ keeps the op offset just as conservatively)."""
        store = self.store
        offset = max(op_offset, store.min_offset(TRANS_OP_HALF_TOPIC, HALF_QUEUE_ID))
        end = store.max_offset(TRANS_OP_HALF_TOPIC, HALF_QUEUE_ID)
        while offset < end:
            got = store.get(TRANS_OP_HALF_TOPIC, HALF_QUEUE_ID, offset, 1)
            if got.status is not GetStatus.FOUND:
                break
            parts = [p for p in got.messages[0].body.decode("ascii", "replace").split(",")
                     if p.strip().isdigit()]
            if any(int(p) >= half_offset for p in parts):
                break
            offset += 1
        return offset

    def _put_back(self, half: MessageExt) -> None:
        """Re-append a half still in its immunity time, marked with its original's
        queue offset (RocketMQ's putImmunityMsgBackToHalfQueue)."""
        properties = dict(half.properties)
        properties.setdefault(PROPERTY_PREPARED_QUEUE_OFFSET, str(half.queue_offset))
        result = self.store._repost(
            half, TRANS_HALF_TOPIC, HALF_QUEUE_ID, properties=encode_properties(properties),
            wait=False,
        )
        if result.status not in (PutStatus.PUT_OK, PutStatus.FLUSH_DISK_TIMEOUT):
            raise MQStoreError(f"put-back of half {half.queue_offset} failed: {result.status}")

    def _check_back(self, half: MessageExt, checks: int) -> None:
        """Re-append the half with its check count and ask its producer group."""
        properties = dict(half.properties)
        properties[PROPERTY_TRANSACTION_CHECK_TIMES] = str(checks)
        result = self.store._repost(
            half, TRANS_HALF_TOPIC, HALF_QUEUE_ID, properties=encode_properties(properties),
            wait=False,
        )
        if result.status not in (PutStatus.PUT_OK, PutStatus.FLUSH_DISK_TIMEOUT):
            raise MQStoreError(f"re-append of half {half.queue_offset} failed: {result.status}")
        renewed = self.store.look_by_offset(result.commitlog_offset)
        group = properties.get(PROPERTY_PRODUCER_GROUP, "")
        entry = self._checkers.get(group)
        self.checks += 1
        if entry is None:
            log.warning("transaction %s of group %r in doubt, and no checker registered",
                        half.uniq_key, group)
            return
        checker, executor = entry
        if executor is None:
            self._ask(checker, renewed)
        else:
            try:
                executor.submit(self._ask, checker, renewed)
            except RuntimeError:  # the producer shut down meanwhile
                log.warning("transaction %s: checker of %r is shut down", half.uniq_key, group)

    def _ask(self, checker: Checker, half: MessageExt) -> None:
        shown = _as_original(half)
        try:
            state = checker(shown)
        except Exception:
            log.exception("transaction checker raised for %s; treated as UNKNOW", half.uniq_key)
            return
        if not isinstance(state, LocalTransactionState):
            log.error("transaction checker returned %r for %s; treated as UNKNOW",
                      state, half.uniq_key)
            return
        try:
            self.end(half, state)
        except MQStoreError as exc:
            log.warning("transaction %s: %s", half.uniq_key, exc)

    def _drop(self, half: MessageExt, checks: int) -> None:
        result = self.store._repost(half, TRANS_CHECK_MAX_TIME_TOPIC, 0, wait=False)
        self.dropped += 1
        log.warning("transaction %s dropped after %d checks (to %s: %s)", half.uniq_key, checks,
                    TRANS_CHECK_MAX_TIME_TOPIC, result.status.value)


def _as_original(half: MessageExt) -> MessageExt:
    """A copy of the half message as its producer sent it: real topic and queue."""
    half = copy.copy(half)
    properties = half.properties
    half.topic = properties.get(PROPERTY_REAL_TOPIC, half.topic)
    real_qid = properties.get(PROPERTY_REAL_QUEUE_ID, "")
    if real_qid.isdigit():
        half.queue_id = int(real_qid)
    return half


def transaction_id(msg: Message) -> Optional[str]:
    """The id of a transaction: its message's UNIQ_KEY."""
    return msg.properties.get(PROPERTY_UNIQ_CLIENT_MESSAGE_ID_KEYIDX)

