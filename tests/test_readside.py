"""The read side of MessageStore against RocketMQ 4.9.8's rules (format doc §6, §7,
§10, §17): get's statuses and limits, tag filtering, offset_by_time, query_by_key,
damaged ConsumeQueue units and records, waking readers, and rebuilding ConsumeQueues
and the index from the CommitLog.

Every store here uses small files (and a small index: the default index file is
about 400 MiB)."""

from __future__ import annotations

import os
import shutil
import statistics
import struct
import threading
import time

import pytest

from mqstore import Message, MessageStore, java_hash
from mqstore.results import GetStatus

START_MS = 1_700_000_000_000
SMALL = dict(
    mapped_file_size_commitlog=8192,
    mapped_file_size_consume_queue=200,  # 10 units per ConsumeQueue file
    max_hash_slot_num=64,
    max_index_num=128,
)
UNIT = struct.Struct(">qiq")  # ConsumeQueue unit: CL offset, size, tag code


class Clock:
    """An injected store clock the test moves by hand."""

    def __init__(self, now: int = START_MS) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


@pytest.fixture
def open_store(tmp_path):
    """``open_store(name="store", **overrides)``: a MessageStore with SMALL files in
    tmp_path/name; every store opened is closed at teardown."""
    opened = []

    def make(name="store", **overrides):
        store = MessageStore(tmp_path / name, **{**SMALL, **overrides})
        opened.append(store)
        return store

    yield make
    for store in opened:
        store.close()


def settle(store, timeout: float = 5.0) -> None:
    """Wait (bounded) until the dispatcher has dispatched every record written."""
    deadline = time.monotonic() + timeout
    while store.dispatcher.behind() > 0:
        assert time.monotonic() < deadline, "dispatcher did not catch up"
        time.sleep(0.001)


def read_queue(store, topic, queue_id, start=None, tags=None, max_msgs=32):
    """Every message from `start` (default min offset) to the end, following
    next_begin_offset."""
    offset = store.min_offset(topic, queue_id) if start is None else start
    messages = []
    for _ in range(100_000):
        result = store.get(topic, queue_id, offset, max_msgs, tags=tags)
        if result.status in (GetStatus.OFFSET_OVERFLOW_ONE, GetStatus.NO_MESSAGE_IN_QUEUE):
            return messages
        assert result.status in (GetStatus.FOUND, GetStatus.NO_MATCHED_MESSAGE,
                                 GetStatus.MESSAGE_WAS_REMOVING), result
        assert result.next_begin_offset > offset, result
        messages.extend(result.messages)
        offset = result.next_begin_offset
    raise AssertionError("queue never ended")


def fingerprint(message):
    return (message.topic, message.queue_id, message.queue_offset, message.commitlog_offset,
            message.tags, message.keys, bytes(message.body), message.store_timestamp)


def cq_path(store_dir, topic, queue_id, name="00000000000000000000"):
    return os.path.join(store_dir, "consumequeue", topic, str(queue_id), name)


def read_units(path):
    with open(path, "rb") as f:
        return list(UNIT.iter_unpack(f.read()))


def tag_code(tag):
    return java_hash(tag) if tag else 0


# ------------------------------------------------------------------ offset_by_time


