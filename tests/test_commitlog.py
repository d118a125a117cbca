"""CommitLog roll-over at every interesting file boundary (RocketMQ's blank record),
batches, reopening, and atomic batches (rejected batches write nothing; readers never
see part of a batch)."""

from __future__ import annotations

import os
import struct
import tempfile
import threading
import time
import zlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mqstore import Message, MessageStore, PutStatus, codec
from mqstore.mappedfile import file_name

TOPIC = "T"
BLANK_MAGIC = 0xCBD43194
MESSAGE_MAGIC = 0xDAA320A7
OVERHEAD = codec.record_size(0, len(TOPIC), 0)  # 92: 91 fixed + 1 topic byte
BODY_OFFSET = 88  # IPv4 born and store hosts


# The default ConsumeQueue and index sizes reserve 6 MB per queue and 420 MB per index
# file on disk (posix_fallocate); tests that open many stores use small ones.
SMALL_LIMITS = dict(mapped_file_size_consume_queue=20 * 1024, max_hash_slot_num=512,
                    max_index_num=2048)


def small(file_size, **overrides):
    """Store settings with `file_size` CommitLog files and small CQ / index files."""
    return dict(mapped_file_size_commitlog=file_size, **SMALL_LIMITS, **overrides)


def body_for(total: int) -> int:
    """Body length that makes a record of `total` bytes (topic T, no properties)."""
    assert total >= OVERHEAD
    return total - OVERHEAD


