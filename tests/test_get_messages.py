"""The messages get() returns: built in bulk (units picked and records checked in C,
one copy per record), with most fields decoded from the record copy on first use.
Every field must equal the eager decode of the same record (look_by_offset), also
after the store is closed, after copy and pickle, and for records that are sound but
not where their unit says (another queue's record)."""

from __future__ import annotations

import copy
import pickle
import struct
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mqstore import Message, MessageStore
from mqstore.message import MessageExt
from mqstore.results import GetStatus
from test_fuzz_decoder import V1, V2, craft_record

SMALL = dict(mapped_file_size_commitlog=64 * 1024, mapped_file_size_consume_queue=2000,
             max_hash_slot_num=64, max_index_num=256)
UNIT = struct.Struct(">qiq")

FIELDS = ("topic", "body", "flag", "born_timestamp", "born_host", "store_host", "sys_flag",
          "reconsume_times", "prepared_transaction_offset", "queue_id", "queue_offset",
          "commitlog_offset", "store_size", "store_timestamp", "body_crc", "magic_code",
          "msg_id", "tags", "keys", "uniq_key", "delay_level", "transaction_type")


def snapshot(message) -> dict:
    values = {name: getattr(message, name) for name in FIELDS}
    values["properties"] = dict(message.properties)
    values["encoded_properties"] = message.encoded_properties()
    return values


def settle(store, timeout=5.0) -> None:
    deadline = time.monotonic() + timeout
    while store.dispatcher.behind() > 0:
        assert time.monotonic() < deadline, "dispatcher did not catch up"
        time.sleep(0.001)


def read_all(store, topic, queue_id, max_msgs=32):
    messages, offset = [], 0
    while True:
        result = store.get(topic, queue_id, offset, max_msgs)
        if result.status is not GetStatus.FOUND:
            return messages
        messages.extend(result.messages)
        offset = result.next_begin_offset


hosts = st.sampled_from(["127.0.0.1:10911", "10.1.2.3:1", "[::1]:10911",
                         "[2001:db8::7]:65535"])
texts = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00\x01\x02"),
                min_size=1, max_size=12)
messages = st.builds(
    dict,
    body=st.binary(max_size=300),
    tags=st.none() | texts,
    keys=st.none() | st.lists(texts.filter(lambda k: " " not in k), min_size=1, max_size=3),
    properties=st.dictionaries(st.sampled_from(["a", "b", "zz", "ünï"]), texts, max_size=3),
    flag=st.integers(-(2**31), 2**31 - 1),
    born_timestamp=st.integers(0, 2**62),
    born_host=hosts,
    store_host=hosts,
    reconsume_times=st.integers(0, 2**31 - 1),
    queue_id=st.integers(0, 2),
)


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(st.lists(messages, min_size=1, max_size=40), st.sampled_from([1, 3, 32]))
def test_get_agrees_with_the_eager_decode_field_by_field(tmp_path_factory, specs, max_msgs):
    path = tmp_path_factory.mktemp("store")
    with MessageStore(path, **SMALL) as store:
        for spec in specs:
            spec = dict(spec)
            queue_id = spec.pop("queue_id")
            assert store.put(Message("T", **spec), queue_id).ok
        settle(store)
        got = {q: read_all(store, "T", q, max_msgs) for q in range(3)}
        assert sum(len(v) for v in got.values()) == len(specs)
        expected = {}
        for queue_messages in got.values():
            for message in queue_messages:
                eager = store.look_by_offset(message.commitlog_offset)
                expected[message.commitlog_offset] = snapshot(eager)
        copies = [copy.copy(m) for q in got.values() for m in q]
    # The store is closed: the lazily decoded fields come from each message's own copy.
    for queue_id, queue_messages in got.items():
        assert [m.queue_offset for m in queue_messages] == list(range(len(queue_messages)))
        for message in queue_messages:
            assert message.queue_id == queue_id
            assert snapshot(message) == expected[message.commitlog_offset]
    for message in copies:
        assert snapshot(message) == expected[message.commitlog_offset]
        assert snapshot(pickle.loads(pickle.dumps(message))) == expected[message.commitlog_offset]


def test_fields_set_before_the_lazy_decode_are_kept(tmp_path):
    with MessageStore(tmp_path, **SMALL) as store:
        store.put(Message("T", b"hello", tags="a", properties={"k": "v"}, flag=7), 0)
        settle(store)
        (message,) = store.get("T", 0, 0).messages
        message.topic = "Elsewhere"
        message.body = b"changed"
        assert message.flag == 7  # the first lazy field decodes the rest of the record
        assert (message.topic, message.body, message.tags) == ("Elsewhere", b"changed", "a")
        message.reconsume_times = 3
        assert message.reconsume_times == 3 and message.properties["k"] == "v"


