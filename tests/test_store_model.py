"""Model-based test of the read side: a hypothesis state machine drives a MessageStore
(small CommitLog, ConsumeQueue and index files, so all of them roll often; an injected
clock, so store times are known) and a plain-Python model side by side, and checks
every read against what the model predicts.

The model of `get` follows RocketMQ 4.9.8's getMessage (format doc §17.1): statuses
in the table's order; units are scanned from the offset to the end of that one
ConsumeQueue file; a unit counts when its tag matches (tag hash, then the exact tag,
so the colliding "Aa"/"BB" never pass for each other); scanning stops once
min(max_msgs, 32) messages are collected; `next_begin_offset` counts every scanned
unit, filtered ones too.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from mqstore import Message, MessageStore, java_hash
from mqstore.results import GetStatus

TOPICS = ["T1", "T2", "%RETRY%g"]
# Skewed towards T1/0 so that one queue grows past a ConsumeQueue file and the
# 32-message cap while the others stay short or empty.
TOPIC = st.one_of(st.just("T1"), st.sampled_from(TOPICS))
QUEUE_IDS = st.one_of(st.just(0), st.integers(0, 3))
TAGS = [None, "A", "B", "Aa", "BB"]
KEY_POOL = ["k1", "k2", "Aa", "BB"]  # T#Aa and T#BB have the same Java hash
FILTERS = [None, "*", "A", "A || B", "Aa", "BB", " B||Aa "]
START_MS = 1_700_000_000_000
MAX_TRANSFER_COUNT = 32  # max_transfer_count_on_message_in_memory (default)
MAX_MSGS_NUM_BATCH = 64  # query cap (default)
SETTLE_TIMEOUT = 5.0

assert java_hash("Aa") == java_hash("BB")
assert java_hash("T1#Aa") == java_hash("T1#BB")


@dataclass
class Stored:
    topic: str
    queue_id: int
    queue_offset: int
    tags: Optional[str]
    keys: List[str]
    body: bytes
    store_timestamp: int
    commitlog_offset: int
    msg_id: str


def filter_names(expression: Optional[str]):
    """The exact tags a filter expression lets through; None = everything."""
    if expression is None or expression.strip() == "*":
        return None
    return {piece.strip() for piece in expression.split("||")}


def predict_get(msgs: List[Stored], offset: int, max_msgs: int, names, units_per_file: int):
    """(status, messages, next_begin_offset, min_offset, max_offset) per §17.1."""
    n = len(msgs)
    if n == 0:
        return GetStatus.NO_MESSAGE_IN_QUEUE, [], 0, 0, 0
    if offset == n:
        return GetStatus.OFFSET_OVERFLOW_ONE, [], offset, 0, n
    if offset > n:
        return GetStatus.OFFSET_OVERFLOW_BADLY, [], n, 0, n
    file_end = min(n, (offset // units_per_file + 1) * units_per_file)
    limit = min(max_msgs, MAX_TRANSFER_COUNT)
    found: List[Stored] = []
    position = offset
    while position < file_end and len(found) < limit:
        msg = msgs[position]
        position += 1
        if names is None or msg.tags in names:
            found.append(msg)
    status = GetStatus.FOUND if found else GetStatus.NO_MATCHED_MESSAGE
    return status, found, position, 0, n


def same_message(actual, expected: Stored, context: str) -> None:
    got = (actual.topic, actual.queue_id, actual.queue_offset, actual.tags, actual.keys,
           bytes(actual.body), actual.store_timestamp, actual.commitlog_offset, actual.msg_id)
    want = (expected.topic, expected.queue_id, expected.queue_offset, expected.tags,
            expected.keys, expected.body, expected.store_timestamp, expected.commitlog_offset,
            expected.msg_id)
    assert got == want, f"{context}: got {got!r}, expected {want!r}"


message_spec = st.tuples(
    st.sampled_from(TAGS),
    st.lists(st.sampled_from(KEY_POOL), max_size=2, unique=True),
    st.binary(max_size=300),
)
time_step = st.integers(0, 3000)
MAX_MSGS = st.sampled_from([1, 2, 3, 7, 10, 11, 31, 32, 33, 40, 40, 40])


def offsets(n: int, units_per_file: int):
    """Queue offsets for reads: anywhere, or the interesting ones (file starts, the
    last message, max, max + 1)."""
    special = sorted({0, max(n - 1, 0), n, n + 1} | set(range(0, n, units_per_file)))
    return st.one_of(st.integers(0, n + 2), st.sampled_from(special))


class StoreModel(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.dir = tempfile.mkdtemp(prefix="mqstore-model-")
        self.now = START_MS
        self.store: Optional[MessageStore] = None
        self.queues: Dict[Tuple[str, int], List[Stored]] = {}
        self.by_offset: Dict[int, Stored] = {}
        self.units_per_file = 10
        self.config = {}

    # -- set-up and helpers ----------------------------------------------------

    @initialize(units_per_file=st.sampled_from([10, 40]))
    def open_store(self, units_per_file):
        # 10 units per ConsumeQueue file rolls often; 40 lets the 32-message cap show.
        self.units_per_file = units_per_file
        self.config = dict(
            mapped_file_size_commitlog=8192,
            mapped_file_size_consume_queue=units_per_file * 20,
            max_hash_slot_num=64,
            max_index_num=8,  # 7 entries per index file
            clock=self.clock,
        )
        self.store = MessageStore(self.dir, **self.config)

    def clock(self) -> int:
        return self.now

    def tick(self, dt: int) -> None:
        self.now += dt

    def settle(self) -> None:
        """Wait (bounded) until the dispatcher has caught up with every put."""
        store = self.store
        for (topic, queue_id), msgs in self.queues.items():
            if msgs:
                assert store.wait_for_message(topic, queue_id, len(msgs) - 1, SETTLE_TIMEOUT), (
                    f"{topic}/{queue_id}: unit {len(msgs) - 1} not dispatched within "
                    f"{SETTLE_TIMEOUT} s (max_offset {store.max_offset(topic, queue_id)})")
        # The index is written after the ConsumeQueue units of a dispatch round.
        deadline = time.monotonic() + SETTLE_TIMEOUT
        while store.dispatcher.behind() > 0:
            assert time.monotonic() < deadline, "dispatcher did not catch up"
            time.sleep(0.001)

    def all_messages(self) -> List[Stored]:
        return sorted(self.by_offset.values(), key=lambda m: m.commitlog_offset)

    def teardown(self) -> None:
        try:
            if self.store is not None:
                self.store.close()
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)

    # -- writes ------------------------------------------------------------------

    def record(self, topic, queue_id, tags, keys, body, result, queue_offset):
        stored = Stored(topic, queue_id, queue_offset, tags, list(keys), body,
                        result.store_timestamp, result.commitlog_offset, result.msg_id)
        self.queues.setdefault((topic, queue_id), []).append(stored)
        self.by_offset[stored.commitlog_offset] = stored

    @rule(topic=TOPIC, queue_id=QUEUE_IDS, spec=message_spec, dt=time_step)
    def put(self, topic, queue_id, spec, dt):
        self.tick(dt)
        tags, keys, body = spec
        result = self.store.put(Message(topic, body, tags=tags, keys=keys or None), queue_id)
        assert result.ok, result
        expected_offset = len(self.queues.get((topic, queue_id), []))
        assert result.queue_offset == expected_offset
        assert result.queue_id == queue_id
        assert result.store_timestamp == self.now
        assert result.commitlog_offset not in self.by_offset
        self.record(topic, queue_id, tags, keys, body, result, expected_offset)

    @rule(topic=TOPIC, queue_id=QUEUE_IDS, count=st.integers(5, 60),
          tags=st.sampled_from(TAGS), data=st.data(), dt=time_step)
    def put_burst(self, topic, queue_id, count, tags, data, dt):
        """Many small puts to one queue, several with the same store time."""
        for i in range(count):
            self.tick(data.draw(st.sampled_from([0, 0, 1, dt]), label="dt"))
            body = b"burst %d" % i
            keys = [KEY_POOL[i % len(KEY_POOL)]] if i % 2 else []
            result = self.store.put(Message(topic, body, tags=tags, keys=keys or None), queue_id)
            assert result.ok, result
            assert result.store_timestamp == self.now
            self.record(topic, queue_id, tags, keys, body, result,
                        len(self.queues.get((topic, queue_id), [])))

    @rule(topic=TOPIC, queue_id=QUEUE_IDS,
          specs=st.lists(message_spec, min_size=1, max_size=5), dt=time_step)
    def put_batch(self, topic, queue_id, specs, dt):
        self.tick(dt)
        msgs = [Message(topic, body, tags=tags, keys=keys or None) for tags, keys, body in specs]
        result = self.store.put_batch(msgs, queue_id)
        assert result.ok, result
        assert len(result) == len(specs)
        first = len(self.queues.get((topic, queue_id), []))
        for i, ((tags, keys, body), one) in enumerate(zip(specs, result)):
            assert one.queue_offset == first + i
            assert one.store_timestamp == self.now
            if i:
                assert one.commitlog_offset > result[i - 1].commitlog_offset
            self.record(topic, queue_id, tags, keys, body, one, first + i)

    # -- reads ---------------------------------------------------------------------

    def pick_queue(self, data) -> Tuple[str, int]:
        """Mostly a queue that holds messages, sometimes any (maybe empty) one."""
        filled = sorted(key for key, msgs in self.queues.items() if msgs)
        anywhere = st.tuples(TOPIC, QUEUE_IDS)
        choice = st.one_of(st.sampled_from(filled), st.sampled_from(filled), anywhere) \
            if filled else anywhere
        return data.draw(choice, label="queue")

    @rule(data=st.data(), max_msgs=MAX_MSGS, expression=st.sampled_from(FILTERS), dt=time_step)
    def get(self, data, max_msgs, expression, dt):
        self.tick(dt)
        self.settle()
        topic, queue_id = self.pick_queue(data)
        msgs = self.queues.get((topic, queue_id), [])
        offset = data.draw(offsets(len(msgs), self.units_per_file), label="offset")
        result = self.store.get(topic, queue_id, offset, max_msgs, tags=expression)
        status, found, next_begin, min_offset, max_offset = predict_get(
            msgs, offset, max_msgs, filter_names(expression), self.units_per_file)
        context = f"get({topic}, {queue_id}, {offset}, {max_msgs}, {expression!r}) -> {result}"
        assert result.status is status, context
        assert result.next_begin_offset == next_begin, context
        assert (result.min_offset, result.max_offset) == (min_offset, max_offset), context
        assert len(result.messages) == len(found), context
        for actual, expected in zip(result.messages, found):
            same_message(actual, expected, context)

    @rule(data=st.data(), max_msgs=MAX_MSGS, expression=st.sampled_from(FILTERS))
    def read_to_end(self, data, max_msgs, expression):
        """Follow next_begin_offset from a start offset to OFFSET_OVERFLOW_ONE: the
        concatenation is exactly the model's filtered messages from there."""
        self.settle()
        topic, queue_id = self.pick_queue(data)
        msgs = self.queues.get((topic, queue_id), [])
        if not msgs:
            result = self.store.get(topic, queue_id, 0, max_msgs, tags=expression)
            assert result.status is GetStatus.NO_MESSAGE_IN_QUEUE, result
            assert (result.next_begin_offset, result.messages) == (0, [])
            return
        start = data.draw(st.one_of(st.just(0), st.integers(0, len(msgs) - 1)), label="start")
        names = filter_names(expression)
        collected = []
        offset = start
        for _ in range(len(msgs) + 2):
            result = self.store.get(topic, queue_id, offset, max_msgs, tags=expression)
            if result.status is GetStatus.OFFSET_OVERFLOW_ONE:
                assert result.next_begin_offset == offset == len(msgs)
                break
            assert result.status in (GetStatus.FOUND, GetStatus.NO_MATCHED_MESSAGE), result
            assert len(result.messages) <= min(max_msgs, MAX_TRANSFER_COUNT), result
            assert offset < result.next_begin_offset <= len(msgs), result
            # Never past the end of the ConsumeQueue file holding `offset`.
            file_end = (offset // self.units_per_file + 1) * self.units_per_file
            assert result.next_begin_offset <= file_end, result
            # What came back is a prefix-consistent slice of the scanned range.
            scanned = [m for m in msgs[offset:result.next_begin_offset]
                       if names is None or m.tags in names]
            assert [m.queue_offset for m in result.messages] == [m.queue_offset for m in scanned]
            assert (result.status is GetStatus.FOUND) == bool(result.messages)
            collected.extend(result.messages)
            offset = result.next_begin_offset
        else:
            raise AssertionError(f"no OFFSET_OVERFLOW_ONE after {len(msgs) + 2} calls")
        expected = [m for m in msgs[start:] if names is None or m.tags in names]
        assert len(collected) == len(expected)
        for actual, want in zip(collected, expected):
            same_message(actual, want, f"read_to_end({topic}, {queue_id}, {start}, {expression!r})")

    @rule(topic=TOPIC, key=st.sampled_from(KEY_POOL + ["nokey"]),
          max_msgs=st.sampled_from([1, 2, 5, 32, 100]), data=st.data(), dt=time_step)
    def query_by_key(self, topic, key, max_msgs, data, dt):
        """The newest min(max_msgs, 64) messages of `topic` with `key` stored in
        [begin, end] (ms, inclusive; defaults 0 and no limit), ascending."""
        self.tick(dt)
        self.settle()
        times = sorted({m.store_timestamp for m in self.by_offset.values()})
        bound = st.integers(START_MS - 10, self.now + 10)
        if times:  # near stored times, where second-granular index times could err
            near = st.builds(lambda t, d: t + d, st.sampled_from(times),
                             st.sampled_from([-1001, -1000, -999, -1, 0, 1, 999, 1000, 1001]))
            bound = st.one_of(bound, near)
        begin = data.draw(st.one_of(st.none(), bound), label="begin")
        end = data.draw(st.one_of(st.none(), bound), label="end")
        bounds = {}
        if begin is not None:
            bounds["begin"] = begin
        if end is not None:
            bounds["end"] = end
        found = self.store.query_by_key(topic, key, max_msgs=max_msgs, **bounds)
        low = 0 if begin is None else begin
        high = float("inf") if end is None else end
        matching = [m for m in self.all_messages()
                    if m.topic == topic and key in m.keys and low <= m.store_timestamp <= high]
        expected = matching[-min(max_msgs, MAX_MSGS_NUM_BATCH):] if matching else []
        context = f"query_by_key({topic!r}, {key!r}, max_msgs={max_msgs}, {bounds})"
        assert [m.commitlog_offset for m in found] == [m.commitlog_offset for m in expected], (
            f"{context}: got {[(m.commitlog_offset, m.store_timestamp) for m in found]}, "
            f"expected {[(m.commitlog_offset, m.store_timestamp) for m in expected]}")
        for actual, want in zip(found, expected):
            same_message(actual, want, context)

    @precondition(lambda self: self.by_offset)
    @rule(data=st.data())
    def look_up(self, data):
        self.settle()
        stored = data.draw(st.sampled_from(self.all_messages()), label="message")
        same_message(self.store.look_by_msg_id(stored.msg_id), stored, "look_by_msg_id")
        same_message(self.store.look_by_offset(stored.commitlog_offset), stored, "look_by_offset")

    @rule(data=st.data())
    def offset_by_time(self, data):
        self.settle()
        topic, queue_id = self.pick_queue(data)
        msgs = self.queues.get((topic, queue_id), [])
        times = [m.store_timestamp for m in msgs]
        candidates = st.integers(START_MS - 5000, self.now + 5000)
        if times:
            near = st.builds(lambda t, d: t + d, st.sampled_from(times), st.integers(-2, 2))
            candidates = st.one_of(near, candidates)
        timestamp = data.draw(candidates, label="timestamp")
        expected = next((i for i, t in enumerate(times) if t >= timestamp), len(times))
        actual = self.store.offset_by_time(topic, queue_id, timestamp)
        assert actual == expected, (
            f"offset_by_time({topic}, {queue_id}, {timestamp}) = {actual}, linear scan says "
            f"{expected}; times {times}")

    # -- lifetime ------------------------------------------------------------------

    @rule(dt=time_step)
    def reopen(self, dt):
        self.tick(dt)
        self.store.close()
        assert self.store.closed
        self.store = MessageStore(self.dir, **self.config)

    @invariant()
    def offsets_and_topics_agree(self):
        if self.store is None:
            return
        self.settle()
        expected_topics: Dict[str, List[int]] = {}
        for (topic, queue_id), msgs in sorted(self.queues.items()):
            assert self.store.min_offset(topic, queue_id) == 0
            assert self.store.max_offset(topic, queue_id) == len(msgs), (topic, queue_id)
            expected_topics.setdefault(topic, []).append(queue_id)
        assert self.store.topics() == expected_topics


StoreModel.TestCase.settings = settings(
    max_examples=60,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)

TestStoreModel = StoreModel.TestCase