def make_body(tag: int, length: int) -> bytes:
    seed = f"<{tag}>".encode()
    return (seed * (length // len(seed) + 1))[:length]


class Model:
    """Where RocketMQ puts records: a record (or whole batch) of L bytes goes at the
    current position when L + 8 <= bytes left in the file, otherwise an 8-byte blank
    header (TOTALSIZE = bytes left) closes the file and it goes to the next file."""

    def __init__(self, file_size: int) -> None:
        self.fs = file_size
        self.pos = 0
        self.records = []  # (offset, body, queue_id, queue_offset, size)
        self.blanks = []  # (offset, bytes_left)
        self.queue_offsets = {}

    def left(self) -> int:
        return self.fs - self.pos % self.fs

    def fits_anywhere(self, total: int) -> bool:
        return total + 8 <= self.fs

    def place(self, total: int) -> int:
        left = self.left()
        if total + 8 > left:
            self.blanks.append((self.pos, left))
            self.pos += left
        offset = self.pos
        self.pos += total
        return offset

    def add(self, offset, body, queue_id):
        queue_offset = self.queue_offsets.get(queue_id, 0)
        self.queue_offsets[queue_id] = queue_offset + 1
        self.records.append((offset, body, queue_id, queue_offset, OVERHEAD + len(body)))
        return queue_offset

    def put(self, store: MessageStore, body: bytes, queue_id: int = 0):
        total = OVERHEAD + len(body)
        result = store.put(Message(TOPIC, body), queue_id)
        if not self.fits_anywhere(total):
            assert result.status is PutStatus.MESSAGE_ILLEGAL, result
            assert result.error
            return result
        assert result.status is PutStatus.PUT_OK, result
        offset = self.place(total)
        assert result.commitlog_offset == offset
        assert result.store_size == total
        assert result.queue_offset == self.add(offset, body, queue_id)
        return result

    def put_batch(self, store: MessageStore, bodies, queue_id: int = 0):
        total = sum(OVERHEAD + len(b) for b in bodies)
        result = store.put_batch([Message(TOPIC, b) for b in bodies], queue_id)
        if not self.fits_anywhere(total):
            assert result.status is PutStatus.MESSAGE_ILLEGAL, result
            assert len(result) == 0
            return result
        assert result.status is PutStatus.PUT_OK, result
        offset = self.place(total)
        expected = []
        for body in bodies:
            expected.append(offset)
            self.add(offset, body, queue_id)
            offset += OVERHEAD + len(body)
        assert result.commitlog_offsets == expected
        assert [r.queue_offset for r in result] == [
            rec[3] for rec in self.records[-len(bodies):]
        ]
        return result

    def fill_to_left(self, store: MessageStore, target_left: int, tag: int = 0) -> None:
        """Put filler records until exactly `target_left` bytes are left in the file."""
        assert target_left >= 8
        rem = self.left() - target_left
        if rem < 0:  # go to the next file first
            self.put(store, make_body(tag, body_for(max(OVERHEAD, self.left() - 7))))
            rem = self.left() - target_left
        while rem > 0:
            size = rem if rem <= 4000 else min(4000, rem - 100)
            assert size >= OVERHEAD, (rem, size)
            self.put(store, make_body(tag, body_for(size)))
            rem = self.left() - target_left
        assert self.left() == target_left


def read_disk(store_dir, fs: int, offset: int, length: int) -> bytes:
    path = os.path.join(store_dir, "commitlog", file_name(offset - offset % fs))
    with open(path, "rb") as f:
        f.seek(offset % fs)
        return f.read(length)


def verify(store: MessageStore, store_dir, model: Model) -> None:
    """Every record and blank of the model is on disk, readable by offset and by
    iteration, and nothing else is there."""
    fs = model.fs
    assert store.max_commitlog_offset() == model.pos
    for offset, left in model.blanks:
        raw = read_disk(store_dir, fs, offset, left)
        assert len(raw) == left
        total, magic = struct.unpack(">iI", raw[:8])
        assert (total, magic) == (left, BLANK_MAGIC), f"blank at {offset}"
        assert raw[8:] == bytes(left - 8), f"bytes after blank header at {offset}"
        assert (offset + left) % fs == 0
        assert store.look_by_offset(offset) is None
    for offset, body, queue_id, queue_offset, size in model.records:
        raw = read_disk(store_dir, fs, offset, size)
        total, magic, crc, qid, _flag, qoff, phys = struct.unpack(">iIiiiqq", raw[:36])
        assert (total, magic, qid, qoff, phys) == (size, MESSAGE_MAGIC, queue_id,
                                                    queue_offset, offset), offset
        assert crc == zlib.crc32(body) & 0x7FFFFFFF
        assert raw[BODY_OFFSET:BODY_OFFSET + len(body)] == body
        assert offset % fs + size + 8 <= fs, "record leaves less than 8 bytes"
        msg = store.look_by_offset(offset)
        assert msg is not None, offset
        assert (msg.commitlog_offset, msg.body, msg.queue_id, msg.queue_offset,
                msg.store_size, msg.topic) == (offset, body, queue_id, queue_offset, size,
                                                TOPIC)
    seen = [(m.commitlog_offset, m.body, m.queue_id, m.queue_offset)
            for m in store.iter_commitlog()]
    assert seen == [rec[:4] for rec in model.records]
    # every file that is not the last is closed by a blank record
    names = sorted(os.listdir(os.path.join(store_dir, "commitlog")))
    written = [n for n in names if int(n) < model.pos]
    blank_files = {(off // fs) * fs for off, _ in model.blanks}
    assert {int(n) for n in written[:-1]} <= blank_files


def reopen(store: MessageStore, store_dir, fs: int) -> MessageStore:
    store.close()
    return MessageStore(store_dir, **small(fs))


# ----------------------------------------------------------------------------- roll-over


@pytest.mark.parametrize("fs", [4096, 64 * 1024])
@pytest.mark.parametrize("leave", range(17))
def test_record_ending_at_every_boundary(store_dir, fs, leave):
    """A record that would leave `leave` bytes: placed only when leave >= 8; the next
    record then closes the file with a blank of exactly `leave` bytes."""
    model = Model(fs)
    store = MessageStore(store_dir, **small(fs))
    try:
        model.fill_to_left(store, 600, tag=1)
        final = make_body(2, body_for(600 - leave))
        result = model.put(store, final)
        if leave >= 8:
            assert result.commitlog_offset == fs - 600
            assert store.max_commitlog_offset() == fs - leave
        else:
            assert result.commitlog_offset == fs  # first byte of the next file
            assert model.blanks[-1] == (fs - 600, 600)
        verify(store, store_dir, model)

        store = reopen(store, store_dir, fs)
        verify(store, store_dir, model)

        nxt = model.put(store, make_body(3, 200))
        if leave >= 8:
            assert model.blanks[-1] == (fs - leave, leave)
            assert nxt.commitlog_offset == fs
        else:
            assert nxt.commitlog_offset == fs + len(final) + OVERHEAD
        verify(store, store_dir, model)

        store = reopen(store, store_dir, fs)
        verify(store, store_dir, model)
        model.put(store, make_body(4, 10), queue_id=0)
        verify(store, store_dir, model)
    finally:
        store.close()


def test_every_leave_in_one_store(store_dir):
    """All boundaries one after another in one log, across many files and a reopen."""
    fs = 4096
    model = Model(fs)
    store = MessageStore(store_dir, **small(fs))
    try:
        for leave in range(17):
            target = 300 + leave * 7
            model.fill_to_left(store, target, tag=leave)
            model.put(store, make_body(100 + leave, body_for(target - leave)), queue_id=leave % 3)
        model.put(store, make_body(200, 1000))  # closes the last file (16 bytes left)
        verify(store, store_dir, model)
        sizes = {left for _, left in model.blanks}
        assert set(range(8, 17)) <= sizes  # blanks of exactly 8..16 bytes happened
        store = reopen(store, store_dir, fs)
        verify(store, store_dir, model)
    finally:
        store.close()


def test_largest_record_fills_a_file_and_too_large_is_refused(store_dir):
    fs = 4096
    model = Model(fs)
    store = MessageStore(store_dir, **small(fs))
    try:
        model.put(store, make_body(1, 100))
        pos = store.max_commitlog_offset()
        before = read_disk(store_dir, fs, 0, fs)
        # fs - 7 bytes can never fit: MESSAGE_ILLEGAL, and no blank is written
        result = store.put(Message(TOPIC, bytes(body_for(fs - 7))))
        assert result.status is PutStatus.MESSAGE_ILLEGAL and result.error
        assert store.max_commitlog_offset() == pos
        assert read_disk(store_dir, fs, 0, fs) == before
        # fs - 8 bytes fits exactly into an empty file
        biggest = make_body(2, body_for(fs - 8))
        result = model.put(store, biggest)
        assert result.commitlog_offset == fs
        model.put(store, make_body(3, 1))
        verify(store, store_dir, model)
        store = reopen(store, store_dir, fs)
        verify(store, store_dir, model)
    finally:
        store.close()


def test_batch_that_does_not_fit_goes_whole_to_next_file(store_dir):
    fs = 4096
    model = Model(fs)
    store = MessageStore(store_dir, **small(fs))
    try:
        model.fill_to_left(store, 1000)
        # the first message alone would fit; the whole batch does not
        bodies = [make_body(i, 300) for i in range(3)]  # 3 * 392 = 1176 > 1000 - 8
        result = model.put_batch(store, bodies)
        assert result.commitlog_offsets[0] == fs
        assert model.blanks[-1] == (fs - 1000, 1000)
        # a batch leaving exactly 8 bytes stays in its file
        model.fill_to_left(store, 1000)
        exact = [make_body(10, body_for(500)), make_body(11, body_for(492))]
        result = model.put_batch(store, exact)
        assert result.commitlog_offsets[0] == 2 * fs - 1000
        assert store.max_commitlog_offset() == 2 * fs - 8
        # one byte more does not
        model.fill_to_left(store, 1000)
        over = [make_body(20, body_for(500)), make_body(21, body_for(493))]
        result = model.put_batch(store, over)
        assert result.commitlog_offsets[0] % fs == 0
        verify(store, store_dir, model)
        store = reopen(store, store_dir, fs)
        verify(store, store_dir, model)
    finally:
        store.close()


def test_batch_larger_than_a_file_is_refused_without_blank(store_dir):
    fs = 4096
    model = Model(fs)
    store = MessageStore(store_dir, **small(fs))
    try:
        model.put(store, make_body(1, 100))
        before = read_disk(store_dir, fs, 0, fs)
        bodies = [bytes(1000)] * 4  # 4 * 1092 > 4088
        result = store.put_batch([Message(TOPIC, b) for b in bodies])
        assert result.status is PutStatus.MESSAGE_ILLEGAL and len(result) == 0
        assert read_disk(store_dir, fs, 0, fs) == before
        assert store.max_commitlog_offset() == model.pos
        model.put(store, make_body(2, 5))
        verify(store, store_dir, model)
    finally:
        store.close()


# one operation: a single put (body length), a batch (list of body lengths), or
# ("leave", k): a record sized to leave exactly k bytes in the current file
_single = st.integers(0, 4100 - OVERHEAD)
_batch = st.lists(st.integers(0, 1500), min_size=1, max_size=5)
_leave = st.tuples(st.just("leave"), st.integers(0, 16))
_ops = st.lists(st.one_of(_single, _single, _batch, _leave), min_size=1, max_size=40)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=_ops)
def test_random_sizes_keep_boundary_invariants(ops):
    fs = 4096
    model = Model(fs)
    with tempfile.TemporaryDirectory() as tmp:
        store_dir = os.path.join(tmp, "store")
        store = MessageStore(store_dir, **small(fs))
        try:
            for i, op in enumerate(ops):
                if isinstance(op, int):
                    model.put(store, make_body(i, op), queue_id=i % 3)
                elif isinstance(op, list):
                    model.put_batch(store, [make_body(i * 10 + j, n) for j, n in enumerate(op)],
                                    queue_id=1)
                else:
                    left = model.left()
                    total = left - op[1]
                    if total < OVERHEAD:
                        total = OVERHEAD + op[1]
                    model.put(store, make_body(i, body_for(total)), queue_id=2)
            verify(store, store_dir, model)
            store = reopen(store, store_dir, fs)
            verify(store, store_dir, model)
            assert store.commitlog.queue_offsets == {
                (TOPIC, q): n for q, n in model.queue_offsets.items()
            }
            model.put(store, b"after reopen", queue_id=0)
            verify(store, store_dir, model)
        finally:
            store.close()


# ----------------------------------------------------------------------------- reopen


def test_reopen_continues_queue_offsets_and_end(small_store, store_dir):
    store = small_store()
    expected = {}
    for i in range(500):
        topic, queue_id = f"topic{i % 3}", i % 4
        result = store.put(Message(topic, make_body(i, i % 700)), queue_id)
        assert result.ok
        assert result.queue_offset == expected.get((topic, queue_id), 0)
        expected[(topic, queue_id)] = result.queue_offset + 1
    batch = store.put_batch([Message("topic0", b"b%d" % i) for i in range(5)], 2)
    assert batch.ok
    expected[("topic0", 2)] += 5
    assert store.commitlog.queue_offsets == expected
    end = store.max_commitlog_offset()
    store.close()

    store = small_store()
    assert store.max_commitlog_offset() == end
    assert store.commitlog.queue_offsets == expected
    for (topic, queue_id), nxt in sorted(expected.items()):
        result = store.put(Message(topic, b"next"), queue_id)
        assert result.ok and result.queue_offset == nxt, (topic, queue_id)
        assert result.commitlog_offset >= end
    result = store.put(Message("fresh", b"x"), 7)
    assert result.queue_offset == 0
    batch = store.put_batch([Message("topic1", b"x"), Message("topic1", b"y")], 1)
    assert [r.queue_offset for r in batch] == [expected[("topic1", 1)] + 1,
                                               expected[("topic1", 1)] + 2]


def test_reopen_of_empty_store(small_store, store_dir):
    store = small_store()
    assert store.max_commitlog_offset() == 0
    store.close()
    store = small_store()
    assert store.max_commitlog_offset() == 0
    assert list(store.iter_commitlog()) == []
    result = store.put(Message(TOPIC, b"first"))
    assert result.ok and result.commitlog_offset == 0 and result.queue_offset == 0


def _wait_for(predicate, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()


def test_precreated_next_file_is_deleted_at_clean_close(small_store, store_dir):
    fs = 64 * 1024
    cl = store_dir / "commitlog"
    store = small_store()
    for i in range(150):  # about 2.3 files
        assert store.put(Message(TOPIC, make_body(i, 1000))).ok
    end = store.max_commitlog_offset()
    last_written = end - end % fs
    next_name = file_name(last_written + fs)
    assert _wait_for(lambda: next_name in os.listdir(cl)), "next file never pre-created"
    store.close()
    remaining = sorted(os.listdir(cl))
    assert remaining == [file_name(o) for o in range(0, last_written + 1, fs)]

    store = small_store()
    assert store.max_commitlog_offset() == end
    assert sum(1 for _ in store.iter_commitlog()) == 150
    assert store.recovery.files_deleted == []
    assert store.recovery.bytes_truncated == 0


# ----------------------------------------------------------------------------- atomic batches


def _snapshot(store_dir):
    cl = os.path.join(store_dir, "commitlog")
    return {n: open(os.path.join(cl, n), "rb").read() for n in sorted(os.listdir(cl))}


def _all_zero(data: bytes) -> bool:
    return data.count(0) == len(data)


def assert_nothing_written(before, after):
    """Same bytes in every file, except files that are all zeros before and after: the
    allocator creates the next file in the background (created empty, then reserved),
    so such a file may appear or grow while nothing is written to it."""
    for name, data in before.items():
        assert name in after, f"{name} disappeared"
        if _all_zero(data) and _all_zero(after[name]):
            continue
        assert after[name] == data, f"{name} changed"
    for name in set(after) - set(before):
        assert _all_zero(after[name]), f"{name} was written"


def _bad_batches():
    big_props = {"p": "v" * 33000}
    return {
        "properties": (lambda: [Message(TOPIC, b"a"), Message(TOPIC, b"b", properties=big_props),
                                Message(TOPIC, b"c")], PutStatus.PROPERTIES_SIZE_EXCEEDED),
        "body": (lambda: [Message(TOPIC, b"a"), Message(TOPIC, bytes(2049))],
                 PutStatus.MESSAGE_ILLEGAL),
        "delay": (lambda: [Message(TOPIC, b"a"), Message(TOPIC, b"b", delay_level=3)],
                  PutStatus.MESSAGE_ILLEGAL),
        "transaction": (lambda: [Message(TOPIC, b"a", sys_flag=codec.TRANSACTION_PREPARED_TYPE)],
                        PutStatus.MESSAGE_ILLEGAL),
        "total": (lambda: [Message(TOPIC, bytes(1500)) for _ in range(2)],
                  PutStatus.MESSAGE_ILLEGAL),
        "topic": (lambda: [Message("bad topic", b"a")], PutStatus.MESSAGE_ILLEGAL),
    }


@pytest.mark.parametrize("case", sorted(_bad_batches()))
def test_rejected_batch_writes_nothing(small_store, store_dir, case):
    make, status = _bad_batches()[case]
    store = small_store(max_message_size=2048)
    for i in range(40):
        assert store.put(Message(TOPIC, make_body(i, 1000)), 1).ok
    end = store.max_commitlog_offset()
    offsets = dict(store.commitlog.queue_offsets)
    before = _snapshot(store_dir)

    result = store.put_batch(make(), 1)

    assert result.status is status, result
    assert not result.ok
    assert len(result) == 0 and result.commitlog_offsets == []
    assert result.error
    assert store.max_commitlog_offset() == end
    assert store.commitlog.queue_offsets == offsets
    assert_nothing_written(before, _snapshot(store_dir))
    nxt = store.put(Message(TOPIC, b"next"), 1)
    assert nxt.commitlog_offset == end and nxt.queue_offset == 40


def test_batch_error_messages_name_the_problem(small_store):
    store = small_store(max_message_size=2048)
    cases = _bad_batches()
    assert "delay" in store.put_batch(cases["delay"][0]()).error.lower()
    assert "transaction" in store.put_batch(cases["transaction"][0]()).error.lower()
    assert "propert" in store.put_batch(cases["properties"][0]()).error.lower()
    assert "max_message_size" in store.put_batch(cases["body"][0]()).error


@pytest.mark.parametrize(
    "msgs, exc",
    [
        ([], ValueError),
        ((m for m in ()), ValueError),
        ([Message("A", b"1"), Message("B", b"2")], ValueError),
        ([Message("A", b"1"), b"not a message"], TypeError),
        (["not a message"], TypeError),
    ],
)
def test_batch_bad_arguments_raise_and_write_nothing(small_store, store_dir, msgs, exc):
    store = small_store()
    assert store.put(Message("A", b"x")).ok
    end = store.max_commitlog_offset()
    before = _snapshot(store_dir)
    with pytest.raises(exc):
        store.put_batch(msgs)
    assert store.max_commitlog_offset() == end
    assert_nothing_written(before, _snapshot(store_dir))


def test_mixed_topic_error_names_both(small_store):
    store = small_store()
    with pytest.raises(ValueError) as info:
        store.put_batch([Message("Alpha", b"1"), Message("Beta", b"2")])
    assert "Alpha" in str(info.value) and "Beta" in str(info.value)


def test_batch_results_and_read_back(small_store):
    store = small_store()
    bodies = [b"", b"a", bytearray(b"bytearray body"), memoryview(b"memoryview body"),
              bytes(range(256))]
    msgs = [Message(TOPIC, b, tags=f"t{i}", keys=[f"k{i}", "common"], flag=i)
            for i, b in enumerate(bodies)]
    result = store.put_batch(msgs, 3)
    assert result.ok and len(result) == 5
    offsets = result.commitlog_offsets
    assert len(set(result.msg_ids)) == 5
    for i, (r, body) in enumerate(zip(result, bodies)):
        assert r.queue_offset == i and r.queue_id == 3
        assert r.commitlog_offset == offsets[i]
        if i:
            assert offsets[i] == offsets[i - 1] + result[i - 1].store_size
        msg = store.look_by_offset(r.commitlog_offset)
        assert msg.body == bytes(body)
        assert msg.tags == f"t{i}" and msg.keys == [f"k{i}", "common"] and msg.flag == i
        assert msg.store_size == r.store_size
        assert msg.store_timestamp == result.store_timestamp
        assert msg.msg_id == r.msg_id
    assert store.max_commitlog_offset() == offsets[-1] + result[-1].store_size


def test_concurrent_readers_never_see_part_of_a_batch(small_store):
    """A writer appends batches (crossing many file boundaries) while one reader
    re-iterates the whole log and another follows its tail: every batch is seen
    completely or not at all, in order, and the tail follower sees each message once."""
    import random

    rng = random.Random(1234)
    store = small_store(mapped_file_size_commitlog=16 * 1024)
    n_batches = 300
    counts = [rng.randint(1, 12) for _ in range(n_batches)]
    errors = []
    started = threading.Event()
    done = threading.Event()
    passes_while_writing = [0]
    followed = []

    def decode(msg):
        return struct.unpack(">III", msg.body[:12])

    def full_reader():
        try:
            while True:
                finished = done.is_set()
                seen = {}
                order = []
                for msg in store.iter_commitlog():
                    batch_id, index, count = decode(msg)
                    assert index == seen.get(batch_id, 0), (batch_id, index)
                    seen[batch_id] = index + 1
                    if index == 0:
                        order.append(batch_id)
                assert order == list(range(len(order))), "batches out of order"
                for batch_id, n in seen.items():
                    assert n == counts[batch_id], f"batch {batch_id}: {n} of {counts[batch_id]}"
                if not finished:
                    passes_while_writing[0] += 1
                started.set()
                if finished:
                    assert len(seen) == n_batches
                    return
                time.sleep(0.001)  # let the writer in (GIL)
        except BaseException as exc:
            errors.append(exc)
            started.set()

    def tail_follower():
        try:
            offset = 0
            while True:
                finished = done.is_set()
                for msg in store.iter_commitlog(offset):
                    followed.append(decode(msg))
                    offset = msg.commitlog_offset + msg.store_size
                if finished:
                    return
                time.sleep(0.0005)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=full_reader), threading.Thread(target=tail_follower)]
    for t in threads:
        t.start()
    assert started.wait(10)
    try:
        for batch_id, count in enumerate(counts):
            msgs = [
                Message(TOPIC, struct.pack(">III", batch_id, i, count)
                        + bytes(rng.randint(0, 300)))
                for i in range(count)
            ]
            result = store.put_batch(msgs, 0)
            assert result.ok, result
            if batch_id % 10 == 0:
                time.sleep(0.002)
    finally:
        done.set()
        for t in threads:
            t.join(60)
    assert not errors, errors
    assert passes_while_writing[0] >= 1
    assert followed == [(b, i, c) for b, c in enumerate(counts) for i in range(c)]
    assert store.max_commitlog_offset() > 20 * 16 * 1024  # crossed many files


def test_iterator_sees_records_appended_before_the_file_rolls(store_dir):
    """An iterator that has read part of a file and resumes after the writer appended
    more records to that file and rolled to the next must not skip those records."""
    fs = 4096
    store = MessageStore(store_dir, **small(fs))
    try:
        store.put(Message(TOPIC, b"a" * 100))
        it = store.iter_commitlog()
        first = next(it)
        offsets = [store.put(Message(TOPIC, b"b" * 1000)).commitlog_offset for _ in range(5)]
        assert offsets[-1] >= fs  # rolled into the next file
        seen = [first.commitlog_offset] + [m.commitlog_offset for m in it]
        assert seen == [0] + offsets
    finally:
        store.close()


def test_tail_follower_from_end_offset_across_roll(store_dir):
    """iter_commitlog(end) started where a file still had room continues into the
    next file once the writer has closed this one with a blank."""
    fs = 4096
    model = Model(fs)
    store = MessageStore(store_dir, **small(fs))
    try:
        model.fill_to_left(store, 500)
        end = store.max_commitlog_offset()
        assert list(store.iter_commitlog(end)) == []
        result = model.put(store, make_body(1, 600))  # does not fit: blank + next file
        assert result.commitlog_offset == fs
        assert [m.commitlog_offset for m in store.iter_commitlog(end)] == [fs]
    finally:
        store.close()


def _resident_kib(path: str) -> int:
    """Resident KiB of this process's mappings of `path` (from /proc/self/smaps)."""
    total, inside = 0, False
    with open("/proc/self/smaps") as smaps:
        for line in smaps:
            if "-" in line.split(" ", 1)[0]:  # a mapping's header line
                inside = line.rstrip().endswith(path)
            elif inside and line.startswith("Rss:"):
                total += int(line.split()[1])
    return total


@pytest.mark.skipif(not os.path.exists("/proc/self/smaps"), reason="needs /proc/self/smaps")
def test_files_left_behind_do_not_stay_resident(small_store):
    """Writing, dispatching and reading the whole log keeps about one file per reader
    resident, not the size of the store: a file every reader has left is let go."""
    store = small_store(mapped_file_size_commitlog=1 << 20, warm_mapped_file_enable=False)
    body = bytes(1000)
    for _ in range(16):
        store.put_batch([Message("T", body) for _ in range(250)])  # ~4 MiB in all
    while store.dispatcher.behind():
        time.sleep(0.001)
    files = store.commitlog.queue.files
    assert len(files) >= 4
    old, current = files[0].path, files[-1].path
    assert _resident_kib(current) > 0  # the writer's file stays in
    assert _resident_kib(old) == 0  # the dispatcher left it: dropped
    offset, read = 0, 0
    while True:  # a sequential reader brings each file in, then lets it go
        got = store.get("T", 0, offset, 32)
        if not got.messages:
            break
        read += len(got.messages)
        offset = got.next_begin_offset
        if read == 32:
            assert _resident_kib(old) > 0
    assert read == 16 * 250
    assert _resident_kib(old) == 0
    assert [m.body for m in store.get("T", 0, 0, 4).messages] == [body] * 4  # still there
