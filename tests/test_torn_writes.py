"""Torn and damaged CommitLog tails, as an OS crash or a bad disk leaves them.

One store is prepared per module (64 KiB CommitLog files, the last one ending with a
few dozen records); every case works on a copy of it. The damage sits inside the
last three records:

- zeroed from a byte position to the end of the file (the file keeps its length,
  as a fixed-size file that lost its last pages does), for EVERY position;
- the file itself cut short (which opening must refuse, deleting nothing);
- random byte flips;
- a hole of zeros exactly over one record (a lost page that began at a record).

After creating the `abort` file (a crash), reopening must not raise, must keep every
record before the damage whole and served (look_by_offset, get, iter_commitlog,
query_by_key), must drop the damaged record and everything after it, and must serve
no record that fails its CRC. New puts must work, survive a reopen, and must not
bring back records that recovery cut off.
"""

from __future__ import annotations

import hashlib
import os
import random
import shutil
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional

import pytest

from mqstore import Message, MessageStore, StoreCorruptedError, body_crc
from mqstore.results import GetStatus

FILE_SIZE = 64 * 1024
SETTINGS = dict(
    mapped_file_size_commitlog=FILE_SIZE,
    mapped_file_size_consume_queue=1024 * 20,
    max_hash_slot_num=512,
    max_index_num=2048,
)
T0 = 1_760_000_000_000
STEP_MS = 20
TOPICS = ("TwA", "TwB")
HEADER = 88  # bytes before BODY in a record with IPv4 hosts


class Clock:
    def __init__(self, now: int) -> None:
        self.now = now

    def __call__(self) -> int:
        self.now += STEP_MS
        return self.now


@dataclass
class Record:
    offset: int
    size: int
    topic: str
    queue_id: int
    queue_offset: int
    key: str
    tags: str
    body: bytes

    @property
    def end(self) -> int:
        return self.offset + self.size

    @property
    def props_start(self) -> int:
        """First byte of the properties string (after its 2-byte length)."""
        return self.end - len(f"KEYS\x01{self.key}\x02TAGS\x01{self.tags}".encode())

    @property
    def body_start(self) -> int:
        return self.offset + HEADER


@dataclass
class Prepared:
    path: Path
    records: List[Record]
    last_file: Path
    last_file_start: int
    clock_end: int

    def raw(self, start: int, end: int) -> bytes:
        """Bytes [start, end) of the prepared last CommitLog file (by offset)."""
        with open(self.last_file, "rb") as fh:
            fh.seek(start - self.last_file_start)
            return fh.read(end - start)

    @property
    def last_three(self) -> List[Record]:
        return self.records[-3:]

    def index_of(self, position: int) -> int:
        for i, record in enumerate(self.records):
            if record.offset <= position < record.end:
                return i
        raise AssertionError(position)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Prepared:
    path = tmp_path_factory.mktemp("torn") / "prepared"
    rng = random.Random(4711)
    clock = Clock(T0)
    records = []
    with MessageStore(path, clock=clock, **SETTINGS) as store:
        i = 0
        while True:
            topic, queue_id = TOPICS[i % 2], rng.randrange(2)
            # bodies without zero bytes: zeroing any part of one changes it
            body = bytes(rng.randrange(1, 256) for _ in range(rng.randrange(8, 40)))
            key, tags = f"tw-{i:04d}", f"tag{i % 3}"
            result = store.put(Message(topic, body, tags=tags, keys=key), queue_id)
            assert result.ok
            records.append(Record(result.commitlog_offset, result.store_size, topic, queue_id,
                                  result.queue_offset, key, tags, body))
            i += 1
            if result.commitlog_offset >= FILE_SIZE and len(
                    [r for r in records if r.offset >= FILE_SIZE]) >= 12:
                break
    files = sorted((path / "commitlog").iterdir())
    assert [int(f.name) for f in files] == [0, FILE_SIZE]
    assert not (path / "abort").exists()
    for record in records[-3:]:  # the layout the position classes rely on
        with open(files[-1], "rb") as fh:
            fh.seek(record.offset - FILE_SIZE)
            raw = fh.read(record.size)
        assert raw[HEADER:HEADER + len(record.body)] == record.body
        assert raw[record.props_start - record.offset:] == (
            f"TAGS\x01{record.tags}\x02KEYS\x01{record.key}".encode())
    return Prepared(path, records, files[-1], FILE_SIZE, clock.now)


def copy_of(prepared: Prepared, tmp_path: Path, name: str) -> Path:
    target = tmp_path / name
    shutil.copytree(prepared.path, target)
    return target


def damage(path: Path, prepared: Prepared, position: int, data: bytes) -> None:
    """Write `data` at CommitLog offset `position` of the copy at `path`."""
    with open(path / "commitlog" / prepared.last_file.name, "r+b") as fh:
        fh.seek(position - prepared.last_file_start)
        fh.write(data)