def test_unknown_attribute_is_an_attribute_error(tmp_path):
    with MessageStore(tmp_path, **SMALL) as store:
        store.put(Message("T", b"x"), 0)
        settle(store)
        (message,) = store.get("T", 0, 0).messages
        assert not hasattr(message, "no_such_field")
        try:
            message.no_such_field  # noqa: B018
        except AttributeError as exc:
            assert "no_such_field" in str(exc)
        else:  # pragma: no cover
            raise AssertionError("expected AttributeError")


def test_a_unit_pointing_at_another_queues_record_returns_that_record(tmp_path):
    """A sound record whose QUEUEID is not the queue being read (a hand-edited or
    damaged ConsumeQueue): get returns the record as it is, every field decoded from
    it, exactly as look_by_offset does."""
    with MessageStore(tmp_path, **SMALL) as store:
        first = store.put(Message("T", b"zero", tags="t0"), 0)
        store.put(Message("T", b"one!", tags="t1"), 1)
        settle(store)
    unit_path = tmp_path / "consumequeue" / "T" / "1" / ("0" * 20)
    with open(unit_path, "r+b") as f:
        f.write(UNIT.pack(first.commitlog_offset, first.store_size, 0))
    with MessageStore(tmp_path, **SMALL) as store:
        result = store.get("T", 1, 0)
        assert result.status is GetStatus.FOUND
        (message,) = result.messages
        assert message.queue_id == 0 and message.body == b"zero" and message.tags == "t0"
        assert snapshot(message) == snapshot(store.look_by_offset(first.commitlog_offset))
        assert store.damaged_units == 0


def test_tag_filter_skips_in_c_and_counts_misses(tmp_path):
    """Tags pass the C pick by their hash code, then the exact tag in Python; a batch
    of nothing but misses answers NO_MATCHED_MESSAGE with the offset moved on."""
    with MessageStore(tmp_path, **SMALL) as store:
        for i in range(50):
            store.put(Message("T", b"%d" % i, tags="even" if i % 2 == 0 else "odd"), 0)
        for i in range(5):
            store.put(Message("T", b"x%d" % i, tags="rare"), 0)
        settle(store)
        evens = store.get("T", 0, 0, 32, tags="even")
        assert [m.body for m in evens.messages] == [b"%d" % i for i in range(0, 50, 2)]
        assert evens.next_begin_offset == 55  # read on through the window
        miss = store.get("T", 0, 0, 32, tags="none || nothing")
        assert miss.status is GetStatus.NO_MATCHED_MESSAGE and miss.messages == []
        assert miss.next_begin_offset == 55
        rare = store.get("T", 0, 0, 2, tags="rare || odd")
        assert [m.body for m in rare.messages] == [b"1", b"3"]
        assert rare.next_begin_offset == 4


def test_messages_read_by_get_can_be_stored_again_with_their_properties(tmp_path):
    """A MessageExt from get() has not decoded its properties yet; putting it again,
    alone or in a batch, must still store them."""
    with MessageStore(tmp_path, **SMALL) as store:
        for i in range(6):
            store.put(Message("T", b"m%d" % i, tags=f"t{i}", properties={"n": str(i)}), 0)
        store.put(Message("T", b"plain"), 0)
        settle(store)
        read = store.get("T", 0, 0).messages
        assert len(read) == 7
        assert store.put_batch(read[:4], 1).ok
        for message in read[4:]:
            assert store.put(message, 1).ok
        settle(store)
        again = store.get("T", 1, 0).messages
        assert [(m.body, dict(m.properties)) for m in again] == [
            (m.body, dict(m.properties)) for m in read]


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(st.lists(st.tuples(st.binary(max_size=200), st.none() | texts,
                          st.integers(-(2**31), 2**31 - 1),
                          st.sampled_from(["bytes", "bytearray", "memoryview"])),
                min_size=1, max_size=20))
def test_put_batch_round_trip(tmp_path_factory, specs):
    """Batches with and without properties, of every body type, read back exactly."""
    kinds = {"bytes": bytes, "bytearray": bytearray, "memoryview": memoryview}
    with MessageStore(tmp_path_factory.mktemp("store"), **SMALL) as store:
        batch = [Message("T", kinds[kind](body), tags=tags, flag=flag)
                 for body, tags, flag, kind in specs]
        result = store.put_batch(batch, 2)
        assert result.ok and len(result) == len(specs)
        assert result.commitlog_offsets == [r.commitlog_offset for r in result]
        settle(store)
        got = read_all(store, "T", 2)
        assert [(m.body, m.tags, m.flag, m.commitlog_offset, m.store_size) for m in got] == [
            (body, tags, flag, r.commitlog_offset, r.store_size)
            for (body, tags, flag, _), r in zip(specs, result)]


