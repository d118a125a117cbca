"""PullConsumer: poll, commit, auto-commit, seek, seek_by_time, pause/resume, the
async stream, lag and misuse."""

from __future__ import annotations

import asyncio
import time

import pytest

from mqstore import Message
from mqstore.client import ConsumeFromWhere, MessageQueue, Producer, PullConsumer
from mqstore.client.consumer import BROKER_NAME
from mqstore.errors import ClientClosedError, MQClientError

FIRST = ConsumeFromWhere.FIRST_OFFSET


def mq(queue_id, topic="T"):
    return MessageQueue(topic, BROKER_NAME, queue_id)


def fill(store, count, topic="T", queue=0, start=0):
    producer = Producer(store, "pg")
    keys = [producer.send(Message(topic, b"%d" % i), queue=queue).msg_id
            for i in range(start, start + count)]
    deadline = time.monotonic() + 5  # dispatched to the ConsumeQueues
    while store.dispatcher.behind() > 0 and time.monotonic() < deadline:
        time.sleep(0.002)
    return keys


def drain(consumer, timeout=0.05):
    out = []
    while True:
        batch = consumer.poll(timeout)
        if not batch:
            return out
        out.extend(batch)


def test_poll_returns_everything_once_in_queue_order(small_store):
    store = small_store()
    store.create_topic("T", 2)
    sent = fill(store, 50, queue=0) + fill(store, 30, queue=1, start=50)
    consumer = PullConsumer(store, "g", consume_from_where=FIRST, pull_batch_size=16)
    consumer.subscribe("T")
    consumer.start()
    got = drain(consumer)
    assert sorted(m.uniq_key for m in got) == sorted(sent)
    for q in (0, 1):
        offsets = [m.queue_offset for m in got if m.queue_id == q]
        assert offsets == sorted(offsets) and len(offsets) == len(set(offsets))
    assert sum(consumer.lag().values()) == 0
    consumer.shutdown()
    assert consumer.committed(mq(0)) == 50 and consumer.committed(mq(1)) == 30


def test_poll_batch_size_and_timeout(small_store):
    store = small_store()
    store.create_topic("T", 1)
    fill(store, 10)
    consumer = PullConsumer(store, "g", consume_from_where=FIRST, pull_batch_size=4)
    consumer.subscribe("T")
    assert [len(consumer.poll(0.1)) for _ in range(3)] == [4, 4, 2]
    start = time.monotonic()
    assert consumer.poll(0.2) == []
    assert 0.15 < time.monotonic() - start < 2
    consumer.shutdown()


def test_auto_commit_commits_at_next_poll(small_store):
    store = small_store()
    store.create_topic("T", 1)
    fill(store, 10)
    consumer = PullConsumer(store, "g", consume_from_where=FIRST, pull_batch_size=4)
    consumer.subscribe("T")
    consumer.poll(0.1)
    assert consumer.committed(mq(0)) in (-1, 0)  # not yet: the batch may be in use
    consumer.poll(0.1)
    assert consumer.committed(mq(0)) == 4
    consumer.shutdown()  # commits what the last poll returned
    assert consumer.committed(mq(0)) == 8
    again = PullConsumer(store, "g", consume_from_where=FIRST)
    again.subscribe("T")
    assert [int(m.body) for m in drain(again)] == [8, 9]
    again.shutdown()


def test_manual_commit_only_moves_on_commit(small_store):
    store = small_store()
    store.create_topic("T", 1)
    fill(store, 6)
    consumer = PullConsumer(store, "g", auto_commit=False, consume_from_where=FIRST,
                            pull_batch_size=3)
    consumer.subscribe("T")
    consumer.poll(0.1)
    consumer.commit()
    assert consumer.committed(mq(0)) == 3
    consumer.poll(0.1)
    consumer.poll(0.1)
    assert consumer.committed(mq(0)) == 3
    consumer.shutdown()
    reopened = PullConsumer(store, "g", auto_commit=False, consume_from_where=FIRST)
    reopened.subscribe("T")
    # whatever shutdown did, the uncommitted 3..5 must come again
    assert [int(m.body) for m in drain(reopened)][:3] == [3, 4, 5]
    reopened.shutdown()


def test_assign_seek_and_seek_by_time(small_store):
    now = [1_000_000]
    store = small_store(clock=lambda: now[0])
    store.create_topic("T", 2)
    for i in range(10):
        now[0] += 100
        fill(store, 1, queue=0, start=i)
    consumer = PullConsumer(store, "g", consume_from_where=FIRST)
    consumer.assign([mq(0)])
    assert consumer.assignment() == [mq(0)]
    consumer.seek(mq(0), 7)
    assert [int(m.body) for m in drain(consumer)] == [7, 8, 9]
    consumer.seek_to_begin(mq(0))
    assert [int(m.body) for m in drain(consumer)] == list(range(10))
    assert consumer.seek_by_time(mq(0), 1_000_000 + 450) == 4  # stored at +500
    assert [int(m.body) for m in drain(consumer)] == [4, 5, 6, 7, 8, 9]
    consumer.seek(mq(0), 10**6)  # clamped to the end
    assert drain(consumer) == []
    consumer.seek_to_end(mq(0))
    fill(store, 1, queue=0, start=10)
    assert [int(m.body) for m in drain(consumer)] == [10]
    with pytest.raises(MQClientError):
        consumer.seek(mq(1), 0)  # not assigned
    with pytest.raises(ValueError):
        consumer.seek(mq(0), -1)
    consumer.shutdown()