def queue_messages(store, topic, queue_id):
    messages, offset = [], 0
    while True:
        result = store.get(topic, queue_id, offset, 32)
        if result.status is not GetStatus.FOUND:
            assert result.status in (GetStatus.OFFSET_OVERFLOW_ONE,
                                     GetStatus.NO_MESSAGE_IN_QUEUE), result
            return messages
        messages.extend(result.messages)
        offset = result.next_begin_offset


def assert_same(msg, record: Record, where, properties=True) -> None:
    assert msg is not None, (where, record.offset)
    assert (msg.commitlog_offset, msg.topic, msg.queue_id, msg.queue_offset) == (
        record.offset, record.topic, record.queue_id, record.queue_offset), where
    assert msg.body == record.body, where
    if properties:
        assert msg.keys == [record.key] and msg.tags == record.tags, where


def check_recovered(store, prepared: Prepared, kept: int, where: str, exact_tail=True,
                    props_damaged: Optional[int] = None) -> None:
    """The first `kept` records are all there is (or, with exact_tail False, at least
    them); nothing served fails its CRC."""
    records = prepared.records
    report = store.recovery
    assert report.abnormal, where
    logged = list(store.iter_commitlog())
    for msg in logged:
        assert msg.body_crc == body_crc(msg.body), (where, msg.commitlog_offset)
    found = [(m.commitlog_offset, m.body) for m in logged]
    expected = [(r.offset, r.body) for r in records[:kept]]
    if exact_tail:
        assert found == expected, (where, report)
        expected_end = records[kept - 1].end if kept else 0
        assert report.end_offset == store.max_commitlog_offset() == expected_end, (
            where, report)
    else:
        assert found[:kept] == expected, where
    # every field of the records of the damaged file, by iteration and by offset
    for i, (msg, record) in enumerate(zip(logged, records[:kept])):
        if record.offset >= prepared.last_file_start:
            assert_same(msg, record, where, properties=i != props_damaged)
            assert_same(store.look_by_offset(record.offset), record, where,
                        properties=i != props_damaged)
    # queues: each serves its kept records, in order, from offset 0
    by_queue: Dict[tuple, List[Record]] = defaultdict(list)
    for record in records[:kept]:
        by_queue[(record.topic, record.queue_id)].append(record)
    for topic in TOPICS:
        for queue_id in (0, 1):
            expected = by_queue[(topic, queue_id)]
            served = queue_messages(store, topic, queue_id)
            if exact_tail:
                assert store.max_offset(topic, queue_id) == len(expected), (where, topic, queue_id)
                assert [m.commitlog_offset for m in served] == [r.offset for r in expected], where
            else:
                assert [m.commitlog_offset for m in served[:len(expected)]] == [
                    r.offset for r in expected], where
            for msg in served:
                assert msg.body_crc == body_crc(msg.body), where
    # keys of the last kept records are found, keys of the dropped ones are not. (Not
    # when a damaged record was kept: a flipped store time, say, is what the index
    # file's header then ends with, and lookups filter files on it.)
    for record in records[max(0, kept - 3):kept] if exact_tail else []:
        if records.index(record) != props_damaged:
            found = store.query_by_key(record.topic, record.key)
            assert [m.commitlog_offset for m in found] == [record.offset], (where, record.key)
    if exact_tail:
        for record in records[kept:]:
            assert store.look_by_offset(record.offset) is None or record.offset < report.end_offset
            assert store.query_by_key(record.topic, record.key) == [], (where, record.key)