def test_offset_by_time_agrees_with_a_linear_scan(open_store):
    clock = Clock()
    store = open_store(clock=clock)
    gaps = [0, 0, 0, 500, 0, 3500, 1, 3999, 0, 0, 1000, 1, 1, 0, 60_000, 0, 2, 1000, 0, 0, 0, 7]
    times = []
    for i, gap in enumerate(gaps):
        clock.now += gap
        result = store.put(Message("T", b"m%d" % i), 0)
        assert result.store_timestamp == clock.now
        times.append(clock.now)
        # Another queue in between, so the queue's records are not contiguous.
        clock.now += 1 if i % 3 == 0 else 0
        store.put(Message("T", b"other %d" % i), 1)
    settle(store)
    assert store.max_offset("T", 0) == len(times) > 20  # more than two ConsumeQueue files

    def linear(timestamp):
        return next((i for i, t in enumerate(times) if t >= timestamp), len(times))

    probes = {times[0] - 10**9, times[0] - 1, times[-1] + 1, times[-1] + 10**9, 0}
    for t in times:
        probes |= {t - 1, t, t + 1}
    for a, b in zip(times, times[1:]):
        probes.add((a + b) // 2)
    for probe in sorted(probes):
        assert store.offset_by_time("T", 0, probe) == linear(probe), probe
    store.close()
    store = open_store(clock=clock)  # the same answers from the files alone
    for probe in sorted(probes):
        assert store.offset_by_time("T", 0, probe) == linear(probe), probe
    assert store.offset_by_time("T", 0, times[0]) == 0
    assert store.offset_by_time("T", 0, times[-1] + 1) == len(times)  # the max offset
    assert store.offset_by_time("Unknown", 0, times[0]) == 0
    assert store.offset_by_time("T", 7, times[0]) == 0


# ------------------------------------------------------------------- get statuses


def test_no_message_in_queue_comes_first(open_store):
    store = open_store()
    store.put(Message("Other", b"x"))
    settle(store)
    for offset in (0, 1, 5):
        result = store.get("T", 0, offset)
        assert result.status is GetStatus.NO_MESSAGE_IN_QUEUE
        assert (result.messages, result.next_begin_offset) == ([], 0)
        assert (result.min_offset, result.max_offset) == (0, 0)


def test_found_overflow_and_no_match_statuses(open_store):
    store = open_store()
    puts = [store.put(Message("T", b"body %d" % i, tags="AB"[i % 2]), 0) for i in range(15)]
    settle(store)

    result = store.get("T", 0, 0)
    assert result.status is GetStatus.FOUND
    # One ConsumeQueue file (10 units) per call.
    assert [m.queue_offset for m in result.messages] == list(range(10))
    assert [m.commitlog_offset for m in result.messages] == [p.commitlog_offset for p in puts[:10]]
    assert (result.next_begin_offset, result.min_offset, result.max_offset) == (10, 0, 15)

    result = store.get("T", 0, 7, max_msgs=100)
    assert [m.queue_offset for m in result.messages] == [7, 8, 9]
    assert result.next_begin_offset == 10

    result = store.get("T", 0, 10)
    assert result.status is GetStatus.FOUND
    assert [bytes(m.body) for m in result.messages] == [b"body %d" % i for i in range(10, 15)]
    assert result.next_begin_offset == 15

    result = store.get("T", 0, 15)
    assert result.status is GetStatus.OFFSET_OVERFLOW_ONE
    assert (result.messages, result.next_begin_offset) == ([], 15)

    for offset in (16, 17, 1000):
        result = store.get("T", 0, offset)
        assert result.status is GetStatus.OFFSET_OVERFLOW_BADLY
        assert (result.messages, result.next_begin_offset, result.max_offset) == ([], 15, 15)

    # Nothing matches: every unit of the file is scanned and counted.
    result = store.get("T", 0, 0, tags="C")
    assert result.status is GetStatus.NO_MATCHED_MESSAGE
    assert (result.messages, result.next_begin_offset) == ([], 10)
    result = store.get("T", 0, 12, tags="C")
    assert (result.status, result.next_begin_offset) == (GetStatus.NO_MATCHED_MESSAGE, 15)

    # max_msgs counts matching messages; filtered units before them still count.
    result = store.get("T", 0, 0, max_msgs=2, tags="B")
    assert [m.queue_offset for m in result.messages] == [1, 3]
    assert result.next_begin_offset == 4
    result = store.get("T", 0, 0, max_msgs=1)
    assert [m.queue_offset for m in result.messages] == [0]
    assert result.next_begin_offset == 1


def test_at_most_32_messages_per_call(open_store):
    store = open_store(mapped_file_size_commitlog=64 * 1024, mapped_file_size_consume_queue=2000)
    for i in range(50):
        store.put(Message("T", b"m%d" % i), 0)
    settle(store)
    for max_msgs, expected in ((31, 31), (32, 32), (33, 32), (40, 32), (1000, 32)):
        result = store.get("T", 0, 0, max_msgs)
        assert len(result.messages) == expected, max_msgs
        assert result.next_begin_offset == expected
    result = store.get("T", 0, 32, 40)
    assert [m.queue_offset for m in result.messages] == list(range(32, 50))


def test_transfer_bytes_limit_of_256_kib(open_store):
    store = open_store(mapped_file_size_commitlog=1024 * 1024, mapped_file_size_consume_queue=2000)
    sizes = {store.put(Message("T", bytes(30_000)), 0).store_size for _ in range(12)}
    assert len(sizes) == 1
    size = sizes.pop()
    settle(store)
    result = store.get("T", 0, 0, 32)
    expected = 256 * 1024 // size  # the record that would pass 256 KiB is not taken
    assert 1 < expected < 12
    assert len(result.messages) == expected
    assert result.next_begin_offset == expected
    # A single record larger than the limit is still returned (never an empty batch).
    big = open_store("big", mapped_file_size_commitlog=1024 * 1024)
    big.put(Message("T", bytes(300_000)), 0)
    big.put(Message("T", bytes(10)), 0)
    settle(big)
    result = big.get("T", 0, 0)
    assert [len(m.body) for m in result.messages] == [300_000]
    assert result.next_begin_offset == 1


def _fill_for_deletion(store, count, body_size):
    puts = [store.put(Message("T", bytes([i % 251]) * body_size, keys=f"key{i}"), 0)
            for i in range(count)]
    assert all(p.ok for p in puts)
    settle(store)
    return puts


def test_offset_too_small_after_commitlog_head_files_are_gone(open_store, tmp_path):
    """Deleting the first CommitLog file (as expiry does) and reopening moves the
    queue's min to the first unit whose record still exists."""
    store = open_store()
    puts = _fill_for_deletion(store, 40, 900)
    store.close()
    os.remove(os.path.join(tmp_path, "store", "commitlog", "00000000000000000000"))
    survivors = [p for p in puts if p.commitlog_offset >= 8192]
    first = survivors[0].queue_offset
    assert 0 < first < 10  # the first survivor is in the first ConsumeQueue file

    store = open_store()
    assert store.min_commitlog_offset() == 8192
    assert store.min_offset("T", 0) == first
    assert store.max_offset("T", 0) == 40
    for offset in (0, first - 1):
        result = store.get("T", 0, offset)
        assert result.status is GetStatus.OFFSET_TOO_SMALL
        assert result.messages == []
        assert result.next_begin_offset == result.min_offset == first
        assert result.max_offset == 40
    result = store.get("T", 0, first)
    assert result.status is GetStatus.FOUND
    assert result.messages[0].commitlog_offset == survivors[0].commitlog_offset
    assert [m.commitlog_offset for m in read_queue(store, "T", 0)] == [
        p.commitlog_offset for p in survivors]
    # offset_by_time before every survivor is the min offset.
    assert store.offset_by_time("T", 0, 0) == first
    # A message that is gone is gone for every read.
    assert store.look_by_offset(puts[0].commitlog_offset) is None
    assert store.query_by_key("T", "key0") == []
    assert [m.commitlog_offset for m in store.query_by_key("T", f"key{first}")] == [
        survivors[0].commitlog_offset]


def test_reading_from_min_when_a_whole_queue_file_is_expired(open_store, tmp_path):
    """Two CommitLog files gone: more units than the first ConsumeQueue file holds
    point below the CommitLog's min. Whatever min the queue reports, reading from it
    returns exactly the surviving messages."""
    store = open_store()
    puts = _fill_for_deletion(store, 40, 900)
    store.close()
    for name in ("00000000000000000000", "00000000000000008192"):
        os.remove(os.path.join(tmp_path, "store", "commitlog", name))
    survivors = [p for p in puts if p.commitlog_offset >= 16384]
    assert survivors[0].queue_offset > 10

    store = open_store()
    min_offset = store.min_offset("T", 0)
    assert 10 <= min_offset <= survivors[0].queue_offset
    assert store.get("T", 0, min_offset - 1).status is GetStatus.OFFSET_TOO_SMALL
    assert [m.commitlog_offset for m in read_queue(store, "T", 0)] == [
        p.commitlog_offset for p in survivors]


def test_prefilled_queue_rebuilt_after_head_deletion(open_store, tmp_path):
    """consumequeue/ deleted and the CommitLog's first file gone: the queue is rebuilt
    from the first surviving record, its first file pre-filled with blank units up to
    that record's queue offset (§6.3), and its min is that offset."""
    store = open_store()
    puts = _fill_for_deletion(store, 40, 900)
    store.close()
    shutil.rmtree(tmp_path / "store" / "consumequeue")
    os.remove(tmp_path / "store" / "commitlog" / "00000000000000000000")
    survivors = [p for p in puts if p.commitlog_offset >= 8192]
    first = survivors[0].queue_offset
    assert 0 < first < 10

    store = open_store()
    assert store.min_offset("T", 0) == first
    assert store.max_offset("T", 0) == 40
    result = store.get("T", 0, first - 1)
    assert (result.status, result.next_begin_offset) == (GetStatus.OFFSET_TOO_SMALL, first)
    assert [m.commitlog_offset for m in read_queue(store, "T", 0)] == [
        p.commitlog_offset for p in survivors]
    store.close()
    units = read_units(cq_path(tmp_path / "store", "T", 0))
    assert units[:first] == [(0, 0x7FFFFFFF, 0)] * first
    assert units[first][:2] == (survivors[0].commitlog_offset, survivors[0].store_size)


def test_message_was_removing_while_the_queue_still_points_at_deleted_records(open_store):
    """A CommitLog head file deleted under a running store (its queues not corrected
    yet): units pointing below the CommitLog's min are skipped as
    MESSAGE_WAS_REMOVING, and the scan moves on."""
    store = open_store()
    puts = _fill_for_deletion(store, 40, 250)
    in_first_file = [p for p in puts if p.commitlog_offset < 8192]
    assert len(in_first_file) > 10  # the whole first ConsumeQueue file points there
    deleted = store.commitlog.queue.delete_first_files(1)
    assert len(deleted) == 1 and store.min_commitlog_offset() == 8192

    first_survivor = len(in_first_file)
    assert first_survivor % 10  # one ConsumeQueue file mixes removed and kept records
    for start in range(0, 40, 10):
        result = store.get("T", 0, start)
        kept = [i for i in range(start, start + 10) if i >= first_survivor]
        assert [m.queue_offset for m in result.messages] == kept, start
        assert result.status is (GetStatus.FOUND if kept else GetStatus.MESSAGE_WAS_REMOVING)
        assert result.next_begin_offset == start + 10
    assert [m.queue_offset for m in read_queue(store, "T", 0)] == list(range(first_survivor, 40))
    assert store.offset_by_time("T", 0, 0) == first_survivor


def test_offset_found_null_when_the_queue_file_is_missing(open_store):
    """The ConsumeQueue file holding an offset between min and max is gone (provoked
    through internals: nothing public removes a queue file of a live store)."""
    store = open_store()
    for i in range(25):
        store.put(Message("T", b"m%d" % i), 0)
    settle(store)
    queue = store.consume_queue("T", 0)
    queue.queue.delete_first_files(1)
    assert (store.min_offset("T", 0), store.max_offset("T", 0)) == (0, 25)
    for offset in (0, 3, 9):
        result = store.get("T", 0, offset)
        assert result.status is GetStatus.OFFSET_FOUND_NULL
        assert (result.messages, result.next_begin_offset) == ([], 10)
    result = store.get("T", 0, 10)
    assert result.status is GetStatus.FOUND
    assert [m.queue_offset for m in result.messages] == list(range(10, 20))


# ------------------------------------------------------------------ tag filtering


def test_colliding_tags_are_not_returned_for_each_other(open_store, tmp_path):
    assert java_hash("Aa") == java_hash("BB") == 2112
    store = open_store(mapped_file_size_consume_queue=400)
    tags = ["Aa", "BB", None, "Aa", "A", "BB", "B", "Aa"]
    for i, tag in enumerate(tags):
        store.put(Message("T", b"m%d" % i, tags=tag), 0)
    settle(store)
    # The ConsumeQueue really holds the same tag code for both.
    store.flush()
    units = read_units(cq_path(tmp_path / "store", "T", 0))
    assert [u[2] for u in units[:len(tags)]] == [tag_code(t) for t in tags]
    assert units[0][2] == units[1][2] == 2112

    for expression in ("Aa", "BB", "A", "B"):
        result = store.get("T", 0, 0, tags=expression)
        assert result.status is GetStatus.FOUND
        assert [m.queue_offset for m in result.messages] == [
            i for i, t in enumerate(tags) if t == expression], expression
        assert all(m.tags == expression for m in result.messages)
        assert result.next_begin_offset == len(tags)
    result = store.get("T", 0, 0, max_msgs=2, tags="BB")
    assert [m.queue_offset for m in result.messages] == [1, 5]
    assert result.next_begin_offset == 6
    # Only the colliding tag matches from offset 2 on: nothing returned, all scanned.
    result = store.get("T", 0, 6, tags="BB")
    assert (result.status, result.messages, result.next_begin_offset) == (
        GetStatus.NO_MATCHED_MESSAGE, [], 8)
    # "*" and None take everything, also the untagged message.
    for expression in (None, "*", " * "):
        assert len(store.get("T", 0, 0, tags=expression).messages) == len(tags)


def test_tag_expression_with_spaces_and_negative_hash(open_store):
    negative = "polygenelubricants"  # Java hash Integer.MIN_VALUE
    assert java_hash(negative) == -(2**31)
    store = open_store()
    tags = ["a", "b", "c", negative, "a", None]
    for i, tag in enumerate(tags):
        store.put(Message("T", b"m%d" % i, tags=tag), 0)
    settle(store)
    for expression in ("a || b", "a||b", "  a   ||   b  ", "b || a || a"):
        result = store.get("T", 0, 0, tags=expression)
        assert [m.queue_offset for m in result.messages] == [0, 1, 4], expression
    result = store.get("T", 0, 0, tags=negative)
    assert [m.queue_offset for m in result.messages] == [3]
    result = store.get("T", 0, 0, tags=f"c || {negative}")
    assert [m.queue_offset for m in result.messages] == [2, 3]


@pytest.mark.parametrize("expression, position", [
    ("a ||", 4),
    ("|| b", 0),
    ("a |||| b", 4),
    ("a || || b", 4),
    ("||", 0),
])
def test_malformed_tag_expression_names_the_position(open_store, expression, position):
    store = open_store()
    store.put(Message("T", b"x", tags="a"), 0)
    settle(store)
    with pytest.raises(ValueError, match=rf"position {position}\b"):
        store.get("T", 0, 0, tags=expression)


# ---------------------------------------------------------------------- bad input


def test_unknown_topic_or_queue_is_no_message_in_queue(open_store, tmp_path):
    store = open_store()
    store.put(Message("T", b"x"), 0)
    settle(store)
    topics = store.topics()
    for topic, queue_id in (("Nope", 0), ("T", 1), ("T", 2**31 - 1)):
        result = store.get(topic, queue_id, 0)
        assert result.status is GetStatus.NO_MESSAGE_IN_QUEUE
        assert (result.messages, result.next_begin_offset) == ([], 0)
        assert (result.min_offset, result.max_offset) == (0, 0)
        assert store.min_offset(topic, queue_id) == store.max_offset(topic, queue_id) == 0
    # Reading made nothing.
    assert store.topics() == topics == {"T": [0]}
    assert sorted(os.listdir(tmp_path / "store" / "consumequeue")) == ["T"]


def test_waiting_on_an_unknown_queue_creates_no_topic(open_store):
    store = open_store()
    store.put(Message("T", b"x"), 0)
    settle(store)
    assert store.wait_for_message("Ghost", 3, 0, timeout=0.01) is False
    assert store.topics() == {"T": [0]}


def test_bad_arguments_raise(open_store):
    store = open_store()
    store.put(Message("T", b"x", keys="k"), 0)
    settle(store)
    with pytest.raises(ValueError, match="offset"):
        store.get("T", 0, -1)
    for max_msgs in (0, -1):
        with pytest.raises(ValueError, match="max_msgs"):
            store.get("T", 0, 0, max_msgs)
        with pytest.raises(ValueError, match="max_msgs"):
            store.query_by_key("T", "k", max_msgs=max_msgs)
    for topic in (None, 5, b"T"):
        with pytest.raises(TypeError, match="topic"):
            store.get(topic, 0, 0)
    with pytest.raises(TypeError):
        store.get("T", 0, "0")
    with pytest.raises(TypeError):
        store.get("T", 0, 0, tags=5)
    with pytest.raises(ValueError):
        store.get("T", -1, 0)
    for key in (None, 5, b"k", ["k"]):
        with pytest.raises(TypeError):
            store.query_by_key("T", key)
    with pytest.raises(TypeError):
        store.query_by_key(b"T", "k")
    for msg_id in ("zz", "", "7F0000010000" + "G" * 20, "7F00000100002A9F00000000000000"):
        with pytest.raises(ValueError):
            store.look_by_msg_id(msg_id)
    # A well-formed id of a record that does not exist is not an error.
    assert store.look_by_msg_id("7F00000100002A9F" + "%016X" % 10**6) is None
    # After all that, the store still reads normally.
    assert [bytes(m.body) for m in store.get("T", 0, 0).messages] == [b"x"]
    assert [bytes(m.body) for m in store.query_by_key("T", "k")] == [b"x"]


# ------------------------------------------------------------------ damaged units


def _damaged_store(open_store, tmp_path, count=25, body_size=20):
    store = open_store()
    puts = [store.put(Message("T", b"%d:" % i + bytes(body_size), tags="t", keys=f"k{i}"), 0)
            for i in range(count)]
    settle(store)
    store.close()
    return puts


def _write_unit(store_dir, queue_offset, unit, file_size=200):
    """Overwrite one unit of consumequeue/T/0 (store closed)."""
    logical = queue_offset * 20
    name = f"{logical - logical % file_size:020d}"
    with open(cq_path(store_dir, "T", 0, name), "r+b") as f:
        f.seek(logical % file_size)
        f.write(UNIT.pack(*unit))


def _bad_unit(put, damage):
    offset, size = put.commitlog_offset, put.store_size
    return {
        "beyond_the_log": (10**9, size, tag_code("t")),
        "into_a_record": (offset + 8, size, tag_code("t")),
        "wrong_size": (offset, size + 1, tag_code("t")),
        "negative_size": (offset, -5, tag_code("t")),
    }[damage]


@pytest.mark.parametrize("damage", ["beyond_the_log", "into_a_record", "wrong_size"])
def test_damaged_queue_unit_is_skipped_and_counted(open_store, tmp_path, damage):
    """A unit in an old ConsumeQueue file (which recovery leaves alone) points
    nowhere useful: get passes over it, returns the others, counts it, never raises."""
    puts = _damaged_store(open_store, tmp_path)  # 25 units: 3 ConsumeQueue files
    bad = 3
    _write_unit(tmp_path / "store", bad, _bad_unit(puts[bad], damage))
    store = open_store()
    assert store.max_offset("T", 0) == len(puts)
    expected = [p.commitlog_offset for i, p in enumerate(puts[:10]) if i != bad]
    for round_ in (1, 2):
        result = store.get("T", 0, 0)
        assert result.status is GetStatus.FOUND
        assert [m.commitlog_offset for m in result.messages] == expected
        assert result.next_begin_offset == 10
        assert store.damaged_units == round_
    result = store.get("T", 0, bad, max_msgs=3, tags="t")
    assert [m.queue_offset for m in result.messages] == [bad + 1, bad + 2, bad + 3]
    assert result.next_begin_offset == bad + 4
    assert store.damaged_units == 3
    # Other reads do not raise either.
    store.offset_by_time("T", 0, START_MS)
    assert [m.queue_offset for m in read_queue(store, "T", 0)] == [
        i for i in range(len(puts)) if i != bad]
    assert store.damaged_units == 4


@pytest.mark.parametrize("damage, bad", [
    ("negative_size", 3),  # recovery ends the queue at the first invalid unit (§6.4)
    ("beyond_the_log", 22),  # ... and at the first unit past the log's end in the
    ("beyond_the_log", 24),  # last file (RocketMQ's truncateDirtyLogicFiles)
])
def test_damaged_unit_cut_by_recovery_is_rebuilt(open_store, tmp_path, damage, bad):
    """Recovery cuts the queue at the damaged unit and dispatch rewrites it and all
    after it from the CommitLog: nothing is lost, nothing counted as damaged."""
    puts = _damaged_store(open_store, tmp_path)
    _write_unit(tmp_path / "store", bad, _bad_unit(puts[bad], damage))
    store = open_store()
    assert store.max_offset("T", 0) == len(puts)
    assert [m.commitlog_offset for m in read_queue(store, "T", 0)] == [
        p.commitlog_offset for p in puts]
    assert store.damaged_units == 0


@pytest.mark.parametrize("why", ["damaged", "removed"])
def test_skipped_units_do_not_shrink_the_batch(open_store, tmp_path, why):
    if why == "damaged":
        puts = _damaged_store(open_store, tmp_path)
        _write_unit(tmp_path / "store", 3, _bad_unit(puts[3], "into_a_record"))
        store = open_store()
        start, first_readable = 3, 4
    else:
        store = open_store()
        puts = _fill_for_deletion(store, 40, 250)
        store.commitlog.queue.delete_first_files(1)
        first_readable = sum(p.commitlog_offset < 8192 for p in puts)
        start = first_readable - 1
    # Same answer as with a filter that lets everything through.
    filtered = store.get("T", 0, start, max_msgs=1, tags="t" if why == "damaged" else None)
    result = store.get("T", 0, start, max_msgs=1)
    assert [m.queue_offset for m in result.messages] == [first_readable], (filtered, result)
    assert result.status is GetStatus.FOUND
    assert result.next_begin_offset == first_readable + 1


def test_damaged_commitlog_record_is_skipped_and_counted(open_store, tmp_path):
    """The magic code of a record in an old CommitLog file (which recovery, walking
    from the third-last file, does not check) is flipped: get skips that record."""
    store = open_store()
    puts = [store.put(Message("T", b"%d:" % i + bytes(900), tags="t", keys=f"k{i}"), 0)
            for i in range(45)]
    settle(store)
    store.close()
    files = sorted(os.listdir(tmp_path / "store" / "commitlog"))
    assert len(files) >= 5
    bad = 2
    assert puts[bad].commitlog_offset + puts[bad].store_size < 8192
    with open(tmp_path / "store" / "commitlog" / files[0], "r+b") as f:
        f.seek(puts[bad].commitlog_offset + 4)
        magic = f.read(4)
        f.seek(puts[bad].commitlog_offset + 4)
        f.write(bytes(b ^ 0xFF for b in magic))

    store = open_store()
    assert store.max_offset("T", 0) == len(puts)
    result = store.get("T", 0, 0)
    assert result.status is GetStatus.FOUND
    assert [m.queue_offset for m in result.messages] == [i for i in range(10) if i != bad]
    assert result.next_begin_offset == 10
    assert store.damaged_units == 1
    assert [m.queue_offset for m in read_queue(store, "T", 0)] == [
        i for i in range(len(puts)) if i != bad]
    assert store.damaged_units == 2
    # A key lookup of the damaged record finds nothing instead of raising.
    assert store.query_by_key("T", f"k{bad}") == []
    assert [m.queue_offset for m in store.query_by_key("T", f"k{bad + 1}")] == [bad + 1]


# ---------------------------------------------------------------- waking readers


def test_wait_for_message_wakes_up_on_put(open_store):
    store = open_store()
    latencies = []
    for i in range(15):
        ready = threading.Event()
        outcome = {}

        def wait(offset=i, ready=ready, outcome=outcome):
            ready.set()
            outcome["value"] = store.wait_for_message("T", 0, offset, timeout=5)
            outcome["at"] = time.perf_counter()

        waiter = threading.Thread(target=wait)
        waiter.start()
        ready.wait()
        time.sleep(0.02)  # let the waiter block
        assert "value" not in outcome, "wait_for_message returned before the put"
        put_at = time.perf_counter()
        assert store.put(Message("T", b"m%d" % i), 0).ok
        waiter.join(6)
        assert not waiter.is_alive()
        assert outcome["value"] is True
        latencies.append(outcome["at"] - put_at)
    median = statistics.median(latencies)
    print(f"wait_for_message wake-up after put: median {median * 1000:.2f} ms, "
          f"max {max(latencies) * 1000:.2f} ms")
    assert median < 0.5, f"median wake-up {median * 1000:.1f} ms (expected ~1 ms)"
    assert max(latencies) < 2.0, f"slowest wake-up {max(latencies) * 1000:.1f} ms"
    # A message that is already there: True at once.
    started = time.perf_counter()
    assert store.wait_for_message("T", 0, 0, timeout=5) is True
    assert time.perf_counter() - started < 0.5


def test_wait_for_message_times_out(open_store):
    store = open_store()
    store.put(Message("T", b"x"), 0)
    settle(store)
    for topic, offset in (("T", 1), ("T", 5), ("Empty", 0)):
        started = time.perf_counter()
        assert store.wait_for_message(topic, 0, offset, timeout=0.2) is False
        elapsed = time.perf_counter() - started
        assert 0.18 <= elapsed < 2.0, elapsed


def test_put_is_visible_to_get_within_100_ms(open_store):
    store = open_store()
    delays = []
    for i in range(20):
        result = store.put(Message("T", b"m%d" % i), 0)
        put_at = time.perf_counter()
        while True:
            got = store.get("T", 0, i)
            if got.status is GetStatus.FOUND:
                break
            assert got.status in (GetStatus.OFFSET_OVERFLOW_ONE,
                                  GetStatus.NO_MESSAGE_IN_QUEUE), got
            assert time.perf_counter() - put_at < 2.0, "put never became visible"
            time.sleep(0.0005)
        delays.append(time.perf_counter() - put_at)
        assert got.messages[0].commitlog_offset == result.commitlog_offset
    median = statistics.median(delays)
    print(f"put to visible: median {median * 1000:.2f} ms, max {max(delays) * 1000:.2f} ms")
    assert median < 0.1, f"median put-to-visible {median * 1000:.1f} ms"
    assert max(delays) < 1.0, f"slowest put-to-visible {max(delays) * 1000:.1f} ms"


# --------------------------------------------------------------------- rebuilding


def _populate(store, clock):
    keys = {}
    for i in range(60):
        clock.now += 250 * (i % 4)
        topic = ["T1", "T2", "%RETRY%g"][i % 3]
        queue_id = i % 2
        key = f"key{i % 7}"
        result = store.put(Message(topic, b"body %d" % i, tags=["A", "B", None][i % 3],
                                   keys=[key, f"u{i}"]), queue_id)
        assert result.ok
        keys.setdefault((topic, key), []).append(result.commitlog_offset)
    settle(store)
    return keys


def _snapshot(store, keys):
    queues = {(t, q): [fingerprint(m) for m in read_queue(store, t, q)]
              for t, ids in store.topics().items() for q in ids}
    bounds = {(t, q): (store.min_offset(t, q), store.max_offset(t, q)) for t, q in queues}
    found = {(t, k): [m.commitlog_offset for m in store.query_by_key(t, k, max_msgs=64)]
             for t, k in keys}
    return store.topics(), queues, bounds, found


def _files(directory):
    return {os.path.relpath(os.path.join(root, name), directory):
            open(os.path.join(root, name), "rb").read()
            for root, _dirs, names in os.walk(directory) for name in names}


INDEX_NOT_REBUILT = pytest.mark.xfail(strict=True, reason=(
    "known limitation, as in RocketMQ 4.9.8: with index/ deleted but the queues intact, "
    "dispatch resumes at the queues' end, so nothing is indexed again; delete "
    "consumequeue/ too to rebuild both (starting dispatch at the index's end instead "
    "would re-dispatch the whole log at every open of a store without keyed messages)"))


@pytest.mark.parametrize("drop", [
    ("consumequeue",),
    pytest.param(("index",), marks=INDEX_NOT_REBUILT),
    ("consumequeue", "index"),
])
def test_reopen_rebuilds_deleted_queues_and_index(open_store, tmp_path, drop):
    clock = Clock()
    store = open_store(clock=clock, max_index_num=32)  # several index files
    keys = _populate(store, clock)
    before = _snapshot(store, keys)
    topics, queues, _bounds, found = before
    assert topics == {"%RETRY%g": [0, 1], "T1": [0, 1], "T2": [0, 1]}
    assert sum(len(q) for q in queues.values()) == 60
    for (topic, key), offsets in keys.items():
        assert found[(topic, key)] == offsets, (topic, key)
    store.close()
    queue_files = _files(tmp_path / "store" / "consumequeue")
    assert len(os.listdir(tmp_path / "store" / "index")) > 1

    for name in drop:
        shutil.rmtree(tmp_path / "store" / name)
    clock.now += 10_000
    store = open_store(clock=clock, max_index_num=32)
    assert _snapshot(store, keys) == before
    store.close()
    # Rebuilt ConsumeQueue files are byte for byte the ones dispatch wrote first.
    assert _files(tmp_path / "store" / "consumequeue") == queue_files


def test_query_by_key_finds_the_first_entry_of_a_new_index_file(open_store):
    """The first entry of a new index file is timed against the previous file's end
    (RocketMQ writes it so): a query with the default end, right after the put, must
    still find it."""
    clock = Clock()
    store = open_store(clock=clock, max_index_num=3)  # two entries per index file
    store.put(Message("T", b"a", keys="k0"))
    store.put(Message("T", b"b", keys="k1"))
    clock.now += 5_000
    third = store.put(Message("T", b"c", keys="k2"))
    settle(store)
    assert len(store.index.files) == 2
    assert [m.commitlog_offset for m in store.query_by_key("T", "k2")] == [third.commitlog_offset]
    assert [m.commitlog_offset for m in store.query_by_key("T", "k2", end=clock.now)] == [
        third.commitlog_offset]
    assert store.query_by_key("T", "k2", end=clock.now - 1) == []
    assert [bytes(m.body) for m in store.query_by_key("T", "k0", end=START_MS)] == [b"a"]


def test_query_by_key_time_bounds_are_exact_to_the_millisecond(open_store):
    clock = Clock()
    store = open_store(clock=clock)
    stamps = []
    for gap in (0, 1500, 1000, 1, 998):
        clock.now += gap
        stamps.append(store.put(Message("T", b"x", keys="k")).store_timestamp)
    settle(store)
    for begin in sorted({t + d for t in stamps for d in (-1000, -1, 0, 1, 999)}):
        for end in (begin + 1, begin + 1000, stamps[-1], 2**62):
            got = [m.store_timestamp for m in store.query_by_key("T", "k", begin=begin, end=end)]
            assert got == [t for t in stamps if begin <= t <= end], (begin, end)


# ------------------------------------------------------------------ file rolling


@pytest.mark.parametrize("configured, unit_count", [(200, 10), (210, 11)])
def test_consume_queue_files_roll_at_the_unit_count(open_store, tmp_path, configured, unit_count):
    store = open_store(mapped_file_size_consume_queue=configured)
    tags = [None, "A", "polygenelubricants", "TagA"]
    puts = [store.put(Message("T", b"m%d" % i, tags=tags[i % 4]), 0) for i in range(35)]
    settle(store)
    store.close()
    file_size = unit_count * 20
    directory = tmp_path / "store" / "consumequeue" / "T" / "0"
    names = sorted(os.listdir(directory))
    count = -(-35 // unit_count)
    assert names == [f"{i * file_size:020d}" for i in range(count)]
    units = []
    for name in names:
        assert os.path.getsize(directory / name) == file_size
        units.extend(read_units(directory / name))
    assert units[:35] == [(p.commitlog_offset, p.store_size, tag_code(tags[i % 4]))
                          for i, p in enumerate(puts)]
    assert all(u == (0, 0, 0) for u in units[35:])
    assert units[2][2] == -(2**31) and units[3][2] == 2598919  # sign-extended, "TagA"

    store = open_store(mapped_file_size_consume_queue=configured)
    assert store.max_offset("T", 0) == 35
    result = store.get("T", 0, unit_count - 1, max_msgs=32)
    assert [m.queue_offset for m in result.messages] == [unit_count - 1]  # end of that file
