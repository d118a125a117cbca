"""The producer facade: every send mode, queue selection (RocketMQ's
SelectMessageQueueByHash for ordered sends), batches, and the client-side checks that
refuse bad input before anything is written."""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mqstore import Message, codec
from mqstore.client.producer import (
    MessageQueue,
    Producer,
    SendStatus,
    TransactionProducer,
    sharding_hash,
)
from mqstore.errors import ClientClosedError, MQClientError, SendError
from mqstore.topics import NOT_ALLOWED_SEND_TOPICS
from support import read_all

UNIQ = "UNIQ_KEY"


def wait_queue(store, topic, queue_id, count):
    assert store.wait_for_message(topic, queue_id, count - 1, 10), (topic, queue_id, count)


def java_string_hash(text: str) -> int:
    """Java String.hashCode, written out over UTF-16 code units."""
    data = text.encode("utf-16-le", "surrogatepass")
    h = 0
    for i in range(0, len(data), 2):
        h = (31 * h + int.from_bytes(data[i : i + 2], "little")) & 0xFFFFFFFF
    return h - 2**32 if h >= 2**31 else h


def java_long_hash(value: int) -> int:
    """Java Long.hashCode: (int) (value ^ (value >>> 32))."""
    v = value & 0xFFFFFFFFFFFFFFFF
    h = (v ^ (v >> 32)) & 0xFFFFFFFF
    return h - 2**32 if h >= 2**31 else h


def java_select_by_hash(h: int, n: int) -> int:
    """SelectMessageQueueByHash: value = hash % size (Java remainder); abs when < 0."""
    value = abs(h) % n * (1 if h >= 0 else -1)
    return abs(value)


@pytest.fixture
def store(small_store):
    return small_store()


@pytest.fixture
def producer(store):
    p = Producer(store, "test_pg")
    yield p
    p.shutdown()


def offsets_snapshot(store):
    return (
        store.max_commitlog_offset(),
        {(t, q): store.max_offset(t, q) for t, qs in store.topics().items() for q in qs},
    )


# -- send --------------------------------------------------------------------------


def test_send_round_robin_and_result(store, producer):
    store.create_topic("T", 3)
    results = [producer.send(Message("T", b"m%d" % i, tags="A", keys=f"k{i}"))
               for i in range(6)]
    assert [r.message_queue.queue_id for r in results] == [0, 1, 2, 0, 1, 2]
    assert [r.queue_offset for r in results] == [0, 0, 0, 1, 1, 1]
    assert all(r.send_status is SendStatus.SEND_OK for r in results)
    assert all(r.message_queue == MessageQueue("T", "mqstore", r.message_queue.queue_id)
               for r in results)
    assert len({r.msg_id for r in results}) == 6
    for i, r in enumerate(results):
        stored = store.look_by_offset(r.commitlog_offset)
        assert stored.body == b"m%d" % i
        assert stored.uniq_key == r.msg_id
        assert stored.msg_id == r.offset_msg_id
        assert stored.queue_offset == r.queue_offset
        assert len(r.msg_id) == 32
    # found by its UNIQ_KEY through the index
    wait_queue(store, "T", 1, 2)
    deadline = time.monotonic() + 10
    while not store.query_by_key("T", results[4].msg_id) and time.monotonic() < deadline:
        time.sleep(0.01)  # the index is written just after the ConsumeQueue
    assert [m.body for m in store.query_by_key("T", results[4].msg_id)] == [b"m4"]


def test_send_keeps_existing_uniq_key(store, producer):
    msg = Message("T", b"x", properties={UNIQ: "0A0000010001AAAA0000000000000001"})
    assert producer.send(msg).msg_id == "0A0000010001AAAA0000000000000001"
    # a second send of the same Message object keeps its id too (resend)
    again = producer.send(msg)
    assert again.msg_id == "0A0000010001AAAA0000000000000001"