def test_units_out_of_commitlog_order_across_files(tmp_path):
    """A damaged queue whose units jump back to an earlier CommitLog file: each pick
    is read from its own file, none is taken for damage."""
    small = dict(SMALL, mapped_file_size_commitlog=4096)
    with MessageStore(tmp_path, **small) as store:
        puts = [store.put(Message("T", b"%03d" % i + bytes(120)), 0) for i in range(60)]
        settle(store)
    assert puts[59].commitlog_offset >= 4096 > puts[1].commitlog_offset
    path = tmp_path / "consumequeue" / "T" / "0" / ("0" * 20)
    data = bytearray(path.read_bytes())
    data[0:20], data[59 * 20:60 * 20] = data[59 * 20:60 * 20], data[0:20]
    path.write_bytes(bytes(data))
    with MessageStore(tmp_path, **small) as store:
        result = store.get("T", 0, 0, 3)
        assert [m.commitlog_offset for m in result.messages] == [
            puts[59].commitlog_offset, puts[1].commitlog_offset, puts[2].commitlog_offset]
        assert [m.body[:3] for m in result.messages] == [b"059", b"001", b"002"]
        assert result.next_begin_offset == 3 and store.damaged_units == 0


def test_two_threads_first_touching_the_same_messages(tmp_path):
    """The lazy decode of one message from two threads at once: no thread ever sees a
    field missing, and both see the stored values."""
    import threading

    with MessageStore(tmp_path, **SMALL) as store:
        for i in range(200):
            store.put(Message("T", b"m", flag=i, tags=f"t{i}"), 0)
        settle(store)
        for _ in range(20):
            messages = read_all(store, "T", 0)
            errors, seen = [], [[], []]

            def touch(messages, out, errors):
                try:
                    for message in messages:
                        out.append((message.flag, message.tags, message.sys_flag))
                except Exception as exc:  # noqa: BLE001 - any error is the failure
                    errors.append(exc)

            threads = [threading.Thread(target=touch, args=(messages, seen[k], errors))
                       for k in (0, 1)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            assert not errors
            expected = [(i, f"t{i}", 0) for i in range(200)]
            assert seen[0] == expected and seen[1] == expected


def test_a_lazy_field_set_before_the_decode_is_kept(tmp_path):
    with MessageStore(tmp_path, **SMALL) as store:
        store.put(Message("T", b"x", flag=3, reconsume_times=1), 0)
        settle(store)
        (message,) = store.get("T", 0, 0).messages
        message.reconsume_times = 5  # before any lazy field was read
        message.flag = 9
        assert message.born_timestamp > 0  # decodes the rest
        assert (message.reconsume_times, message.flag) == (5, 9)
        assert message.sys_flag == 0


LAZY = ("flag", "born_timestamp", "sys_flag", "reconsume_times", "prepared_transaction_offset",
        "store_size", "store_timestamp", "body_crc", "magic_code", "born_host", "store_host")


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=60), st.binary(min_size=1, max_size=40),
       st.sampled_from([b"", b"TAGS\x01a", b"KEYS\x01k1 k2\x02x\x01y"]),
       st.sampled_from(["v1", "v2"]), st.sampled_from([0, 0x10, 0x20, 0x30]))
def test_lazy_decode_agrees_with_the_native_decode(body, topic, props, magic, hosts):
    """The lazy fields are read from the record copy with struct; the native decoder
    must agree for both magic codes and every host width."""
    record = craft_record(body, topic, props, magic=V1 if magic == "v1" else V2,
                          sys_flag=hosts)
    eager = MessageExt._from_record(record, "T")
    lazy = object.__new__(MessageExt)
    lazy.topic, lazy.body, lazy._record = "T", eager.body, record
    lazy._properties = lazy._encoded = None
    assert lazy._record is not None
    assert [getattr(lazy, name) for name in LAZY] == [getattr(eager, name) for name in LAZY]
    assert lazy._record is None  # decoded once, copy dropped
    assert lazy.encoded_properties() == eager.encoded_properties() == props


def test_message_ext_is_not_built_by_hand():
    with pytest.raises(TypeError, match="build a Message"):
        MessageExt("T", b"x")


def test_a_write_after_a_decode_is_never_undone_by_another_threads_decode(tmp_path):
    """Thread A decodes a message and then writes to it while thread B, which started
    its first read at the same time, decodes too: A's writes stay."""
    import sys
    import threading

    with MessageStore(tmp_path, **SMALL) as store:
        for _ in range(300):
            store.put(Message("T", b"m", flag=1), 0)
        settle(store)
        old = sys.getswitchinterval()
        sys.setswitchinterval(1e-6)
        try:
            for _ in range(10):
                messages = read_all(store, "T", 0)

                def writer(messages):
                    for message in messages:
                        message.put_property("NEW", "1")
                        message.flag = 5

                def reader(messages):
                    for message in messages:
                        message.sys_flag  # noqa: B018 - the first read decodes

                threads = [threading.Thread(target=writer, args=(messages,)),
                           threading.Thread(target=reader, args=(messages,))]
                for thread in threads:
                    thread.start()
                for thread in threads:
                    thread.join()
                assert all(m.flag == 5 and m.properties.get("NEW") == "1" for m in messages)
        finally:
            sys.setswitchinterval(old)
