"""PushConsumer: clustering, broadcasting, rebalancing, retries and dead letters,
ordered consumption, backtracking, bad listeners, misuse and long-poll latency."""

from __future__ import annotations

import collections
import logging
import random
import statistics
import threading
import time

import pytest

from mqstore import Message
from mqstore.client import (
    BROADCASTING,
    CONSUME_SUCCESS,
    RECONSUME_LATER,
    ConsumeFromWhere,
    ConsumeOrderlyStatus,
    Producer,
    PushConsumer,
)
from mqstore.errors import ClientClosedError, MQClientError

FIRST = ConsumeFromWhere.FIRST_OFFSET


def wait_until(predicate, timeout=10.0, interval=0.01):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


class Recorder:
    """A listener recording every delivery (uniq key, consumer name)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.deliveries = []

    def listener(self, name):
        def listen(msgs, context):
            with self.lock:
                self.deliveries.extend((m.uniq_key, name) for m in msgs)
            return CONSUME_SUCCESS

        return listen

    def keys(self):
        with self.lock:
            return [k for k, _ in self.deliveries]


def push(store, group, listener, topic="T", expression="*", **options):
    options.setdefault("consume_from_where", FIRST)
    consumer = PushConsumer(store, group, **options)
    consumer.subscribe(topic, expression)
    consumer.register(listener)
    return consumer.start()


def dlq_keys(store, group):
    topic = "%DLQ%" + group
    if topic not in store.topics():
        return set()
    got = store.get(topic, 0, 0, 1000)
    return {m.uniq_key for m in got.messages}


# ------------------------------------------------------------------- clustering


@pytest.mark.parametrize("members", [1, 3, 5])
def test_clustering_exactly_once(small_store, members):
    store = small_store()
    store.create_topic("T", 8)
    recorder = Recorder()
    consumers = [push(store, "g", recorder.listener(i), instance_name=f"c{i}")
                 for i in range(members)]
    assignments = [set(c.assignment()) for c in consumers]
    user_queues = [{mq for mq in a if mq.topic == "T"} for a in assignments]
    assert sorted(len(a) for a in user_queues) == sorted(
        [8 // members + (1 if i < 8 % members else 0) for i in range(members)])
    assert set().union(*user_queues) == {mq for c in consumers for mq in c.assignment()
                                         if mq.topic == "T"}
    producer = Producer(store, "pg")
    sent = [producer.send(Message("T", b"m%d" % i)).msg_id for i in range(240)]
    assert wait_until(lambda: len(recorder.deliveries) >= len(sent))
    time.sleep(0.2)  # a late duplicate would show up now
    for c in consumers:
        c.shutdown()
    counts = collections.Counter(recorder.keys())
    assert set(counts) == set(sent)
    assert max(counts.values()) == 1
    if members > 1:  # the work was really shared
        assert len({name for _, name in recorder.deliveries}) == min(members, 8)
    assert sum(c.consumed for c in consumers) == len(sent)


def test_members_join_and_leave_mid_stream(small_store):
    store = small_store()
    store.create_topic("T", 8)
    recorder = Recorder()
    consumers = [push(store, "g", recorder.listener(i), instance_name=f"c{i}",
                      persist_consumer_offset_interval=50) for i in range(2)]
    producer = Producer(store, "pg")
    sent = []

    def produce():
        for i in range(900):
            sent.append(producer.send(Message("T", b"m%d" % i)).msg_id)
            if i % 50 == 0:
                time.sleep(0.01)

    thread = threading.Thread(target=produce)
    thread.start()
    wait_until(lambda: len(sent) > 150)
    consumers.append(push(store, "g", recorder.listener(2), instance_name="c2"))
    consumers.append(push(store, "g", recorder.listener(3), instance_name="c3"))
    wait_until(lambda: len(sent) > 450)
    consumers.pop(0).shutdown()
    wait_until(lambda: len(sent) > 700)
    consumers.pop(0).shutdown()
    thread.join()
    assert wait_until(lambda: set(recorder.keys()) >= set(sent), timeout=15)
    for c in consumers:
        c.shutdown()
    keys = recorder.keys()
    assert set(keys) == set(sent)
    assert store.damaged_units == 0
    duplicates = len(keys) - len(set(keys))
    assert duplicates < len(sent)  # counted, bounded (not everything twice)


def test_broadcasting_every_consumer_sees_all_and_keeps_own_offsets(small_store):
    store = small_store()
    recorders = [Recorder(), Recorder()]
    consumers = [push(store, "gb", recorders[i].listener(i), model=BROADCASTING,
                      instance_name=f"b{i}") for i in range(2)]
    producer = Producer(store, "pg")
    first = {producer.send(Message("T", b"a%d" % i)).msg_id for i in range(40)}
    for r in recorders:
        assert wait_until(lambda r=r: set(r.keys()) == first)
    consumers[1].shutdown()
    second = {producer.send(Message("T", b"b%d" % i)).msg_id for i in range(20)}
    assert wait_until(lambda: set(recorders[0].keys()) == first | second)
    # b1 restarts: it resumes at its own offset, so it gets only the second batch.
    again = Recorder()
    restarted = push(store, "gb", again.listener("b1'"), model=BROADCASTING,
                     instance_name="b1")
    assert wait_until(lambda: set(again.keys()) == second)
    time.sleep(0.1)
    consumers[0].shutdown()
    restarted.shutdown()
    assert sorted(again.keys()) == sorted(second)
    assert collections.Counter(recorders[0].keys()).most_common(1)[0][1] == 1
    # no group-shared offsets were written for a broadcast group
    assert all(group != "gb" for _, group in store.consumer_offsets.table())


# ---------------------------------------------------------- retries, dead letters


def test_at_least_once_under_random_failures(small_store):
    store = small_store(message_delay_level="1s")
    rng = random.Random(7)
    lock = threading.Lock()
    succeeded, attempts = set(), collections.Counter()

    def flaky(msgs, context):
        with lock:
            for m in msgs:
                attempts[m.uniq_key] += 1
            if rng.random() < 0.4:
                return RECONSUME_LATER
            succeeded.update(m.uniq_key for m in msgs)
        return CONSUME_SUCCESS

    consumer = push(store, "gf", flaky, max_reconsume_times=2)
    producer = Producer(store, "pg")
    sent = {producer.send(Message("T", b"m%d" % i)).msg_id for i in range(60)}

    def settled():
        store.schedule.wake()
        return succeeded | dlq_keys(store, "gf") >= sent

    assert wait_until(settled, timeout=20, interval=0.1)
    consumer.shutdown()
    dead = dlq_keys(store, "gf")
    assert succeeded | dead == sent
    assert consumer.reconsumed > 0
    # a message is in the DLQ only after 1 + max_reconsume_times failed attempts
    for key in dead - succeeded:
        assert attempts[key] == 3
    assert max(attempts.values()) <= 3


def test_retry_restores_topic_and_keeps_uniq_key(small_store):
    store = small_store(message_delay_level="1s")
    seen = []

    def listener(msgs, context):
        seen.extend((m.uniq_key, m.topic, m.reconsume_times, m.body) for m in msgs)
        return RECONSUME_LATER if msgs[0].reconsume_times == 0 else CONSUME_SUCCESS

    consumer = push(store, "gr", listener)
    key = Producer(store, "pg").send(Message("T", b"payload", tags="t1")).msg_id
    assert wait_until(lambda: (store.schedule.wake() or len(seen) >= 2), timeout=10)
    consumer.shutdown()
    assert seen[0] == (key, "T", 0, b"payload")
    assert seen[1] == (key, "T", 1, b"payload")


def test_delay_level_minus_one_goes_straight_to_dlq(small_store):
    store = small_store(message_delay_level="1s")
    calls = []

    def listener(msgs, context):
        calls.append(msgs[0].uniq_key)
        context.delay_level_when_next_consume = -1
        return RECONSUME_LATER

    consumer = push(store, "gd", listener)
    key = Producer(store, "pg").send(Message("T", b"x")).msg_id
    assert wait_until(lambda: key in dlq_keys(store, "gd"))
    time.sleep(0.3)
    consumer.shutdown()
    assert calls == [key]


# --------------------------------------------------------------------- orderly


def test_orderly_keeps_per_key_order_under_failures(small_store):
    store = small_store()
    rng = random.Random(3)
    lock = threading.Lock()
    first_success = collections.defaultdict(list)
    done = set()
    active = collections.Counter()
    overlap = []

    def listener(msgs, context):
        queue = context.message_queue
        with lock:
            active[queue] += 1
            if active[queue] > 1:
                overlap.append(queue)
        try:
            time.sleep(0.001)
            with lock:
                if rng.random() < 0.3:
                    return ConsumeOrderlyStatus.SUSPEND_CURRENT_QUEUE_A_MOMENT
                for m in msgs:
                    if m.uniq_key not in done:
                        done.add(m.uniq_key)
                        first_success[m.keys[0]].append(int(m.body))
            return ConsumeOrderlyStatus.SUCCESS
        finally:
            with lock:
                active[queue] -= 1

    consumer = PushConsumer(store, "go", consume_from_where=FIRST,
                            suspend_current_queue_time_millis=20,
                            consume_message_batch_max_size=2)
    consumer.subscribe("T", "*")
    consumer.register_orderly(listener)
    consumer.start()
    producer = Producer(store, "pg")
    keys = [f"k{i}" for i in range(6)]
    for seq in range(25):
        for key in keys:
            producer.send_orderly(Message("T", b"%d" % seq, keys=key), key)
    assert wait_until(lambda: len(done) == 150, timeout=20)
    consumer.shutdown()
    assert overlap == []  # one batch of a queue at a time
    for key in keys:
        assert first_success[key] == list(range(25)), key
    assert consumer.reconsumed > 0


# ---------------------------------------------------------------- backtracking


def test_reset_offset_by_time_redelivers_exactly_since_then(small_store):
    now = [1_700_000_000_000]
    store = small_store(clock=lambda: now[0])
    recorder = Recorder()
    consumer = push(store, "gt", recorder.listener("c"))
    producer = Producer(store, "pg")
    by_time = {}
    for i in range(30):
        now[0] += 1000
        by_time[producer.send(Message("T", b"%d" % i)).msg_id] = now[0]
    assert wait_until(lambda: len(recorder.deliveries) == 30)
    cut = 1_700_000_000_000 + 18_500  # messages stored at >= cut: 19..30 s
    expected = {k for k, t in by_time.items() if t >= cut}
    assert len(expected) == 12
    before = len(recorder.deliveries)
    consumer.reset_offset_by_time("T", cut)
    assert wait_until(lambda: len(recorder.deliveries) >= before + len(expected))
    time.sleep(0.3)
    consumer.shutdown()
    again = recorder.keys()[before:]
    assert sorted(again) == sorted(expected)


# ------------------------------------------------------------------ bad input


@pytest.mark.parametrize("behaviour", ["junk", "raise", "none"])
def test_bad_listener_result_is_reconsume_later(small_store, caplog, behaviour):
    store = small_store(message_delay_level="1s")
    seen = []

    def listener(msgs, context):
        seen.append(msgs[0].reconsume_times)
        if msgs[0].reconsume_times:
            return CONSUME_SUCCESS
        if behaviour == "raise":
            raise RuntimeError("listener exploded")
        return "junk" if behaviour == "junk" else None

    caplog.set_level(logging.INFO)
    consumer = push(store, "gbad", listener)
    Producer(store, "pg").send(Message("T", b"x"))
    assert wait_until(lambda: (store.schedule.wake() or len(seen) >= 2), timeout=10)
    consumer.shutdown()
    assert seen == [0, 1]
    assert consumer.consumed == 1 and consumer.reconsumed == 1
    text = caplog.text
    assert ("exploded" in text) if behaviour == "raise" else ("returned" in text)


def test_hung_listener_times_out_and_is_redelivered(small_store):
    store = small_store(message_delay_level="1s")
    release = threading.Event()
    calls = []

    def listener(msgs, context):
        calls.append(msgs[0].reconsume_times)
        if msgs[0].reconsume_times == 0:
            release.wait(10)  # hangs past consume_timeout
            return CONSUME_SUCCESS  # ignored: the batch already expired
        return CONSUME_SUCCESS

    consumer = push(store, "ghang", listener, consume_timeout=0.3)
    Producer(store, "pg").send(Message("T", b"x"))
    assert wait_until(lambda: (store.schedule.wake() or len(calls) >= 2), timeout=10)
    release.set()
    time.sleep(0.2)
    consumer.shutdown()
    assert calls == [0, 1]
    assert consumer.consumed == 1  # the hung call's late success is not counted


def test_different_subscriptions_in_one_group_warn(small_store, caplog):
    store = small_store()
    a = push(store, "gmix", lambda m, c: CONSUME_SUCCESS, topic="T1")
    with caplog.at_level(logging.WARNING):
        b = push(store, "gmix", lambda m, c: CONSUME_SUCCESS, topic="T2")
    a.shutdown()
    b.shutdown()
    assert any("gmix" in r.getMessage() and r.levelno == logging.WARNING
               for r in caplog.records)


def test_misuse_errors(small_store):
    store = small_store()
    consumer = PushConsumer(store, "gm")
    with pytest.raises(MQClientError, match="listener"):
        consumer.start()
    consumer.register(lambda m, c: CONSUME_SUCCESS)
    with pytest.raises(MQClientError, match="subscribe"):
        consumer.start()
    with pytest.raises(TypeError):
        consumer.register("not callable")
    consumer.subscribe("T")
    consumer.start()
    with pytest.raises(MQClientError, match="before start"):
        consumer.register(lambda m, c: CONSUME_SUCCESS)
    consumer.shutdown()
    consumer.shutdown()  # idempotent
    with pytest.raises(ClientClosedError):
        consumer.start()
    with pytest.raises(ClientClosedError):
        consumer.subscribe("T2")
    with pytest.raises(ValueError):
        PushConsumer(store, "gm", consume_thread_min=0)
    with pytest.raises(ValueError):
        PushConsumer(store, "gm", max_reconsume_times=-1)
    with pytest.raises(TypeError):
        PushConsumer(store, "gm", model="CLUSTERING")


def test_nothing_consumed_after_shutdown(small_store):
    store = small_store()
    recorder = Recorder()
    consumer = push(store, "gs", recorder.listener("c"))
    producer = Producer(store, "pg")
    producer.send(Message("T", b"before"))
    assert wait_until(lambda: len(recorder.deliveries) == 1)
    consumer.shutdown()
    producer.send(Message("T", b"after"))
    time.sleep(0.3)
    assert len(recorder.deliveries) == 1
    assert sum(consumer.lag().values()) == 1


# ------------------------------------------------------------------- long poll


def test_long_poll_is_woken_by_arrival(small_store):
    store = small_store()
    arrived = []
    event = threading.Event()

    def listener(msgs, context):
        arrived.append(time.time() * 1000 - msgs[0].born_timestamp)
        event.set()
        return CONSUME_SUCCESS

    store.create_topic("T", 4)
    consumer = push(store, "glp", listener, consume_from_where=ConsumeFromWhere.LAST_OFFSET)
    assert len([mq for mq in consumer.assignment() if mq.topic == "T"]) == 4
    producer = Producer(store, "pg")
    latencies = []
    for i in range(15):
        time.sleep(0.05)  # idle: the consumer is waiting
        event.clear()
        start = time.monotonic()
        producer.send(Message("T", b"%d" % i))
        assert event.wait(3)
        latencies.append(time.monotonic() - start)
    consumer.shutdown()
    assert statistics.median(latencies) < 0.05, latencies
    assert len(arrived) == 15


# ------------------------------------------------- store race found by these tests


def test_get_does_not_skip_units_dispatched_during_the_read(small_store):
    store = small_store()
    producer = Producer(store, "pg")
    producer.send(Message("T", b"first"), queue=0)
    queue = store.consume_queue("T", 0)
    assert wait_until(lambda: queue.max_offset() == 1, timeout=5)
    original = queue.read_unit_bytes
    calls = []

    def racing_read_units(queue_offset, max_units):
        if len(calls) == 1:  # a message is stored and dispatched just before the read-on
            producer.send(Message("T", b"second"), queue=0)
            assert wait_until(lambda: queue.max_offset() == 2, timeout=5)
        calls.append(queue_offset)
        return original(queue_offset, max_units)

    queue.read_unit_bytes = racing_read_units
    got = store.get("T", 0, 0, 32)
    queue.read_unit_bytes = original
    assert len(calls) >= 2  # the race really happened: a second read found the unit
    bodies = [m.body for m in got.messages]
    # Either the second message is returned, or the next offset stays before it.
    assert bodies == [b"first", b"second"] or got.next_begin_offset == 1, (
        bodies, got.next_begin_offset, store.damaged_units)
    assert store.damaged_units == 0


def test_orderly_member_joining_loses_nothing_buffered(small_store):
    """A queue taken away from an orderly consumer while messages of it are buffered
    (pulled, not yet consumed) must be committed before them, not after."""
    store = small_store()
    store.create_topic("T", 4)
    lock = threading.Lock()
    done = []

    def slow(msgs, context):
        time.sleep(0.004)
        with lock:
            done.extend(m.uniq_key for m in msgs)
        return ConsumeOrderlyStatus.SUCCESS

    def orderly(name):
        consumer = PushConsumer(store, "gob", consume_from_where=FIRST, instance_name=name)
        consumer.subscribe("T")
        consumer.register_orderly(slow)
        return consumer.start()

    producer = Producer(store, "pg")
    sent = {producer.send(Message("T", b"%d" % i)).msg_id for i in range(240)}
    first = orderly("o1")
    assert wait_until(lambda: len(done) >= 20)
    second = orderly("o2")  # takes two queues with most of their messages buffered in o1
    assert wait_until(lambda: set(done) >= sent, timeout=15)
    first.shutdown()
    second.shutdown()
    assert set(done) == sent


def test_batches_respect_consume_message_batch_max_size(small_store):
    store = small_store()
    store.create_topic("T", 1)
    sizes = []

    def listener(msgs, context):
        sizes.append(len(msgs))
        return CONSUME_SUCCESS

    producer = Producer(store, "pg")
    for i in range(23):
        producer.send(Message("T", b"%d" % i))
    consumer = push(store, "gbatch", listener, consume_message_batch_max_size=5)
    assert wait_until(lambda: sum(sizes) == 23)
    consumer.shutdown()
    assert max(sizes) <= 5 and max(sizes) > 1
    assert consumer.consumed == 23 and sum(consumer.lag().values()) == 0


def test_broadcast_failure_is_dropped_and_logged(small_store, caplog):
    store = small_store(message_delay_level="1s")
    calls = []

    def listener(msgs, context):
        calls.append(msgs[0].uniq_key)
        return RECONSUME_LATER

    consumer = push(store, "gbf", listener, model=BROADCASTING)
    with caplog.at_level(logging.WARNING):
        key = Producer(store, "pg").send(Message("T", b"x")).msg_id
        assert wait_until(lambda: calls)
        time.sleep(1.3)
        store.schedule.wake()
        time.sleep(0.2)
    consumer.shutdown()
    assert calls == [key]  # never retried
    assert "%RETRY%gbf" not in store.topics()
    assert any(key in r.getMessage() for r in caplog.records)


def test_reset_offset_forward_skips(small_store):
    now = [2_000_000_000_000]
    store = small_store(clock=lambda: now[0])
    store.create_topic("T", 1)
    producer = Producer(store, "pg")
    for i in range(10):
        now[0] += 1000
        producer.send(Message("T", b"%d" % i))
    assert wait_until(lambda: store.max_offset("T", 0) == 10)  # dispatched
    consumer = PushConsumer(store, "gfw", consume_from_where=FIRST)
    consumer.subscribe("T")
    got = []
    consumer.register(lambda msgs, c: got.extend(int(m.body) for m in msgs) or CONSUME_SUCCESS)
    # reset before start: only the group's committed offsets move
    new = consumer.reset_offset_by_time("T", 2_000_000_000_000 + 7_000)
    assert list(new.values()) == [6]
    consumer.start()
    assert wait_until(lambda: len(got) >= 4)
    time.sleep(0.2)
    consumer.shutdown()
    assert got == [6, 7, 8, 9]


def test_last_offset_reads_a_young_queue_from_zero_as_rocketmq(small_store):
    """RocketMQ 4.9.8: a new group with CONSUME_FROM_LAST_OFFSET reads a queue from 0
    while its first message is still within the memory window, so the messages that
    created a topic just before the consumer started are not skipped."""
    store = small_store()
    producer = Producer(store, "pg")
    sent = [producer.send(Message("Young", b"m%d" % i), queue=0).msg_id for i in range(3)]
    recorder = Recorder()
    consumer = PushConsumer(store, "late_group",
                            consume_from_where=ConsumeFromWhere.LAST_OFFSET)
    consumer.subscribe("Young")
    consumer.register(recorder.listener(0))
    consumer.start()
    try:
        assert wait_until(lambda: len(recorder.deliveries) >= 3)
        assert sorted(recorder.keys()) == sorted(sent)
    finally:
        consumer.shutdown()


def test_last_offset_skips_what_a_queue_held_once_its_start_was_deleted(small_store):
    store = small_store()
    producer = Producer(store, "pg")
    for i in range(3):
        producer.send(Message("Old", b"m%d" % i), queue=0)
    store.dispatcher.wait_for_arrival(lambda: store.max_offset("Old", 0) == 3, 5)
    queue = store.consume_queue("Old", 0)
    queue.min_logic_offset = 2 * 20  # as retention leaves it: units below 2 are gone
    consumer = PushConsumer(store, "late_group", consume_from_where=ConsumeFromWhere.LAST_OFFSET)
    consumer.subscribe("Old")
    consumer.register(lambda msgs, ctx: CONSUME_SUCCESS)
    consumer.start()
    try:
        (mq,) = [mq for mq in consumer.assignment() if mq.topic == "Old" and mq.queue_id == 0]
        assert consumer._queues[mq].next_offset == 3
    finally:
        consumer.shutdown()