def test_pause_and_resume(small_store):
    store = small_store()
    store.create_topic("T", 2)
    fill(store, 5, queue=0)
    fill(store, 5, queue=1, start=100)
    consumer = PullConsumer(store, "g", consume_from_where=FIRST)
    consumer.assign([mq(0), mq(1)])
    consumer.pause([mq(0)])
    got = drain(consumer)
    assert {m.queue_id for m in got} == {1} and len(got) == 5
    consumer.resume([mq(0)])
    got = drain(consumer)
    assert [int(m.body) for m in got] == [0, 1, 2, 3, 4]
    consumer.shutdown()


def test_poll_is_woken_by_arrival(small_store):
    store = small_store()
    store.create_topic("T", 1)
    consumer = PullConsumer(store, "g")
    consumer.subscribe("T")
    consumer.poll(0)
    producer = Producer(store, "pg")
    import threading

    def later():
        time.sleep(0.2)
        producer.send(Message("T", b"late"))

    threading.Thread(target=later).start()
    start = time.monotonic()
    got = consumer.poll(5)
    elapsed = time.monotonic() - start
    assert [m.body for m in got] == [b"late"]
    assert elapsed < 1.0
    consumer.shutdown()


def test_stream_async_iterator(small_store):
    store = small_store()
    store.create_topic("T", 1)
    fill(store, 7)
    consumer = PullConsumer(store, "g", consume_from_where=FIRST, pull_batch_size=3)
    consumer.subscribe("T")

    async def main():
        got = []
        async for msg in consumer.stream(timeout=0.1):
            got.append(int(msg.body))
            if len(got) == 7:
                break
        return got

    assert asyncio.run(main()) == list(range(7))
    consumer.shutdown()
    assert consumer.committed(mq(0)) >= 6


def test_lag_counts_unconsumed(small_store):
    store = small_store()
    store.create_topic("T", 2)
    fill(store, 6, queue=0)
    fill(store, 4, queue=1)
    consumer = PullConsumer(store, "g", consume_from_where=FIRST, pull_batch_size=100)
    consumer.subscribe("T")
    assert consumer.lag() == {mq(0): 6, mq(1): 4}
    consumer.assign([mq(0)])
    consumer.poll(0.1)
    assert consumer.lag()[mq(0)] == 0
    consumer.shutdown()


def test_two_pull_consumers_share_queues(small_store):
    store = small_store()
    store.create_topic("T", 4)
    sent = set()
    for q in range(4):
        sent |= set(fill(store, 5, queue=q, start=q * 10))
    a = PullConsumer(store, "g", consume_from_where=FIRST, instance_name="a")
    b = PullConsumer(store, "g", consume_from_where=FIRST, instance_name="b")
    for c in (a, b):
        c.subscribe("T")
        c.start()
    assert len(a.assignment()) == 2 and len(b.assignment()) == 2
    assert set(a.assignment()).isdisjoint(b.assignment())
    got_a, got_b = drain(a), drain(b)
    keys = [m.uniq_key for m in got_a + got_b]
    assert sorted(keys) == sorted(sent)
    a.shutdown()
    b.shutdown()


def test_poll_after_shutdown_raises(small_store):
    store = small_store()
    consumer = PullConsumer(store, "g")
    consumer.subscribe("T")
    consumer.start()
    consumer.shutdown()
    consumer.shutdown()
    with pytest.raises(ClientClosedError):
        consumer.poll(0)
    with pytest.raises(ClientClosedError):
        consumer.start()
    with pytest.raises(TypeError):
        PullConsumer(store, "g2").assign(["T"])


def test_queue_taken_away_keeps_uncommitted_messages(small_store):
    """Without auto-commit, messages polled but not committed by a member that loses
    their queue to a new member are delivered again to the new owner."""
    store = small_store()
    store.create_topic("T", 2)
    fill(store, 4, queue=0)
    fill(store, 4, queue=1, start=10)
    a = PullConsumer(store, "g", auto_commit=False, consume_from_where=FIRST,
                     instance_name="a")
    a.subscribe("T")
    a.start()
    polled = drain(a)
    assert len(polled) == 8  # nothing committed
    b = PullConsumer(store, "g", auto_commit=False, consume_from_where=FIRST,
                     instance_name="b")
    b.subscribe("T")
    b.start()  # takes one of a's queues
    (taken,) = b.assignment()
    assert [m.queue_offset for m in drain(b)] == [0, 1, 2, 3]
    assert b.committed(taken) in (-1, 0)
    a.shutdown()
    b.shutdown()