def test_send_with_selector_and_queue(store, producer):
    store.create_topic("T", 4)
    seen = []

    def selector(queues, msg, arg):
        seen.append((len(queues), msg.body, arg))
        return queues[arg]

    assert producer.send(Message("T", b"a"), selector, 3).message_queue.queue_id == 3
    assert seen == [(4, b"a", 3)]
    assert producer.send(Message("T", b"b"), lambda qs, m, a: 2).message_queue.queue_id == 2
    assert producer.send(Message("T", b"c"), queue=1).message_queue.queue_id == 1
    mq = MessageQueue("T", "mqstore", 0)
    assert producer.send(Message("T", b"d"), queue=mq).message_queue == mq
    wait_queue(store, "T", 3, 1)
    assert [m.body for m in read_all(store, "T", 3)] == [b"a"]


def test_send_oneway(store, producer):
    store.create_topic("T", 2)
    before = store.max_commitlog_offset()
    msg = Message("T", b"one-way", tags="x")
    assert producer.send_oneway(msg, queue=1) is None
    assert "WAIT" not in msg.properties  # the message is left as it came, plus UNIQ_KEY
    assert UNIQ in msg.properties
    wait_queue(store, "T", 1, 1)
    [stored] = read_all(store, "T", 1)
    assert stored.body == b"one-way"
    assert stored.properties["WAIT"] == "false"
    assert stored.uniq_key == msg.properties[UNIQ]
    assert store.max_commitlog_offset() > before


def test_send_oneway_store_failure_logged(small_store, caplog):
    store = small_store(max_message_size=1024)
    producer = Producer(store, "pg")
    before = store.max_commitlog_offset()
    with caplog.at_level(logging.WARNING, logger="mqstore.client.producer"):
        producer.send_oneway(Message("T", b"x" * 2000))
    assert "one-way send" in caplog.text
    assert store.max_commitlog_offset() == before


def test_store_refusal_raises_send_error(small_store):
    store = small_store(max_message_size=1024)
    producer = Producer(store, "pg")
    before = store.max_commitlog_offset()
    with pytest.raises(SendError) as info:
        producer.send(Message("T", b"x" * 2000))
    assert info.value.status.name == "MESSAGE_ILLEGAL"
    assert store.max_commitlog_offset() == before


# -- async -------------------------------------------------------------------------