def put_again_and_reopen(path: Path, prepared: Prepared, kept: int, where: str) -> None:
    """Puts after recovery, each of exactly the size (topic, queue, body, property
    lengths) of a record recovery dropped, in order: were the stale bytes behind the
    new end still there, the dropped records after them would line up again and the
    next open would walk into them. The new records survive a clean reopen, continue
    their queues, and nothing that recovery cut off comes back."""
    records = prepared.records
    clock = Clock(prepared.clock_end + 10_000)
    templates = records[kept:kept + 2] or records[-1:]
    expected_offsets = [r.offset for r in records[:kept]]
    next_offsets = {}
    puts = []
    with MessageStore(path, clock=clock, **SETTINGS) as store:
        position = records[kept - 1].end if kept else 0
        for template in templates:
            queue = (template.topic, template.queue_id)
            if queue not in next_offsets:
                next_offsets[queue] = store.max_offset(*queue)
            new_key = "nw" + template.key[2:]  # same length, so the same record size
            result = store.put(Message(template.topic, bytes([0x5A]) * len(template.body),
                                       tags=template.tags, keys=new_key), template.queue_id)
            assert result.ok and result.store_size == template.size, where
            if kept < len(records):
                assert result.commitlog_offset == template.offset == position, where
            assert result.queue_offset == next_offsets[queue], where
            next_offsets[queue] += 1
            position = result.commitlog_offset + result.store_size
            puts.append((result, template, new_key))
            expected_offsets.append(result.commitlog_offset)
    with MessageStore(path, clock=clock, **SETTINGS) as store:
        assert not store.recovery.abnormal, where
        offsets = [m.commitlog_offset for m in store.iter_commitlog()]
        assert offsets == expected_offsets, (
            f"{where}: records cut off by recovery came back: "
            f"{sorted(set(offsets) - set(expected_offsets))}")
        for result, template, new_key in puts:
            assert store.look_by_offset(result.commitlog_offset).keys == [new_key], where
            got = store.get(template.topic, template.queue_id, result.queue_offset, 1)
            assert got.messages[0].commitlog_offset == result.commitlog_offset, where
            assert store.query_by_key(template.topic, new_key)[0].commitlog_offset == (
                result.commitlog_offset), where
        for (topic, queue_id), next_offset in next_offsets.items():
            assert store.max_offset(topic, queue_id) == next_offset, where


# ----------------------------------------------------------------------------- zeroed tails


def zero_positions(prepared: Prepared) -> List[int]:
    first, last = prepared.last_three[0], prepared.last_three[-1]
    return list(range(first.offset, last.end))


def test_zeroed_tail_at_every_position(prepared, tmp_path):
    """A fixed-length file whose content ends early: zeros from position p to the end,
    for every p inside the last three records.

    Where p falls inside a record's properties string (after its length), every
    length field survived and BODYCRC covers only the body, but the properties now
    end in NUL, which recovery takes for a torn write: the record goes too.

    New puts (and a reopen) follow at every record's first 12 positions, its body
    and properties starts, and every third position besides."""
    records = prepared.records
    cases = 0
    for position in zero_positions(prepared):
        index = prepared.index_of(position)
        record = records[index]
        where = f"zeroed from {position} (record {index} at {record.offset}+" \
                f"{position - record.offset})"
        path = copy_of(prepared, tmp_path, f"z{position}")
        damage(path, prepared, position, bytes(prepared.last_file_start + FILE_SIZE - position))
        (path / "abort").touch()
        kept = index
        with MessageStore(path, **SETTINGS) as store:
            check_recovered(store, prepared, kept, where)
            # what is left of the record (if anything) is wiped
            left = prepared.raw(record.offset, position)
            assert store.recovery.bytes_truncated == len(left.rstrip(b"\0")), (
                where, store.recovery)
        relative = position - record.offset
        if relative < 12 or position in (record.body_start, record.props_start) or (
                relative % 3 == 0):  # a third of the rest: two more opens each
            put_again_and_reopen(path, prepared, kept, where)
        shutil.rmtree(path)
        cases += 1
    assert cases == prepared.last_three[-1].end - prepared.last_three[0].offset > 300


def test_shortened_last_file_is_refused_and_nothing_deleted(prepared, tmp_path):
    """The last CommitLog file itself cut short (its length lost, not its content):
    opening raises StoreCorruptedError naming it, and deletes nothing."""
    positions = sorted({p for r in prepared.last_three for p in (
        r.offset, r.offset + 1, r.offset + 4, r.offset + 8, r.offset + 50, r.body_start,
        r.body_start + 5, r.props_start - 1, r.props_start + 3, r.end - 1)}
        | {prepared.last_three[-1].end, prepared.last_file_start + FILE_SIZE - 1,
           prepared.last_file_start + 4})
    for position in positions:
        path = copy_of(prepared, tmp_path, f"s{position}")
        last = path / "commitlog" / prepared.last_file.name
        os.truncate(last, position - prepared.last_file_start)
        (path / "abort").touch()
        before = {str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
                  for p in sorted(path.rglob("*")) if p.is_file()}
        with pytest.raises(StoreCorruptedError) as info:
            MessageStore(path, **SETTINGS)
        assert info.value.path == str(last), position
        assert str(last) in str(info.value)
        after = {str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
                 for p in sorted(path.rglob("*")) if p.is_file()}
        assert after == before, position
        # the failed open released the lock and left the store as it was
        with pytest.raises(StoreCorruptedError):
            MessageStore(path, **SETTINGS)
        shutil.rmtree(path)


