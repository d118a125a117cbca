"""Delay levels: messages parked in SCHEDULE_TOPIC_XXXX are delivered to their real
topic and queue when due, once, in order, across close / reopen and kill -9, and
RocketMQ's golden stores are continued correctly."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from golden import GOLDEN_CONFIG, copy_store, manifest
from mqstore import Message, configfile
from mqstore.client.producer import Producer
from mqstore.message import SCHEDULE_TOPIC
from support import FakeClock, read_all

HERE = Path(__file__).resolve().parent
T0 = 1_800_000_000_000
LEVELS_MS = [1000, 5000, 10000]


def topic_messages(store, topic):
    return [m for q in store.topics().get(topic, []) for m in read_all(store, topic, q)]


def wait_dispatched(store, topic, queue_id, count, timeout=10.0):
    assert store.wait_for_message(topic, queue_id, count - 1, timeout), (topic, queue_id)


def wait_until(predicate, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
def delayed(small_store, clock):
    """A store on a fake clock with levels 1s 5s 10s, topic D (2 queues), a producer."""
    store = small_store(clock=clock, message_delay_level="1s 5s 10s")
    store.create_topic("D", 2)
    return store, Producer(store, "delay_pg")


def park(store, producer, level, body, queue=0, **kw):
    """Send a delayed message and wait until its ConsumeQueue unit is dispatched."""
    before = store.max_offset(SCHEDULE_TOPIC, level - 1)
    result = producer.send(Message("D", body, delay_level=level, **kw), queue=queue)
    wait_dispatched(store, SCHEDULE_TOPIC, level - 1, before + 1)
    return result


def test_parked_not_delivered_before_due_then_delivered(delayed, clock):
    store, producer = delayed
    result = park(store, producer, 2, b"later", queue=1, tags="TagX", keys="k1")
    parked = store.look_by_offset(result.commitlog_offset)
    assert parked.topic == SCHEDULE_TOPIC and parked.queue_id == 1
    assert parked.properties["REAL_TOPIC"] == "D" and parked.properties["REAL_QID"] == "1"
    [unit] = read_all(store, SCHEDULE_TOPIC, 1)
    due = parked.store_timestamp + 5000
    assert parked.store_timestamp == T0
    assert store.schedule.pending() == 1
    clock.now = due - 1
    assert store.schedule.deliver_due() == due  # the next delivery time
    store.schedule.wake()
    time.sleep(0.15)  # the schedule thread (same clock) must not deliver early either
    assert store.max_offset("D", 1) == 0
    assert store.schedule.pending() == 1
    clock.now = due
    assert store.schedule.deliver_due() is None
    wait_dispatched(store, "D", 1, 1)
    [copy] = read_all(store, "D", 1)
    assert store.schedule.pending() == 0
    assert store.schedule.offsets()[2] == 1
    # the delivered record: same id, body, born data, tags; a new store time
    assert copy.uniq_key == result.msg_id == parked.uniq_key
    assert copy.body == b"later"
    assert copy.born_timestamp == parked.born_timestamp
    assert copy.born_host == parked.born_host
    assert copy.tags == "TagX" and copy.keys == ["k1"]
    assert copy.store_timestamp == due
    assert copy.commitlog_offset > parked.commitlog_offset
    # RocketMQ quirk: the stored properties string is the parked one, byte for byte
    assert copy.encoded_properties() == parked.encoded_properties()
    assert copy.properties["DELAY"] == "2"
    assert copy.properties["REAL_TOPIC"] == "D"
    assert copy.properties["REAL_QID"] == "1"
    # found by key in the real topic, and not delivered a second time
    clock.now = due + 60_000
    store.schedule.deliver_due()
    assert store.max_offset("D", 1) == 1
    assert wait_until(lambda: store.query_by_key("D", result.msg_id))  # indexed
    assert [m.body for m in store.query_by_key("D", result.msg_id)] == [b"later"]


def test_delivery_order_per_level(delayed, clock):
    store, producer = delayed
    sent = {1: [], 2: [], 3: []}
    due = {}
    for step in range(6):
        clock.now = T0 + step * 100
        for level in (3, 1, 2):
            body = b"L%d-%d" % (level, step)
            result = park(store, producer, level, body)
            sent[level].append(body)
            due[body] = store.look_by_offset(result.commitlog_offset).store_timestamp + (
                LEVELS_MS[level - 1])
    # walk the clock forward in 50 ms steps: at each step exactly the messages due by
    # then have left each level, in queue order
    now = clock.now
    while now <= T0 + 10_000 + 600:
        clock.now = now
        store.schedule.deliver_due()
        offsets = store.schedule.offsets()
        for level in (1, 2, 3):
            expected = sum(due[b] <= now for b in sent[level])
            assert offsets.get(level, 0) == expected, (level, now)
        now += 50
    wait_dispatched(store, "D", 0, 18)
    copies = read_all(store, "D", 0)
    for m in copies:  # delivered within one 50 ms step of its time, never early
        assert due[m.body] <= m.store_timestamp < due[m.body] + 50
    order = [m.body for m in copies]
    for level in (1, 2, 3):
        mine = [b for b in order if b.startswith(b"L%d-" % level)]
        assert mine == sent[level]  # per level: send order
    # shorter levels first: every level-1 message before any level-2 one
    assert order.index(b"L1-5") < order.index(b"L2-0") < order.index(b"L3-0")
    assert store.schedule.offsets() == {1: 6, 2: 6, 3: 6}


def test_only_due_prefix_delivered(delayed, clock):
    store, producer = delayed
    results = []
    for i in range(5):  # due at T0 + 1000, 1300, 1600, 1900, 2200
        clock.now = T0 + i * 300
        results.append(park(store, producer, 1, b"m%d" % i))
    clock.now = T0 + 1700  # m0, m1, m2 due; m3 at T0 + 1900
    assert store.schedule.deliver_due() == T0 + 1900
    wait_dispatched(store, "D", 0, 3)
    assert [m.body for m in read_all(store, "D", 0)] == [b"m0", b"m1", b"m2"]
    assert store.schedule.offsets()[1] == 3
    assert store.schedule.pending() == 2


def test_delay_offset_json_shape(delayed, clock, store_dir):
    store, producer = delayed
    park(store, producer, 1, b"a")
    park(store, producer, 1, b"b")
    park(store, producer, 3, b"c")
    clock.now = T0 + 1000
    store.schedule.deliver_due()
    path = store_dir / "config" / "delayOffset.json"
    text = path.read_text()
    # fastjson: integer keys unquoted, pretty-printed with tabs
    assert re.search(r'"offsetTable":\s*\{\s*1:2,\s*3:0\s*\}', text), text
    assert "\t" in text
    assert configfile.load(str(path)) == {"offsetTable": {1: 2, 3: 0}}


def test_survives_close_and_reopen(small_store, store_dir, clock):
    store = small_store(clock=clock, message_delay_level="1s 5s 10s")
    producer = Producer(store, "pg")
    ids = {}
    for i, level in enumerate([1, 1, 2, 2, 3]):
        r = producer.send(Message("R", b"r%d" % i, delay_level=level), queue=0)
        ids[r.msg_id] = level
    wait_dispatched(store, SCHEDULE_TOPIC, 2, 1)
    wait_dispatched(store, SCHEDULE_TOPIC, 1, 2)
    clock.now = T0 + 1000  # level 1 due
    store.schedule.deliver_due()
    store.close()
    assert configfile.load(str(store_dir / "config" / "delayOffset.json")) == {
        "offsetTable": {1: 2, 2: 0, 3: 0}}
    clock.now = T0 + 5000  # level 2 due as well, then reopened
    store = small_store(clock=clock, message_delay_level="1s 5s 10s")
    assert store.schedule.offsets()[1] == 2
    store.schedule.deliver_due()
    store.close()
    clock.now = T0 + 60_000
    store = small_store(clock=clock, message_delay_level="1s 5s 10s")
    store.schedule.deliver_due()
    wait_dispatched(store, "R", 0, 5)
    counts = Counter(m.uniq_key for m in read_all(store, "R", 0))
    assert counts == Counter({k: 1 for k in ids})
    assert store.schedule.pending() == 0
    assert store.schedule.offsets() == {1: 2, 2: 2, 3: 1}


def test_stale_saved_offset_deduplicated_by_index(small_store, store_dir, clock):
    """A crash between delivery and the save of delayOffset.json leaves an old offset:
    the start-up check against the index must skip what was delivered."""
    store = small_store(clock=clock, message_delay_level="1s 5s 10s")
    producer = Producer(store, "pg")
    ids = [producer.send(Message("S", b"s%d" % i, delay_level=1), queue=0).msg_id
           for i in range(4)]
    wait_dispatched(store, SCHEDULE_TOPIC, 0, 4)
    clock.now = T0 + 1000
    store.schedule.deliver_due()
    wait_dispatched(store, "S", 0, 4)
    store.close()
    # as if the process died before the save: progress back to 1 (3 delivered unsaved)
    configfile.save(str(store_dir / "config" / "delayOffset.json"), {"offsetTable": {1: 1}})
    clock.now = T0 + 100_000
    store = small_store(clock=clock, message_delay_level="1s 5s 10s")
    assert store.schedule.skipped_as_delivered == 3
    assert store.schedule.offsets()[1] == 4
    store.schedule.deliver_due()
    assert Counter(m.uniq_key for m in read_all(store, "S", 0)) == Counter(ids)
    assert store.max_offset("S", 0) == 4


def test_stale_offset_with_undelivered_tail(small_store, store_dir, clock):
    """The de-dup stops at the first message not delivered: it is delivered once."""
    store = small_store(clock=clock, message_delay_level="1s 5s 10s")
    producer = Producer(store, "pg")
    for i in range(3):  # due at T0 + 1000, 1400, 1800 (the clock never goes back)
        clock.now = T0 + i * 400
        producer.send(Message("S", b"s%d" % i, delay_level=1), queue=0)
    wait_dispatched(store, SCHEDULE_TOPIC, 0, 3)
    clock.now = T0 + 1200
    store.schedule.deliver_due()  # s0 only
    wait_dispatched(store, "S", 0, 1)
    store.close()
    configfile.save(str(store_dir / "config" / "delayOffset.json"), {"offsetTable": {1: 0}})
    clock.now = T0 + 100_000
    store = small_store(clock=clock, message_delay_level="1s 5s 10s")
    assert store.schedule.skipped_as_delivered == 1
    store.schedule.deliver_due()
    wait_dispatched(store, "S", 0, 3)
    assert [m.body for m in read_all(store, "S", 0)] == [b"s0", b"s1", b"s2"]


def test_real_time_delivery_lateness(small_store):
    store = small_store(message_delay_level="1s 2s 3s")
    producer = Producer(store, "rt_pg")
    store.create_topic("RT", 1)
    levels = [1, 2, 3, 1, 2, 3]
    results = []
    for i, level in enumerate(levels):
        results.append((producer.send(Message("RT", b"rt%d" % i, delay_level=level)), level))
        time.sleep(0.05)
    assert wait_until(lambda: store.max_offset("RT", 0) == len(levels), timeout=8)
    copies = {m.uniq_key: m for m in read_all(store, "RT", 0)}
    assert len(copies) == len(levels)
    lateness = []
    for result, level in results:
        parked = store.look_by_offset(result.commitlog_offset)
        due = parked.store_timestamp + level * 1000
        late = copies[result.msg_id].store_timestamp - due
        assert late >= 0, f"delivered {-late} ms early"
        lateness.append(late)
    assert max(lateness) < 500, lateness


# -- kill -9 -----------------------------------------------------------------------


@pytest.mark.parametrize("freeze", [False, True], ids=["saving", "never-saved"])
def test_kill_during_delivery(small_store, tmp_path, freeze):
    path = tmp_path / "killed"
    count = 60
    proc = subprocess.Popen(
        [sys.executable, str(HERE / "delay_writer.py"), str(path), str(count)]
        + (["freeze"] if freeze else []),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=str(HERE.parent),
    )
    acked, delivered = [], 0
    try:
        buffer = b""
        deadline = time.monotonic() + 30
        # kill once deliveries are under way (about half delivered)
        while delivered < count // 2:
            assert time.monotonic() < deadline, "writer made no progress"
            chunk = os.read(proc.stdout.fileno(), 4096)
            assert chunk, proc.stderr.read().decode()
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            for line in lines:
                parts = line.decode().split()
                if parts[0] == "ACK":
                    acked.append((parts[1], int(parts[2])))
                elif parts[0] == "DELIVERED":
                    delivered = int(parts[1])
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()
        proc.stderr.close()
    from delay_writer import STORE_SETTINGS, TOPIC

    store = small_store(path, **STORE_SETTINGS)
    if freeze:  # no saved progress: the index showed what was delivered
        assert store.schedule.skipped_as_delivered >= delivered
    assert wait_until(lambda: store.schedule.pending() == 0, timeout=15)
    assert wait_until(lambda: sum(store.max_offset(TOPIC, q) for q in (0, 1)) >= len(acked), 10)
    copies = topic_messages(store, TOPIC)
    counts = Counter(m.uniq_key for m in copies)
    acked_ids = [a for a, _ in acked]
    assert len(acked_ids) >= count // 2
    missing = [a for a in acked_ids if counts[a] == 0]
    twice = {k: c for k, c in counts.items() if c > 1}
    assert not missing, f"lost {len(missing)} acknowledged delayed messages"
    assert not twice, f"delivered twice: {twice}"
    for m in copies:
        assert m.properties["REAL_QID"] == str(m.queue_id)
    store.close()
    # a second reopen delivers nothing more
    store = small_store(path, **STORE_SETTINGS)
    store.schedule.deliver_due()
    assert sorted(m.uniq_key for m in topic_messages(store, TOPIC)) == sorted(counts)


# -- golden stores --------------------------------------------------------------------


def _golden_with_delivery(**extra):
    config = dict(GOLDEN_CONFIG, schedule_delivery_enable=True)
    config.update(extra)
    return config


def test_golden_basic_delivers_nothing_new(small_store, tmp_path):
    path = copy_store("basic", tmp_path)
    store = small_store(path, **_golden_with_delivery())
    assert store.schedule.offsets() == {1: 2, 2: 2, 3: 2}
    before = {(t, q): store.max_offset(t, q) for t, qs in store.topics().items() for q in qs}
    end = store.max_commitlog_offset()
    assert store.schedule.pending() == 0
    assert store.schedule.deliver_due() is None
    time.sleep(0.3)  # the schedule thread's rounds too
    assert store.schedule.delivered == 0
    assert store.max_commitlog_offset() == end
    assert {(t, q): store.max_offset(t, q) for t, qs in store.topics().items()
            for q in qs} == before
    # the six deliveries RocketMQ made are each once in their real topic
    delivered = [r for r in manifest("basic") if r.get("source") == "scheduleDelivery"]
    assert len(delivered) == 6
    for row in delivered:
        found = store.query_by_key(row["topic"], row["uniqKey"])
        assert [m.commitlog_offset for m in found] == [row["commitLogOffset"]]


def test_golden_crash_delivers_each_once(small_store, tmp_path):
    path = copy_store("crash", tmp_path)
    rows = manifest("crash")
    parked = [r for r in rows if r["topic"] == SCHEDULE_TOPIC]
    assert len(parked) == 2
    # queue sizes as RocketMQ left them (delivery starts as the store opens)
    before = {}
    for r in parked:
        topic, qid = r["properties"]["REAL_TOPIC"], int(r["properties"]["REAL_QID"])
        before[topic] = 1 + max(x["queueOffset"] for x in rows
                                if x["topic"] == topic and x["queueId"] == qid)
    store = small_store(path, **_golden_with_delivery())
    assert wait_until(lambda: store.schedule.pending() == 0, timeout=10)
    for row in parked:
        topic, qid = row["properties"]["REAL_TOPIC"], int(row["properties"]["REAL_QID"])
        wait_dispatched(store, topic, qid, before[topic] + 1)

        def copies(row=row, topic=topic):
            return [m for m in store.query_by_key(topic, row["uniqKey"])
                    if m.commitlog_offset > row["commitLogOffset"]]

        assert wait_until(lambda: copies()), "not indexed"  # the index follows the CQ
        found = copies()
        assert len(found) == 1
        copy = found[0]
        assert copy.queue_id == qid
        assert copy.born_timestamp == row["bornTimestamp"]
        assert copy.properties == {k: v for k, v in row["properties"].items()}
        assert store.max_offset(topic, qid) == before[topic] + 1
    store.close()
    assert configfile.load(str(path / "config" / "delayOffset.json")) == {
        "offsetTable": {3: 2}}
    store = small_store(path, **_golden_with_delivery())
    end = store.max_commitlog_offset()
    assert store.schedule.deliver_due() is None
    time.sleep(0.2)
    assert store.max_commitlog_offset() == end
    assert store.schedule.delivered == 0
    for row in parked:
        topic = row["properties"]["REAL_TOPIC"]
        assert len([m for m in store.query_by_key(topic, row["uniqKey"])
                    if m.commitlog_offset > row["commitLogOffset"]]) == 1


def test_delay_offset_json_quoted_keys_accepted(small_store, store_dir, clock):
    """fastjson reads `{"1":2}` into RocketMQ's Map<Integer, Long> as well: a file
    written by another JSON tool must not make the store forget its progress."""
    store = small_store(clock=clock, message_delay_level="1s 5s 10s")
    producer = Producer(store, "pg")
    for i in range(3):
        producer.send(Message("Q", b"q%d" % i, delay_level=1), queue=0)
    wait_dispatched(store, SCHEDULE_TOPIC, 0, 3)
    clock.now = T0 + 1000
    store.schedule.deliver_due()
    wait_dispatched(store, "Q", 0, 3)
    store.close()
    path = store_dir / "config" / "delayOffset.json"
    path.write_text('{"offsetTable": {"1": 3}}')
    (store_dir / "config" / "delayOffset.json.bak").unlink(missing_ok=True)
    store = small_store(clock=clock, message_delay_level="1s 5s 10s",
                        message_index_enable=False)  # no de-dup net: the file must count
    assert store.schedule.offsets()[1] == 3
    store.schedule.deliver_due()
    assert store.max_offset("Q", 0) == 3