def test_send_async_many_threads(store, fast_thread_switching):
    store.create_topic("A", 4)
    producer = Producer(store, "async_pg", async_send_threads=3)
    threads_n, per_thread = 6, 40
    futures = defaultdict(list)
    callbacks = []
    lock = threading.Lock()
    barrier = threading.Barrier(threads_n)

    def on_ok(result):
        with lock:
            callbacks.append((threading.current_thread().name, result.msg_id))

    def sender(t):
        barrier.wait()
        for i in range(per_thread):
            futures[t].append(producer.send_async(Message("A", f"{t}-{i}".encode()), on_ok))

    threads = [threading.Thread(target=sender, args=(t,)) for t in range(threads_n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    results = [f.result(timeout=30) for fs in futures.values() for f in fs]
    producer.shutdown()
    total = threads_n * per_thread
    assert len(results) == total
    assert len({r.msg_id for r in results}) == total
    assert len({r.commitlog_offset for r in results}) == total
    assert {mid for _, mid in callbacks} == {r.msg_id for r in results}
    assert all(name.startswith("mqstore-send-async_pg") for name, _ in callbacks)
    # every message stored exactly once, each at the queue / offset its result says
    stored = {}
    for q in range(4):
        wait_queue(store, "A", q, sum(r.message_queue.queue_id == q for r in results))
        for m in read_all(store, "A", q):
            stored[m.uniq_key] = (q, m.queue_offset, m.body)
    assert len(stored) == total
    for fs_t, fs in futures.items():
        for i, f in enumerate(fs):
            r = f.result()
            assert stored[r.msg_id] == (r.message_queue.queue_id, r.queue_offset,
                                        f"{fs_t}-{i}".encode())


def test_send_async_callback_raises(store, producer, caplog):
    def bad_callback(result):
        raise RuntimeError("callback boom")

    with caplog.at_level(logging.ERROR, logger="mqstore.client.producer"):
        future = producer.send_async(Message("T", b"cb"), bad_callback)
        result = future.result(timeout=10)
    assert result.send_status is SendStatus.SEND_OK
    assert store.look_by_offset(result.commitlog_offset).body == b"cb"
    assert "callback boom" in caplog.text
    assert "the send succeeded" in caplog.text


def test_send_async_failure_goes_to_on_exception(small_store, caplog):
    store = small_store(max_message_size=1024)
    producer = Producer(store, "pg")
    errors = []
    done = threading.Event()

    def on_exception(exc):
        errors.append(exc)
        done.set()
        raise RuntimeError("handler boom")  # logged, does not replace the SendError

    before = store.max_commitlog_offset()
    with caplog.at_level(logging.ERROR, logger="mqstore.client.producer"):
        future = producer.send_async(Message("T", b"x" * 2000), on_exception=on_exception)
        with pytest.raises(SendError):
            future.result(timeout=10)
    assert done.is_set() and isinstance(errors[0], SendError)
    assert "handler boom" in caplog.text
    assert store.max_commitlog_offset() == before
    producer.shutdown()


def test_send_async_bad_input_raises_at_once(store, producer):
    before = offsets_snapshot(store)
    with pytest.raises(MQClientError):
        producer.send_async(Message("T", b""))
    with pytest.raises(TypeError):
        producer.send_async(b"not a message")
    with pytest.raises(MQClientError):
        producer.send_async(Message("T", b"x"), queue=99)
    assert offsets_snapshot(store) == before


def test_shutdown_waits_for_async_sends(store):
    producer = Producer(store, "pg", async_send_threads=1)
    futures = [producer.send_async(Message("T", b"%d" % i)) for i in range(50)]
    producer.shutdown()
    assert all(f.done() for f in futures)
    assert len({f.result().msg_id for f in futures}) == 50


# -- ordered -----------------------------------------------------------------------


def test_send_orderly_many_threads_per_key(store, fast_thread_switching):
    n = 5
    store.create_topic("O", n)
    producer = Producer(store, "order_pg")
    keys = ["order-1", "order-2", "客户-3", "😀", 12345, -77, 2**40 + 3]
    threads_per_key, per_thread = 2, 15
    barrier = threading.Barrier(len(keys) * threads_per_key)
    results = defaultdict(list)

    def sender(key, t):
        barrier.wait()
        for i in range(per_thread):
            body = f"{key}|{t}|{i}".encode()
            results[(str(key), t)].append(producer.send_orderly(Message("O", body), key))

    threads = [threading.Thread(target=sender, args=(k, t))
               for k in keys for t in range(threads_per_key)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    expected_queue = {}
    for key in keys:
        h = java_string_hash(key) if isinstance(key, str) else (
            key if -(2**31) <= key < 2**31 else java_long_hash(key))
        expected_queue[str(key)] = java_select_by_hash(h, n)
    for (key, _), rs in results.items():
        assert len(rs) == per_thread
        assert {r.message_queue.queue_id for r in rs} == {expected_queue[key]}
    counts = defaultdict(int)
    for (key, _), rs in results.items():
        counts[expected_queue[key]] += len(rs)
    seen = defaultdict(list)
    for q, count in counts.items():
        wait_queue(store, "O", q, count)
        msgs = read_all(store, "O", q)
        assert len(msgs) == count
        for m in msgs:
            key, t, i = m.body.decode().split("|")
            assert expected_queue[key] == q
            seen[(key, int(t))].append(int(i))
    # per key and thread, the queue holds the sends in the order they were made
    assert len(seen) == len(keys) * threads_per_key
    for sequence in seen.values():
        assert sequence == list(range(per_thread))


@settings(max_examples=200, deadline=None)
@given(st.text())
def test_sharding_hash_of_str_is_java_hash(text):
    assert sharding_hash(text) == codec.java_hash(text) == java_string_hash(text)


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=-(2**63), max_value=2**63 - 1))
def test_sharding_hash_of_int(value):
    expected = value if -(2**31) <= value < 2**31 else java_long_hash(value)
    assert sharding_hash(value) == expected
    assert -(2**31) <= sharding_hash(value) < 2**31


def test_sharding_hash_rejects_other_types():
    for bad in (1.5, None, b"x", True):
        with pytest.raises(TypeError):
            sharding_hash(bad)


def test_sharding_hash_min_value_key():
    # "polygenelubricants" hashes to Integer.MIN_VALUE
    assert sharding_hash("polygenelubricants") == -(2**31)
    assert java_select_by_hash(-(2**31), 3) == 2


_ORDER_STORE = {}


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(key=st.one_of(st.text(max_size=20), st.integers(-(2**40), 2**40)),
       queue_nums=st.integers(1, 16))
def test_send_orderly_queue_choice(small_store, key, queue_nums):
    if "store" not in _ORDER_STORE or _ORDER_STORE["store"].closed:
        _ORDER_STORE["store"] = small_store()
        _ORDER_STORE["producer"] = Producer(_ORDER_STORE["store"], "pg")
    store, producer = _ORDER_STORE["store"], _ORDER_STORE["producer"]
    topic = f"H{queue_nums}"
    if store.topic_config(topic) is None:
        store.create_topic(topic, queue_nums)
    result = producer.send_orderly(Message(topic, b"k"), key)
    h = java_string_hash(key) if isinstance(key, str) else (
        key if -(2**31) <= key < 2**31 else java_long_hash(key))
    assert result.message_queue.queue_id == java_select_by_hash(h, queue_nums)


# -- batches -----------------------------------------------------------------------


def test_send_batch_ok(store, producer):
    store.create_topic("B", 2)
    msgs = [Message("B", b"b%d" % i, keys=f"bk{i}") for i in range(5)]
    result = producer.send_batch(msgs, queue=1)
    ids = result.msg_id.split(",")
    assert len(ids) == 5 and len(set(ids)) == 5
    assert ids == [m.properties[UNIQ] for m in msgs]
    assert result.message_queue.queue_id == 1
    assert result.queue_offset == 0
    wait_queue(store, "B", 1, 5)
    stored = read_all(store, "B", 1)
    assert [m.body for m in stored] == [b"b%d" % i for i in range(5)]
    assert [m.uniq_key for m in stored] == ids
    assert [m.queue_offset for m in stored] == list(range(5))


@pytest.mark.parametrize(
    "bad",
    [
        lambda: Message("B", b""),
        lambda: Message("B", b"x", properties={"REAL_TOPIC": "X"}),
        lambda: Message("B", b"x" * 1025),
        lambda: Message("B", b"x", delay_level=1),
        lambda: Message("Other", b"x"),
    ],
    ids=["empty", "reserved-prop", "oversize", "delay", "other-topic"],
)
def test_send_batch_all_or_nothing(store, bad):
    producer = Producer(store, "pg", max_message_size=1024)
    store.create_topic("B", 2)
    had_id = Message("B", b"had", properties={UNIQ: "0A0000010001AAAA0000000000000009"})
    msgs = [Message("B", b"first"), had_id, bad(), Message("B", b"last")]
    before = offsets_snapshot(store)
    with pytest.raises(MQClientError):
        producer.send_batch(msgs)
    assert offsets_snapshot(store) == before
    assert UNIQ not in msgs[0].properties and UNIQ not in msgs[3].properties
    assert UNIQ not in msgs[2].properties
    assert had_id.properties[UNIQ] == "0A0000010001AAAA0000000000000009"
    # the same messages, once the bad one is gone, go through whole
    good = [m for i, m in enumerate(msgs) if i != 2]
    result = producer.send_batch(good)
    assert len(result.msg_id.split(",")) == 3


def test_send_batch_bad_queue_leaves_messages_as_they_came(store, producer):
    store.create_topic("B", 2)
    msgs = [Message("B", b"a"), Message("B", b"b")]
    before = offsets_snapshot(store)
    with pytest.raises(MQClientError):
        producer.send_batch(msgs, queue=2)
    assert offsets_snapshot(store) == before
    assert all(UNIQ not in m.properties for m in msgs)


def test_send_batch_store_refusal(small_store):
    store = small_store(max_message_size=1024)
    producer = Producer(store, "pg")
    msgs = [Message("B", b"x" * 600), Message("B", b"y" * 600)]  # each fits, not both
    before = offsets_snapshot(store)
    with pytest.raises(SendError):
        producer.send_batch(msgs)
    assert offsets_snapshot(store) == before


def test_send_batch_shape_errors(store, producer):
    before = offsets_snapshot(store)
    with pytest.raises(MQClientError):
        producer.send_batch([])
    with pytest.raises(TypeError):
        producer.send_batch([Message("B", b"x"), "nope"])
    with pytest.raises(MQClientError, match="retry topic"):
        producer.send_batch([Message("%RETRY%g", b"x")])
    assert offsets_snapshot(store) == before


# -- bad input: refused, nothing written ----------------------------------------------


def _refused(store, producer, exc, msg, **kw):
    before = offsets_snapshot(store)
    configs = store.topic_configs()
    with pytest.raises(exc):
        producer.send(msg, **kw)
    assert offsets_snapshot(store) == before
    assert store.topic_configs() == configs  # no topic created for a refused message


@pytest.mark.parametrize("level", [19, 100, -1])
def test_delay_level_outside_table(store, producer, level):
    msg = Message("T", b"x")
    msg.put_property("DELAY", str(level))
    _refused(store, producer, MQClientError, msg)


def test_delay_level_outside_small_table(small_store):
    store = small_store(message_delay_level="1s 2s 3s")
    producer = Producer(store, "pg")
    _refused(store, producer, MQClientError, Message("T", b"x", delay_level=4))
    msg = Message("T", b"x")
    msg.put_property("DELAY", "two")
    _refused(store, producer, MQClientError, msg)
    assert producer.send(Message("T", b"x", delay_level=3)).send_status is SendStatus.SEND_OK


def test_transaction_producer_needs_checker(store):
    with pytest.raises(TypeError):
        TransactionProducer(store, "tx_pg", check=None)
    with pytest.raises(TypeError):
        TransactionProducer(store, "tx_pg", check="not callable")
    with pytest.raises(TypeError):
        TransactionProducer(store, "tx_pg")  # noqa  (keyword missing)


def test_sending_after_shutdown(store):
    producer = Producer(store, "pg")
    producer.send(Message("T", b"before"))
    producer.shutdown()
    before = offsets_snapshot(store)
    with pytest.raises(ClientClosedError):
        producer.send(Message("T", b"x"))
    with pytest.raises(ClientClosedError):
        producer.send_async(Message("T", b"x"))
    with pytest.raises(ClientClosedError):
        producer.send_oneway(Message("T", b"x"))
    with pytest.raises(ClientClosedError):
        producer.send_orderly(Message("T", b"x"), "k")
    with pytest.raises(ClientClosedError):
        producer.send_batch([Message("T", b"x")])
    with pytest.raises(ClientClosedError):
        producer.start()
    assert offsets_snapshot(store) == before
    producer.shutdown()  # idempotent


def test_sending_after_store_close(small_store):
    store = small_store()
    producer = Producer(store, "pg")
    store.close()
    with pytest.raises(ClientClosedError):
        producer.send_async(Message("T", b"x"))


@pytest.mark.parametrize("topic", sorted(NOT_ALLOWED_SEND_TOPICS))
def test_reserved_topics(store, producer, topic):
    _refused(store, producer, MQClientError, Message(topic, b"x"))


@pytest.mark.parametrize("topic", ["", "a b", "t" * 128, "a/b"])
def test_illegal_topics(store, producer, topic):
    _refused(store, producer, MQClientError, Message(topic, b"x"))


def test_empty_body(store, producer):
    _refused(store, producer, MQClientError, Message("NewTopic", b""))
    _refused(store, producer, MQClientError, Message("NewTopic", bytearray()))


def test_oversize_body(store):
    producer = Producer(store, "pg", max_message_size=1000)
    _refused(store, producer, MQClientError, Message("NewTopic", b"x" * 1001))
    _refused(store, producer, MQClientError, Message("NewTopic", memoryview(b"x" * 1001)))
    assert producer.send(Message("NewTopic", b"x" * 1000)).send_status is SendStatus.SEND_OK


@pytest.mark.parametrize("name", ["REAL_TOPIC", "REAL_QID", "TRAN_MSG", "PGROUP",
                                  "MIN_OFFSET", "__SHARDINGKEY", "RETRY_TOPIC"])
def test_reserved_property_names(store, producer, name):
    msg = Message("NewTopic", b"x", properties={name: "v"})
    _refused(store, producer, MQClientError, msg)
    assert UNIQ not in msg.properties


def test_settable_system_properties_allowed(store, producer):
    msg = Message("T", b"x", tags="t", keys=["a", "b"], properties={"user": "v"})
    result = producer.send(msg)
    stored = store.look_by_offset(result.commitlog_offset)
    assert stored.properties["user"] == "v" and stored.tags == "t"


@pytest.mark.parametrize("group", ["DEFAULT_PRODUCER", "", "   ", "bad group", "g" * 256,
                                   "组"])
def test_illegal_group(store, group):
    with pytest.raises(MQClientError):
        Producer(store, group)


def test_group_type(store):
    with pytest.raises(TypeError):
        Producer(store, None)
    with pytest.raises(TypeError):
        Producer("not a store", "pg")


def test_queue_out_of_range(store, producer):
    store.create_topic("Q", 2)
    _refused(store, producer, MQClientError, Message("Q", b"x"), queue=2)
    _refused(store, producer, MQClientError, Message("Q", b"x"), queue=-1)
    _refused(store, producer, MQClientError, Message("Q", b"x"),
             queue=MessageQueue("Other", "mqstore", 0))
    before = offsets_snapshot(store)
    with pytest.raises(MQClientError):
        producer.send(Message("Q", b"x"), lambda qs, m, a: 7)
    with pytest.raises(MQClientError):
        producer.send_oneway(Message("Q", b"x"), queue=5)
    with pytest.raises(TypeError):
        producer.send(Message("Q", b"x"), lambda qs, m, a: "0")
    assert offsets_snapshot(store) == before


@pytest.mark.parametrize("bad", [b"bytes", "str", None, {"topic": "T"}])
def test_non_message_input(store, producer, bad):
    before = offsets_snapshot(store)
    with pytest.raises(TypeError):
        producer.send(bad)
    with pytest.raises(TypeError):
        producer.send_oneway(bad)
    with pytest.raises(TypeError):
        producer.send_orderly(bad, "k")
    with pytest.raises(TypeError):
        producer.send_batch([bad])
    assert offsets_snapshot(store) == before


def test_sharding_key_type(store, producer):
    _refused(store, producer, MQClientError, Message("T", b""))  # body checked first
    before = offsets_snapshot(store)
    with pytest.raises(TypeError):
        producer.send_orderly(Message("T", b"x"), 1.5)
    assert offsets_snapshot(store) == before