@pytest.mark.parametrize("length", [0, 1, 3])
def test_last_file_cut_to_zeros_is_dropped(prepared, tmp_path, length):
    """A short last file holding only zeros is what a kill between creating and
    reserving a file leaves (RocketMQ 5 deletes a zero-length one): it is dropped.
    Cut to 1-3 bytes, ours looks just like that (a TOTALSIZE starts with zero bytes),
    so the records it held go with it; the log ends at the end of the file before."""
    assert not any(prepared.raw(prepared.last_file_start, prepared.last_file_start + length))
    path = copy_of(prepared, tmp_path, "empty")
    os.truncate(path / "commitlog" / prepared.last_file.name, length)
    (path / "abort").touch()
    kept = sum(1 for r in prepared.records if r.offset < prepared.last_file_start)
    with MessageStore(path, **SETTINGS) as store:
        assert not (path / "commitlog" / prepared.last_file.name).exists()
        check_recovered(store, prepared, kept, "zero-length last file", exact_tail=False)
        assert store.max_commitlog_offset() == prepared.last_file_start
    # (no put_again_and_reopen: the first new record goes to a new file, no alignment)


# ----------------------------------------------------------------------------- byte flips


def flip_cases():
    rng = random.Random(20251123)
    cases = []
    for n in range(50):
        cases.append((n, rng.random(), rng.randrange(1, 256), n < 25))
    return cases


def flip_position(prepared: Prepared, fraction: float, in_body: bool) -> int:
    records = prepared.last_three
    if in_body:
        record = records[int(fraction * 3) % 3]
        span = len(record.body)
        return record.body_start + int((fraction * 3 % 1) * span)
    first, last = records[0].offset, records[-1].end
    return first + int(fraction * (last - first))


#: byte ranges (relative to a record's start, IPv4 hosts) that recovery validates:
#: TOTALSIZE, MAGIC, BODYCRC, BODYLENGTH; body, topic length, properties length
#: are added per record.
CHECKED_HEADER = [(0, 12), (84, 88)]


def is_checked(record: Record, position: int) -> bool:
    relative = position - record.offset
    if any(start <= relative < end for start, end in CHECKED_HEADER):
        return True
    topic_len_at = HEADER + len(record.body)
    props_len_at = topic_len_at + 1 + len(record.topic)
    return (HEADER <= relative < topic_len_at + 1  # body and topic length
            or props_len_at <= relative < props_len_at + 2)


def test_random_byte_flips(prepared, tmp_path):
    """50 seeded flips in the last three records (25 inside bodies). A flip that
    validation sees (a body, BODYCRC, a length, MAGIC) cuts the log at that record and
    wipes what followed; a flip in a field no check covers (store time, hosts, queue
    offset, topic or property text) leaves a record whose body still matches its CRC.
    Either way: no exception, every earlier record intact, no CRC failure served."""
    records = prepared.records
    checked_cases = 0
    for n, fraction, mask, in_body in flip_cases():
        position = flip_position(prepared, fraction, in_body)
        index = prepared.index_of(position)
        record = records[index]
        where = f"flip {n}: ^0x{mask:02x} at {position} (record {index}+{position - record.offset})"
        path = copy_of(prepared, tmp_path, f"f{n}")
        with open(path / "commitlog" / prepared.last_file.name, "r+b") as fh:
            fh.seek(position - prepared.last_file_start)
            original = fh.read(1)[0]
            fh.seek(position - prepared.last_file_start)
            fh.write(bytes([original ^ mask]))
        (path / "abort").touch()
        checked = is_checked(record, position)
        with MessageStore(path, **SETTINGS) as store:
            check_recovered(store, prepared, index, where, exact_tail=checked)
            if checked:
                assert store.recovery.bytes_truncated > 0, (where, store.recovery)
        if checked:
            checked_cases += 1
            put_again_and_reopen(path, prepared, index, where)
        shutil.rmtree(path)
    assert checked_cases >= 25


# ----------------------------------------------------------------------------- holes


def test_zeroed_record_in_the_middle_is_the_end(prepared, tmp_path):
    """One of the last records zeroed exactly, the records after it intact (a lost
    page that began where the record began). Recovery ends the log there and
    nothing after it is served."""
    records = prepared.records
    for record in prepared.last_three[:2]:
        index = records.index(record)
        path = copy_of(prepared, tmp_path, f"h{index}")
        damage(path, prepared, record.offset, bytes(record.size))
        (path / "abort").touch()
        with MessageStore(path, **SETTINGS) as store:
            check_recovered(store, prepared, index, f"hole over record {index}")
        shutil.rmtree(path)


def test_records_after_a_zeroed_record_do_not_come_back(prepared, tmp_path):
    records = prepared.records
    record = prepared.last_three[0]
    index = records.index(record)
    path = copy_of(prepared, tmp_path, "resurrect")
    damage(path, prepared, record.offset, bytes(record.size))
    (path / "abort").touch()
    with MessageStore(path, **SETTINGS) as store:
        check_recovered(store, prepared, index, "hole")
    put_again_and_reopen(path, prepared, index, "hole, then a put of the same size")
