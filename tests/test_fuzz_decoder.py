"""The C record decoder (``mq_scan``) against untrusted bytes: records truncated at
every byte, flipped bytes, structured and pure garbage. Buffers end right before an
inaccessible page, so a read of even one byte past the readable data faults instead
of passing unnoticed; a pure-Python reference decoder (format doc §3.2, §4.3) checks
every decoded field. The garbage fuzz also runs in a subprocess, so a segfault shows
up as a failing return code instead of killing pytest."""

from __future__ import annotations

import ctypes
import functools
import json
import mmap
import os
import random
import struct
import subprocess
import sys
import tempfile
import zlib
from typing import List, Optional, Tuple

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mqstore import Message, MessageStore, codec
from mqstore._native import ffi, lib
from mqstore.message import decode_properties, encode_host

FIELDS = codec.FIELDS
V1 = codec.MESSAGE_MAGIC_CODE
V2 = codec.MESSAGE_MAGIC_CODE_V2
BLANK = codec.BLANK_MAGIC_CODE
ERROR = "error"  # the reference decoder does not distinguish error kinds
SMALL_FILE = 64 * 1024
ALL_FLAGS = codec.SCAN_CHECK_CRC | codec.SCAN_PROPERTIES
FLAG_CHOICES = [0, codec.SCAN_CHECK_CRC, codec.SCAN_PROPERTIES, ALL_FLAGS]
FIXED_CLOCK_MS = 1_700_000_000_000

# Small CommitLog, ConsumeQueue and index files: the defaults reserve about 420 MB of
# disk per store for the index alone, and these tests open hundreds of stores.
SMALL_STORE = dict(
    mapped_file_size_commitlog=SMALL_FILE,
    mapped_file_size_consume_queue=20 * 1024,
    max_hash_slot_num=512,
    max_index_num=2048,
)


def small_store(path, **overrides) -> MessageStore:
    return MessageStore(path, **{**SMALL_STORE, **overrides})


# ----------------------------------------------------------------------------- guarded memory

PROT_NONE = 0  # <sys/mman.h>; the mmap module does not export it
_libc = ctypes.CDLL(None, use_errno=True)
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                       ctypes.c_int, ctypes.c_long]
_libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
_libc.mprotect.restype = ctypes.c_int


class GuardedBuffer:
    """`capacity` writable bytes followed by a PROT_NONE page. `place(data)` copies
    data so that its last byte is the last byte before the guard page: reading
    data[len(data)] faults (SIGSEGV) instead of returning stale memory."""

    def __init__(self, capacity: int) -> None:
        page = mmap.PAGESIZE
        self.capacity = -(-capacity // page) * page
        size = self.capacity + page
        addr = _libc.mmap(None, size, mmap.PROT_READ | mmap.PROT_WRITE,
                          mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS, -1, 0)
        if addr is None or addr == ctypes.c_void_p(-1).value:
            raise OSError(ctypes.get_errno(), "mmap failed")
        if _libc.mprotect(addr + self.capacity, page, PROT_NONE) != 0:
            raise OSError(ctypes.get_errno(), "mprotect failed")
        self.addr = addr  # never unmapped: one per process, reused

    def place(self, data: bytes):
        """A cffi ``char *`` to a copy of `data` that ends at the guard page."""
        if len(data) > self.capacity:
            raise ValueError("data larger than the guarded buffer")
        start = self.addr + self.capacity - len(data)
        ctypes.memmove(start, data, len(data))
        return ffi.cast("char *", start)


@functools.lru_cache(maxsize=1)
def guarded() -> GuardedBuffer:
    return GuardedBuffer(SMALL_FILE + 8192)


def guarded_scan(data: bytes, pos: int, max_records: int, flags: int) -> codec.ScanResult:
    """codec.scan over exactly `data`, with a guard page right after its last byte."""
    return codec.scan(guarded().place(data), len(data), pos, max_records, flags)


# ----------------------------------------------------------------------------- reference decoder


def reference_find_property(props: bytes, key: bytes) -> Optional[Tuple[int, int]]:
    """(value offset, value length) of `key` in a properties string, RocketMQ's rules:
    segments split on \\x02; the first \\x01 must be neither the first nor the last
    byte of its segment; a later duplicate wins."""
    found = None
    start = 0
    for segment in props.split(b"\x02"):
        sep = segment.find(b"\x01")
        if 0 < sep < len(segment) - 1 and segment[:sep] == key:
            found = (start + sep + 1, len(segment) - sep - 1)
        start += len(segment) + 1
    return found


def reference_java_hash(text: str) -> int:
    h = 0
    for (unit,) in struct.iter_unpack("<H", text.encode("utf-16-le", "surrogatepass")):
        h = (31 * h + unit) & 0xFFFFFFFF
    return h - (1 << 32) if h >= 1 << 31 else h


def reference_decode(buf: bytes, buf_len: int, pos: int, flags: int):
    """Decode the record at buf[pos] independently of the C code, straight from the
    format doc. Returns (fields, 0) or (None, reason) with reason STOP_END, STOP_ZERO,
    STOP_BLANK or ERROR."""
    rem = buf_len - pos
    if rem == 0:
        return None, codec.STOP_END
    if rem < 8:
        return None, codec.STOP_ZERO if not any(buf[pos:buf_len]) else ERROR
    total, magic = struct.unpack_from(">ii", buf, pos)
    if magic == BLANK:
        return None, codec.STOP_BLANK
    if total == 0 and magic == 0:
        return None, codec.STOP_ZERO
    if magic not in (V1, V2) or total < codec.RECORD_FIXED_SIZE_V4 or total > rem:
        return None, ERROR
    rec = buf[pos:pos + total]
    crc, queue_id, flag, queue_offset, physical_offset, sys_flag, born_ts = struct.unpack_from(
        ">iiiqqiq", rec, 8)
    bh = 20 if sys_flag & codec.BORNHOST_V6_FLAG else 8
    sh = 20 if sys_flag & codec.STOREHOST_V6_FLAG else 8
    topic_len_size = 1 if magic == V1 else 2
    at = 72 + bh + sh
    if at > total:
        return None, ERROR
    (store_ts,) = struct.unpack_from(">q", rec, 48 + bh)
    reconsume, prepared, body_len = struct.unpack_from(">iqi", rec, 56 + bh + sh)
    if body_len < 0 or at + body_len + topic_len_size > total:
        return None, ERROR
    body_off = at
    at += body_len
    (topic_len,) = struct.unpack_from(">b" if topic_len_size == 1 else ">h", rec, at)
    at += topic_len_size
    if topic_len < 0 or at + topic_len + 2 > total:
        return None, ERROR
    topic_off = at
    at += topic_len
    (props_len,) = struct.unpack_from(">h", rec, at)
    at += 2
    if props_len < 0 or at + props_len != total:
        return None, ERROR
    props_off = at
    body = rec[body_off:body_off + body_len]
    if flags & codec.SCAN_CHECK_CRC and body_len > 0 and zlib.crc32(body) & 0x7FFFFFFF != crc:
        return None, ERROR
    # With the CRC check, topic or properties text ending in NUL, followed by nothing or
    # by zeros, counts as a torn write.
    if flags & codec.SCAN_CHECK_CRC and (
        (props_len > 0 and rec[props_off + props_len - 1] == 0)
        or (topic_len > 0 and rec[topic_off + topic_len - 1] == 0)
    ) and not any(buf[pos + total:min(buf_len, pos + total + 8)]):
        return None, ERROR
    fields = [0] * FIELDS
    fields[codec.F_POS] = pos
    fields[codec.F_TOTAL_SIZE] = total
    fields[codec.F_MAGIC] = magic
    fields[codec.F_BODY_CRC] = crc
    fields[codec.F_QUEUE_ID] = queue_id
    fields[codec.F_FLAG] = flag
    fields[codec.F_QUEUE_OFFSET] = queue_offset
    fields[codec.F_PHYSICAL_OFFSET] = physical_offset
    fields[codec.F_SYS_FLAG] = sys_flag
    fields[codec.F_BORN_TIMESTAMP] = born_ts
    fields[codec.F_BORN_HOST_OFF] = pos + 48
    fields[codec.F_BORN_HOST_LEN] = bh
    fields[codec.F_STORE_TIMESTAMP] = store_ts
    fields[codec.F_STORE_HOST_OFF] = pos + 56 + bh
    fields[codec.F_STORE_HOST_LEN] = sh
    fields[codec.F_RECONSUME_TIMES] = reconsume
    fields[codec.F_PREPARED_OFFSET] = prepared
    fields[codec.F_BODY_OFF] = pos + body_off
    fields[codec.F_BODY_LEN] = body_len
    fields[codec.F_TOPIC_OFF] = pos + topic_off
    fields[codec.F_TOPIC_LEN] = topic_len
    fields[codec.F_PROPS_OFF] = pos + props_off
    fields[codec.F_PROPS_LEN] = props_len
    fields[codec.F_KEYS_OFF] = fields[codec.F_UNIQ_OFF] = -1
    if flags & codec.SCAN_PROPERTIES:
        props = rec[props_off:props_off + props_len]
        decoded = decode_properties(props)  # what RocketMQ's Java parser sees
        if "TAGS" in decoded:
            fields[codec.F_TAGS_CODE] = reference_java_hash(decoded["TAGS"])
        for key, off_slot, len_slot in ((b"KEYS", codec.F_KEYS_OFF, codec.F_KEYS_LEN),
                                        (b"UNIQ_KEY", codec.F_UNIQ_OFF, codec.F_UNIQ_LEN)):
            found = reference_find_property(props, key)
            assert (found is None) == (key.decode() not in decoded)
            if found is not None:
                value = props[found[0]:found[0] + found[1]]
                assert value.decode("utf-8", "replace") == decoded[key.decode()]
                fields[off_slot] = pos + props_off + found[0]
                fields[len_slot] = found[1]
    return fields, 0


def reference_scan(buf: bytes, buf_len: int, pos: int, max_records: int, flags: int):
    """(list of per-record fields, stop_pos, reason) the way mq_scan should walk."""
    records = []
    reason = codec.STOP_LIMIT
    while len(records) < max_records:
        fields, reason = reference_decode(buf, buf_len, pos, flags)
        if fields is None:
            break
        records.append(fields)
        pos += fields[codec.F_TOTAL_SIZE]
        reason = codec.STOP_LIMIT
    return records, pos, reason


def category(reason: int):
    return ERROR if codec.is_error(reason) else reason


def record_fields(result: codec.ScanResult, i: int) -> List[int]:
    return list(result.fields[i * FIELDS:(i + 1) * FIELDS])


def check_scan(data: bytes, pos: int, max_records: int, flags: int,
               result: Optional[codec.ScanResult] = None) -> codec.ScanResult:
    """Scan `data` (guarded) and check the result: every record inside the buffer and
    self-consistent, and everything equal to the reference decoder."""
    if result is None:
        result = guarded_scan(data, pos, max_records, flags)
    buf_len = len(data)
    assert 0 <= result.count <= max_records
    known = set(codec.STOP_REASONS)
    assert result.stop_reason in known, result.stop_reason
    at = pos
    for i in range(result.count):
        f = record_fields(result, i)
        total = f[codec.F_TOTAL_SIZE]
        assert f[codec.F_POS] == at
        assert total >= codec.RECORD_FIXED_SIZE_V4
        assert at >= 0 and at + total <= buf_len
        assert f[codec.F_MAGIC] in (V1, V2)
        topic_len_size = 1 if f[codec.F_MAGIC] == V1 else 2
        bh, sh = f[codec.F_BORN_HOST_LEN], f[codec.F_STORE_HOST_LEN]
        assert bh == (20 if f[codec.F_SYS_FLAG] & codec.BORNHOST_V6_FLAG else 8)
        assert sh == (20 if f[codec.F_SYS_FLAG] & codec.STOREHOST_V6_FLAG else 8)
        assert f[codec.F_BORN_HOST_OFF] == at + 48
        assert f[codec.F_STORE_HOST_OFF] == at + 56 + bh
        assert f[codec.F_BODY_OFF] == at + 72 + bh + sh
        assert f[codec.F_BODY_LEN] >= 0 and f[codec.F_TOPIC_LEN] >= 0 and f[codec.F_PROPS_LEN] >= 0
        assert f[codec.F_TOPIC_OFF] == f[codec.F_BODY_OFF] + f[codec.F_BODY_LEN] + topic_len_size
        assert f[codec.F_PROPS_OFF] == f[codec.F_TOPIC_OFF] + f[codec.F_TOPIC_LEN] + 2
        props_end = f[codec.F_PROPS_OFF] + f[codec.F_PROPS_LEN]
        assert props_end == at + total
        for off_slot, len_slot in ((codec.F_KEYS_OFF, codec.F_KEYS_LEN),
                                   (codec.F_UNIQ_OFF, codec.F_UNIQ_LEN)):
            if f[off_slot] == -1:
                assert f[len_slot] == 0
            else:
                assert f[codec.F_PROPS_OFF] < f[off_slot]
                assert f[off_slot] + f[len_slot] <= props_end
        if flags & codec.SCAN_CHECK_CRC and f[codec.F_BODY_LEN] > 0:
            body = data[f[codec.F_BODY_OFF]:f[codec.F_BODY_OFF] + f[codec.F_BODY_LEN]]
            assert zlib.crc32(body) & 0x7FFFFFFF == f[codec.F_BODY_CRC]
        at += total
    assert result.stop_pos == at <= buf_len
    if result.stop_reason == codec.STOP_LIMIT:
        assert result.count == max_records
    expected, expected_stop, expected_reason = reference_scan(
        data, buf_len, pos, max_records, flags)
    assert [record_fields(result, i) for i in range(result.count)] == expected
    assert result.stop_pos == expected_stop
    assert category(result.stop_reason) == expected_reason
    return result


# ----------------------------------------------------------------------------- sample records


def sample_messages() -> List[Tuple[Message, int]]:
    """Records covering the layout variants: empty body and properties, IPv6 born
    and/or store host, a 127-byte topic, non-ASCII properties, a TAGS with a
    surrogate pair, KEYS and UNIQ_KEY."""
    return [
        (Message("TopicA", b""), 0),
        (Message("TopicA", b"hello world " * 3, tags="TagA", keys=["k1", "k2"]), 1),
        (Message("Topic_C-1", bytes(range(256)) * 2, properties={"地区": "华东-上海 ☃"},
                 born_host="[2001:db8::1]:1234", flag=7), 2),
        (Message("%RETRY%golden_consumer", b"x", tags="tag😀", store_host="[::1]:10911",
                 reconsume_times=3), 0),
        (Message("TopicB", bytes(100), sys_flag=0x301, flag=-1, born_host="[fe80::2]:1",
                 store_host="[2001:db8::ff]:10911",
                 properties={"UNIQ_KEY": "7F0000010001000000000000000000AB"}), 3),
        (Message("a" * 127, b"\xff" * 1000, keys="only-key"), 0),
        (Message("TopicA", b"last record body " * 3, tags="NegativeHashTag",
                 properties={"emoji": "😀ok"}), 0),
    ]


@functools.lru_cache(maxsize=1)
def sample_file() -> Tuple[bytes, Tuple[Tuple[int, ...], ...]]:
    """(the first CommitLog file of a store holding the sample records, fields of each
    record). Written by the real store, read from disk after close."""
    with tempfile.TemporaryDirectory() as tmp:
        with small_store(tmp,
                          clock=lambda: FIXED_CLOCK_MS) as store:
            for msg, queue_id in sample_messages():
                assert store.put(msg, queue_id).ok
        with open(os.path.join(tmp, "commitlog", "00000000000000000000"), "rb") as fh:
            data = fh.read()
    assert len(data) == SMALL_FILE
    result = codec.scan(data, len(data), 0, 100, ALL_FLAGS)
    assert result.count == len(sample_messages())
    assert result.stop_reason == codec.STOP_ZERO
    records = tuple(tuple(record_fields(result, i)) for i in range(result.count))
    return data, records


@functools.cache
def sample_records(flags: int) -> List[List[int]]:
    """Fields of the sample records as a scan with `flags` reports them."""
    data, records = sample_file()
    result = codec.scan(data, len(data), 0, 100, flags)
    assert result.count == len(records)
    return [record_fields(result, i) for i in range(result.count)]


def sample_data() -> bytes:
    """The sample records without the zeros after them."""
    data, records = sample_file()
    last = records[-1]
    return data[:last[codec.F_POS] + last[codec.F_TOTAL_SIZE]]


def test_sample_records_decode_exactly():
    data, records = sample_file()
    check_scan(data, 0, 100, ALL_FLAGS)
    msgs = sample_messages()
    for (msg, queue_id), f in zip(msgs, records):
        body = data[f[codec.F_BODY_OFF]:f[codec.F_BODY_OFF] + f[codec.F_BODY_LEN]]
        topic = data[f[codec.F_TOPIC_OFF]:f[codec.F_TOPIC_OFF] + f[codec.F_TOPIC_LEN]]
        props = data[f[codec.F_PROPS_OFF]:f[codec.F_PROPS_OFF] + f[codec.F_PROPS_LEN]]
        assert body == bytes(msg.body)
        assert topic == msg.topic.encode()
        assert props == msg.encoded_properties()
        assert f[codec.F_QUEUE_ID] == queue_id
        assert f[codec.F_FLAG] == msg.flag
        assert f[codec.F_RECONSUME_TIMES] == msg.reconsume_times
        assert f[codec.F_STORE_TIMESTAMP] == FIXED_CLOCK_MS
        assert f[codec.F_BODY_CRC] == zlib.crc32(body) & 0x7FFFFFFF
        born = data[f[codec.F_BORN_HOST_OFF]:f[codec.F_BORN_HOST_OFF] + f[codec.F_BORN_HOST_LEN]]
        assert born == encode_host(msg.born_host or "127.0.0.1:10911")
        tags = msg.tags
        assert f[codec.F_TAGS_CODE] == (reference_java_hash(tags) if tags else 0)
    # the layout variants are really there
    assert {(f[codec.F_BORN_HOST_LEN], f[codec.F_STORE_HOST_LEN]) for f in records} == {
        (8, 8), (20, 8), (8, 20), (20, 20)}
    assert records[0][codec.F_BODY_LEN] == 0 and records[0][codec.F_PROPS_LEN] == 0


# ----------------------------------------------------------------------------- truncation


@pytest.mark.parametrize("flags", [0, ALL_FLAGS])
def test_truncation_at_every_byte_of_every_record(flags):
    data, records = sample_file()
    for k, rec in enumerate(records):
        start, end = rec[codec.F_POS], rec[codec.F_POS] + rec[codec.F_TOTAL_SIZE]
        for cut in range(start, end + 1):
            buf = data[:cut]
            alone = guarded_scan(buf, start, 10, flags)
            if cut == start:
                assert (alone.count, alone.stop_reason) == (0, codec.STOP_END)
            elif cut < end:
                assert alone.count == 0, (k, cut)
                assert alone.stop_pos == start
                if alone.stop_reason == codec.STOP_ZERO:
                    # only a header prefix that is all zeros may look like "end of data"
                    assert cut - start < 8 and not any(buf[start:cut]), (k, cut)
                else:
                    assert codec.is_error(alone.stop_reason), (k, cut, alone.stop_reason)
            else:
                assert alone.count == 1
                assert record_fields(alone, 0) == sample_records(flags)[k]
                assert (alone.stop_pos, alone.stop_reason) == (end, codec.STOP_END)
            # from the start of the file: every earlier record still decodes, unchanged
            whole = guarded_scan(buf, 0, 10, flags)
            complete = k + 1 if cut == end else k
            assert whole.count == complete, (k, cut)
            assert [record_fields(whole, i) for i in range(complete)] == sample_records(
                flags)[:complete]
            assert whole.stop_pos == (end if cut == end else start)
            check_scan(buf, 0, 10, flags, whole)


def test_truncated_header_of_zeros_is_end_of_data():
    for n in range(1, 8):
        result = guarded_scan(bytes(n), 0, 10, ALL_FLAGS)
        assert (result.count, result.stop_reason) == (0, codec.STOP_ZERO)
        torn = guarded_scan(bytes(n - 1) + b"\x01", 0, 10, ALL_FLAGS)
        assert (torn.count, torn.stop_reason) == (0, codec.ERR_TRUNCATED)


def test_scan_arguments_out_of_range():
    data = sample_data()
    for pos in (-1, len(data) + 1, 2**62):
        result = guarded_scan(data, pos, 10, ALL_FLAGS)
        assert result.count == 0
        assert codec.is_error(result.stop_reason)
    empty = guarded_scan(b"", 0, 10, ALL_FLAGS)
    assert (empty.count, empty.stop_reason, empty.stop_pos) == (0, codec.STOP_END, 0)
    none = guarded_scan(data, 0, 0, ALL_FLAGS)
    assert (none.count, none.stop_reason, none.stop_pos) == (0, codec.STOP_LIMIT, 0)


# ----------------------------------------------------------------------------- byte flips


def _regions(rec) -> dict:
    """Byte ranges (relative to the record) of the fields of an original record."""
    bh, sh = rec[codec.F_BORN_HOST_LEN], rec[codec.F_STORE_HOST_LEN]
    pos = rec[codec.F_POS]
    body_off = rec[codec.F_BODY_OFF] - pos
    topic_off = rec[codec.F_TOPIC_OFF] - pos
    props_off = rec[codec.F_PROPS_OFF] - pos
    return {
        "total": range(0, 4),
        "magic": range(4, 8),
        "crc": range(8, 12),
        "sysflag": range(36, 40),
        "body_len": range(body_off - 4, body_off),
        "body": range(body_off, body_off + rec[codec.F_BODY_LEN]),
        "topic_len": range(topic_off - 1, topic_off),
        "props_len": range(props_off - 2, props_off),
        "plain": [*range(12, 36), *range(40, 72 + bh + sh - 4),
                  *range(topic_off, topic_off + rec[codec.F_TOPIC_LEN]),
                  *range(props_off, props_off + rec[codec.F_PROPS_LEN])],
    }


def check_flip(k: int, offset: int, mask: int, flags: int, whole_file: bool = True) -> None:
    """XOR byte `offset` of sample record `k` with `mask`, scan, and check what the
    damage must (and must not) do."""
    original = sample_data()
    rec = sample_records(ALL_FLAGS)[k]
    pos = rec[codec.F_POS]
    buf = bytearray(original)
    buf[pos + offset] ^= mask
    buf = bytes(buf)

    alone = check_scan(buf, pos, 1, flags)
    if whole_file:
        whole = check_scan(buf, 0, 100, flags)
        # records before the damaged one are untouched
        assert whole.count >= k
        assert [record_fields(whole, i) for i in range(k)] == sample_records(flags)[:k]

    regions = _regions(rec)
    crc_checked = flags & codec.SCAN_CHECK_CRC
    where = (k, offset, mask, flags)
    if offset in regions["body"]:
        if crc_checked:
            # CRC-32 detects every single-byte change: never a silently different body
            assert (alone.count, alone.stop_reason) == (0, codec.ERR_CRC), where
        else:
            assert alone.count == 1, where
    elif offset in regions["crc"]:
        if crc_checked and rec[codec.F_BODY_LEN] > 0:
            assert (alone.count, alone.stop_reason) == (0, codec.ERR_CRC), where
        else:
            assert alone.count == 1, where
            assert record_fields(alone, 0)[codec.F_BODY_CRC] != rec[codec.F_BODY_CRC]
    elif offset in regions["magic"]:
        if struct.unpack_from(">i", buf, pos + 4)[0] != V2:
            assert alone.count == 0 and codec.is_error(alone.stop_reason), where
    elif offset in regions["plain"] or (offset in regions["sysflag"] and not (
            offset == 39 and mask & (codec.BORNHOST_V6_FLAG | codec.STOREHOST_V6_FLAG))):
        # a field no check covers: the record still decodes, with the same layout and
        # the same body (check_scan compared every field value with the reference)
        assert alone.count == 1, where
        got = record_fields(alone, 0)
        layout = (codec.F_TOTAL_SIZE, codec.F_BODY_OFF, codec.F_BODY_LEN, codec.F_TOPIC_OFF,
                  codec.F_TOPIC_LEN, codec.F_PROPS_OFF, codec.F_PROPS_LEN,
                  codec.F_BORN_HOST_LEN, codec.F_STORE_HOST_LEN)
        assert [got[i] for i in layout] == [rec[i] for i in layout], where
        body = slice(got[codec.F_BODY_OFF], got[codec.F_BODY_OFF] + got[codec.F_BODY_LEN])
        assert buf[body] == original[body]
    # Layout fields (TOTALSIZE, body/topic/props lengths, the IPv6 bits): whatever
    # the reference decoder says, which check_scan compared already.


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data(), st.integers(1, 255), st.sampled_from(FLAG_CHOICES))
def test_single_byte_flip(data, mask, flags):
    records = sample_records(ALL_FLAGS)
    k = data.draw(st.integers(0, len(records) - 1), label="record")
    offset = data.draw(st.integers(0, records[k][codec.F_TOTAL_SIZE] - 1), label="offset")
    check_flip(k, offset, mask, flags)


@pytest.mark.parametrize("mask, flags", [(0x01, ALL_FLAGS), (0xFF, codec.SCAN_CHECK_CRC),
                                         (0x30, 0)])
def test_every_byte_flipped(mask, flags):
    for k, rec in enumerate(sample_records(ALL_FLAGS)):
        for offset in range(rec[codec.F_TOTAL_SIZE]):
            check_flip(k, offset, mask, flags, whole_file=False)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data(), st.sampled_from(FLAG_CHOICES))
def test_multi_byte_damage(data, flags):
    base = sample_data()
    buf = bytearray(base)
    flips = data.draw(
        st.lists(st.tuples(st.integers(0, len(buf) - 1), st.integers(1, 255)),
                 min_size=1, max_size=8),
        label="flips",
    )
    for at, mask in flips:
        buf[at] ^= mask
    tail = data.draw(st.sampled_from([b"", bytes(5), bytes(100), b"\x00\x00\x01"]), label="tail")
    buf = bytes(buf) + tail
    _, records = sample_file()
    start = data.draw(st.sampled_from([0] + [r[codec.F_POS] for r in records]), label="start")
    check_scan(buf, start, 100, flags)

    # a burst of up to 4 bytes inside one body is always caught by CRC-32
    first = min(at for at, _ in flips)
    last = max(at for at, _ in flips)
    if flags & codec.SCAN_CHECK_CRC and last - first < 4:
        for rec in records:
            body = slice(rec[codec.F_BODY_OFF], rec[codec.F_BODY_OFF] + rec[codec.F_BODY_LEN])
            if body.start <= first and last < body.stop and buf[body] != base[body]:
                result = guarded_scan(buf, rec[codec.F_POS], 1, flags)
                assert (result.count, result.stop_reason) == (0, codec.ERR_CRC)


# ----------------------------------------------------------------------------- garbage


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=4096), st.data(), st.sampled_from(FLAG_CHOICES),
       st.integers(1, 20))
def test_random_garbage(buf, data, flags, max_records):
    pos = data.draw(st.integers(0, len(buf)), label="pos")
    check_scan(buf, pos, max_records, flags)


_PROP_ATOMS = [b"\x01", b"\x02", b"TAGS", b"KEYS", b"UNIQ_KEY", b"TAG", b"KEY", b"a", b"v",
               b" ", b"\xff", b"\xe2\x82", b"\xc3\xa9", b"\xf0\x9f\x98\x80", b"\xed\xa0\x80",
               b"\x00"]
_prop_atoms = st.sampled_from(_PROP_ATOMS)
_properties_bytes = st.lists(_prop_atoms, max_size=24).map(b"".join)


def craft_record(body: bytes = b"", topic: bytes = b"T", props: bytes = b"", *,
                 magic: int = V1, sys_flag: int = 0, crc: Optional[int] = None,
                 total: Optional[int] = None, body_len: Optional[int] = None,
                 topic_len: Optional[int] = None, props_len: Optional[int] = None) -> bytes:
    """A record built in Python, with any length field overridable (written as the
    low bits of the value, the way a Java (byte)/(short) cast writes it)."""
    bh = 20 if sys_flag & codec.BORNHOST_V6_FLAG else 8
    sh = 20 if sys_flag & codec.STOREHOST_V6_FLAG else 8
    crc = zlib.crc32(body) & 0x7FFFFFFF if crc is None else crc
    body_len = len(body) if body_len is None else body_len
    topic_len = len(topic) if topic_len is None else topic_len
    props_len = len(props) if props_len is None else props_len
    rest = (
        struct.pack(">iiiqqiq", crc, 1, 2, 3, 4, sys_flag, 5)
        + bytes(range(1, bh + 1)) + struct.pack(">q", 6) + bytes(range(100, 100 + sh))
        + struct.pack(">iqI", 7, 8, body_len & 0xFFFFFFFF) + body
        + (struct.pack(">B", topic_len & 0xFF) if magic != V2
           else struct.pack(">H", topic_len & 0xFFFF))
        + topic + struct.pack(">H", props_len & 0xFFFF) + props
    )
    total = 8 + len(rest) if total is None else total
    return struct.pack(">Ii", total & 0xFFFFFFFF, magic) + rest


_any_i32 = st.integers(-(2**31), 2**31 - 1)
_near = st.integers(-4, 4)


@st.composite
def structured_record(draw):
    """A record whose fields are each right or wrong: random magic and IPv6 bits;
    body/topic/props lengths and TOTALSIZE exact, off by a little, at the bounds of
    what the record could hold, or arbitrary."""
    magic = draw(st.sampled_from([V1, V1, V1, V1, V2, BLANK, 0]) | _any_i32)
    sys_flag = draw(st.sampled_from([0, 0x10, 0x20, 0x30, 0x301]) | _any_i32)
    bh = 20 if sys_flag & 0x10 else 8
    sh = 20 if sys_flag & 0x20 else 8
    topic_len_size = 2 if magic == V2 else 1
    body = draw(st.binary(max_size=80))
    topic = draw(st.binary(max_size=40) | st.binary(min_size=120, max_size=260))
    props = draw(_properties_bytes)
    true_total = 72 + bh + sh + len(body) + topic_len_size + len(topic) + 2 + len(props)
    after_body = true_total - (72 + bh + sh)  # what a body length could claim at most

    def length(actual, room, wide):
        choice = draw(st.integers(0, 3))
        if choice == 0:
            return actual
        if choice == 1:
            return actual + draw(_near)
        if choice == 2:
            return room + draw(_near)
        return draw(wide)

    body_len = length(len(body), after_body - topic_len_size - 2, _any_i32)
    topic_len = length(len(topic), len(topic) + 2 + len(props) - 2,
                       st.integers(-(2**15), 2**15 - 1))
    props_len = length(len(props), len(props), st.integers(-(2**15), 2**15 - 1))
    crc = None if draw(st.booleans()) else draw(_any_i32)
    total = length(true_total, 72 + bh + sh, _any_i32)
    return craft_record(body, topic, props, magic=magic, sys_flag=sys_flag, crc=crc,
                        total=total, body_len=body_len, topic_len=topic_len,
                        props_len=props_len)


@settings(max_examples=500, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.lists(structured_record(), min_size=1, max_size=4),
       st.sampled_from([b"", b"\x00" * 3, b"\x00" * 8, b"\x01", bytes(200)]),
       st.sampled_from(FLAG_CHOICES), st.integers(1, 10), st.data())
def test_structured_garbage(records, tail, flags, max_records, data):
    buf = b"".join(records) + tail
    cut = data.draw(st.integers(0, len(buf)), label="cut")
    check_scan(buf[:cut] if data.draw(st.booleans(), label="truncate") else buf, 0,
               max_records, flags)
    # buffers that end exactly where a record claims to end: an over-read of a
    # length field just past TOTALSIZE hits the guard page
    start = 0
    for record in records:
        claimed = struct.unpack_from(">i", record)[0]
        if 0 < claimed <= len(buf) - start:
            check_scan(buf[:start + claimed], start, 1, flags)
        start += len(record)


def _boundary_values(actual: int, room: int) -> set:
    return ({actual + d for d in range(-4, 5)} | {room + d for d in range(-4, 5)}
            | set(range(-3, 4)))


def test_length_fields_at_their_bounds():
    """Every length field of every sample record set to values around its true value
    and around the most the record could hold, in a buffer that ends exactly at the
    record's claimed end (guard page right after): errors, never an over-read, and
    always what the reference decoder says."""
    data = sample_data()
    for rec in sample_records(ALL_FLAGS):
        pos, total = rec[codec.F_POS], rec[codec.F_TOTAL_SIZE]
        original = data[pos:pos + total]
        body_off = rec[codec.F_BODY_OFF] - pos
        topic_off = rec[codec.F_TOPIC_OFF] - pos
        props_off = rec[codec.F_PROPS_OFF] - pos

        def patched(at, fmt, value, original=original):
            out = bytearray(original)
            struct.pack_into(fmt, out, at, value)
            return bytes(out)

        variants = []
        for value in _boundary_values(total, body_off) | set(range(85, 125)) | {
                2**31 - 1, -(2**31)}:
            buf = patched(0, ">i", value)
            variants.append(buf)
            if 0 < value < total:
                variants.append(buf[:value])
            elif value > total and value - total < 64:
                variants.append(buf + bytes(value - total))
        for value in _boundary_values(rec[codec.F_BODY_LEN], total - body_off) | {
                2**31 - 1, -(2**31)}:
            variants.append(patched(body_off - 4, ">i", value))
        for value in range(-128, 128):
            variants.append(patched(topic_off - 1, ">b", value))
        for value in _boundary_values(rec[codec.F_PROPS_LEN], total - props_off) | {
                2**15 - 1, -(2**15)}:
            variants.append(patched(props_off - 2, ">h", value))
        for sys_flag_byte in (0x00, 0x10, 0x20, 0x30):
            variants.append(patched(39, ">B", sys_flag_byte))
        for buf in variants:
            for flags in (0, ALL_FLAGS):
                check_scan(buf, 0, 2, flags)


def test_topic_length_128_and_more_is_unreadable():
    """TOPICLENGTH is a signed byte: a 128..255-byte topic is written as a negative
    length and must not decode (format doc §3.2)."""
    for n in (128, 200, 255):
        record = craft_record(b"body", b"t" * n, b"TAGS\x01a")
        assert struct.unpack_from(">b", record, 88 + 4)[0] < 0
        result = guarded_scan(record, 0, 1, ALL_FLAGS)
        assert result.count == 0 and codec.is_error(result.stop_reason)
        check_scan(record, 0, 1, ALL_FLAGS)
    ok = craft_record(b"body", b"t" * 127, b"TAGS\x01a")
    assert check_scan(ok, 0, 1, ALL_FLAGS).count == 1


def test_negative_topic_length_that_adds_up_is_an_error():
    """A negative topic length must be rejected even when TOTALSIZE agrees with it:
    with an empty body and topic length -2, PROPERTIESLENGTH would be read from the
    bytes 0x00 0xFE (254) and the sum 88 + 1 - 2 + 2 + 254 = 343 matches TOTALSIZE."""
    record = craft_record(b"", b"", b"p" * 254, topic_len=-2, props_len=0, total=343)
    record = record[:343] + bytes(max(0, 343 - len(record)))
    assert len(record) == 343
    assert struct.unpack_from(">h", record, 87)[0] == 254
    result = guarded_scan(record, 0, 1, ALL_FLAGS)
    assert result.count == 0 and codec.is_error(result.stop_reason)
    check_scan(record, 0, 1, ALL_FLAGS)


def _encode_record(props: bytes, body: bytes = b"body", topic: bytes = b"T") -> bytes:
    size = codec.record_size(len(body), len(topic), len(props))
    out = bytearray(size + codec.BLANK_RECORD_SIZE)
    host = encode_host("127.0.0.1:10911")
    written = lib.mq_encode_record(
        ffi.from_buffer(out, require_writable=True), 0, len(out), 0, body, len(body), topic,
        len(topic), props, len(props), 0, 0, 0, 0, 0, host, len(host), 0, host, len(host), 0, 0)
    assert written == size
    return bytes(out[:size])


@settings(max_examples=500, deadline=None)
@given(_properties_bytes)
def test_property_lookup_matches_rocketmq_parser(props):
    """TAGS code, KEYS and UNIQ_KEY as the C scanner finds them equal what the Python
    port of RocketMQ's properties parser gives (checked inside reference_decode)."""
    record = _encode_record(props)
    # Property lookup only: with the CRC check, text ending in NUL is a torn write.
    result = check_scan(record, 0, 1, codec.SCAN_PROPERTIES)
    assert result.count == 1
    decoded = decode_properties(props)
    f = record_fields(result, 0)
    assert f[codec.F_TAGS_CODE] == (reference_java_hash(decoded["TAGS"]) if "TAGS" in decoded
                                    else 0)


@pytest.mark.parametrize(
    "props, tags, keys",
    [
        (b"TAGS\x01v1", "v1", None),
        (b"", None, None),
        (b" ", None, None),
        (b"aaa", None, None),
        (b"TAGS\x01", None, None),
        (b"\x01TAGS", None, None),
        (b"TAGS\x01\x02KEYS\x01v2", None, "v2"),
        (b"TAGS\x01a\x02TAGS\x01b", "b", None),
        (b"KEYS\x01a\x01b", None, "a\x01b"),
        (b"KEYS\x01k\x02", None, "k"),
        (b"XTAGS\x01a\x02TAGSX\x01b", None, None),
        (b"KEYS\x01", None, None),
        (b"KEYS\x01\x02TAGS\x01", None, None),
        (b"KEYS\x01v\x02KEYS\x01", None, "v"),
        (b"KEYS\x01v\x02KEYS\x01\x02", None, "v"),
    ],
)
def test_property_lookup_examples(props, tags, keys):
    record = _encode_record(props)
    fields, reason = codec.scan_one(record, len(record), 0, codec.SCAN_PROPERTIES)
    assert reason == 0
    assert fields[codec.F_TAGS_CODE] == (reference_java_hash(tags) if tags else 0)
    if keys is None:
        assert (fields[codec.F_KEYS_OFF], fields[codec.F_KEYS_LEN]) == (-1, 0)
    else:
        off, n = fields[codec.F_KEYS_OFF], fields[codec.F_KEYS_LEN]
        assert record[off:off + n].decode() == keys


# ----------------------------------------------------------------------------- get()'s C helpers

BLANK_UNIT = 0x7FFFFFFF
_units_guard = functools.lru_cache(maxsize=1)(lambda: GuardedBuffer(64 * 1024))


def reference_pick(units, codes, cl_min, cl_max, byte_limit, budget, have, taken):
    """RocketMQ's getMessage loop over units (offset, size, tag code), as get() ran it
    in Python before it moved to C: (picks, scanned, bytes, full, miss, damaged,
    unordered)."""
    picks, damaged, miss, full, scanned = [], [], lib.MQ_MISS_NONE, 0, 0
    while scanned < len(units) and len(picks) < budget:
        offset, size, tag_code = units[scanned]
        if (have or picks) and taken + size > byte_limit:
            full = 1
            break
        scanned += 1
        low = (tag_code & 0xFFFFFFFF) - ((tag_code & 0x80000000) << 1)
        if codes is not None and low not in codes:
            miss = lib.MQ_MISS_NO_MATCH
            continue
        if size == BLANK_UNIT and offset == 0:
            continue
        if offset < cl_min:
            miss = lib.MQ_MISS_REMOVED
            continue
        if offset < 0 or size <= 0 or offset + size > cl_max:
            damaged.append(scanned - 1)
            continue
        picks.append((offset, size, scanned - 1))
        taken += size
    unordered = int(any(b[0] < a[0] for a, b in zip(picks, picks[1:])))
    return picks, scanned, taken, full, miss, damaged, unordered


_i64 = st.integers(-(2**63), 2**63 - 1)
_sound_record = st.builds(
    lambda body, topic, props, sys_flag: craft_record(body, topic, props, sys_flag=sys_flag),
    st.binary(max_size=60), st.binary(max_size=20), st.binary(max_size=40),
    st.sampled_from([0, 0x10, 0x20, 0x30]))
_unit = st.tuples(st.sampled_from([0, 0, 100, 4096, 10**6]) | st.integers(-10, 2**20) | _i64,
                  st.sampled_from([100, 250, BLANK_UNIT, 0, -1]) | _any_i32,
                  st.sampled_from([0, 1, 7, 2**32 + 7, -(2**40) + 1]) | _i64)


@settings(max_examples=600, deadline=None)
@given(st.lists(_unit, max_size=40),
       st.none() | st.lists(st.sampled_from([0, 1, 7, -1]) | _any_i32, max_size=4),
       st.integers(-5, 2**20), st.integers(-5, 2**21), st.integers(0, 10**6),
       st.integers(1, 40), st.booleans(), st.integers(0, 10**6))
def test_pick_units_matches_the_reference(units, codes, cl_min, cl_max, byte_limit, budget,
                                          have, taken):
    raw = b"".join(struct.pack(">qiq", *unit) for unit in units)
    ptr = _units_guard().place(raw)  # an over-read hits the guard page
    code_array = ffi.new("int32_t[]", codes) if codes is not None else ffi.NULL
    io = ffi.new("int64_t[]", lib.MQ_PICK_IO)
    io[lib.MQ_PICK_BYTES], io[lib.MQ_PICK_HAVE] = taken, int(have)
    picked = ffi.new("int64_t[]", 3 * budget)
    damaged = ffi.new("int64_t[]", max(1, len(units)))
    n = lib.mq_pick_units(ptr, len(units), code_array, len(codes) if codes is not None else -1,
                          cl_min, cl_max, byte_limit, budget, io, picked, damaged)
    picks, scanned, total, full, miss, bad, unordered = reference_pick(
        units, set(codes) if codes is not None else None, cl_min, cl_max, byte_limit, budget,
        have, taken)
    assert [tuple(picked[3 * i:3 * i + 3]) for i in range(n)] == picks
    assert (io[lib.MQ_PICK_SCANNED], io[lib.MQ_PICK_BYTES], io[lib.MQ_PICK_FULL],
            io[lib.MQ_PICK_MISS], io[lib.MQ_PICK_UNORDERED]) == (scanned, total, full, miss,
                                                                  unordered)
    assert list(damaged[0:io[lib.MQ_PICK_DAMAGED]]) == bad


@settings(max_examples=500, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.lists(_sound_record | structured_record(), min_size=1, max_size=4), st.data())
def test_locate_many_on_damaged_records(records, data):
    """mq_locate_many at record starts and at arbitrary positions of sound and damaged
    CommitLog bytes: never reads outside them, and agrees with the reference decoder."""
    file_from = data.draw(st.sampled_from([0, 1 << 30]), label="file_from")
    queue_id = data.draw(st.sampled_from([0, 1]) | _any_i32, label="queue_id")
    starts = [sum(map(len, records[:i])) for i in range(len(records))]
    buf = bytearray(b"".join(records))
    for start, record in zip(starts, records):
        if len(record) >= 36 and data.draw(st.booleans(), label="in place"):
            # QUEUEID and PHYSICALOFFSET as a unit of this queue at this place implies
            struct.pack_into(">i", buf, start + 12, queue_id)
            struct.pack_into(">q", buf, start + 28, file_from + start)
    buf = bytes(buf)
    positions = data.draw(st.lists(st.sampled_from(starts) | st.integers(-3, len(buf) + 3),
                                   min_size=1, max_size=8), label="positions")
    sizes = [data.draw(st.sampled_from([len(r) for r in records]) | _any_i32, label="size")
             for _ in positions]
    ptr = guarded().place(buf)
    picks = [v for pos, size in zip(positions, sizes) for v in (file_from + pos, size, 0)]
    out = ffi.new("int64_t[]", lib.MQ_LOC_FIELDS * len(positions))
    reasons = ffi.new("int64_t[]", len(positions))
    ok = lib.mq_locate_many(ptr, len(buf), file_from, queue_id, ffi.new("int64_t[]", picks),
                            len(positions), out, reasons)
    assert ok == sum(1 for i in range(len(positions)) if reasons[i] <= 0)
    for i, (pos, size) in enumerate(zip(positions, sizes)):
        fields, _ = reference_decode(buf, len(buf), pos, 0) if 0 <= pos < len(buf) else (None, 0)
        if fields is None:
            assert reasons[i] > 0
        elif fields[codec.F_TOTAL_SIZE] != size:
            assert reasons[i] == codec.ERR_UNIT_SIZE
        else:
            usual = (fields[codec.F_QUEUE_ID] == queue_id
                     and fields[codec.F_PHYSICAL_OFFSET] == file_from + pos)
            assert reasons[i] == (0 if usual else lib.MQ_LOC_UNUSUAL)
            located = list(out[i * lib.MQ_LOC_FIELDS:(i + 1) * lib.MQ_LOC_FIELDS])
            assert located == [fields[codec.F_BODY_OFF] - pos, fields[codec.F_BODY_LEN],
                               fields[codec.F_QUEUE_OFFSET]]


# ----------------------------------------------------------------------------- subprocess fuzz


def random_structured_record(rng: random.Random) -> bytes:
    """`structured_record` for the subprocess fuzz, driven by `random`."""
    magic = rng.choice([V1, V1, V1, V2, BLANK, 0, rng.getrandbits(32) - 2**31])
    sys_flag = rng.choice([0, 0x10, 0x20, 0x30, rng.getrandbits(32) - 2**31])
    bh = 20 if sys_flag & 0x10 else 8
    sh = 20 if sys_flag & 0x20 else 8
    topic_len_size = 2 if magic == V2 else 1
    body = rng.randbytes(rng.choice([0, 1, rng.randint(0, 300)]))
    topic = rng.randbytes(rng.choice([0, 1, rng.randint(0, 260)]))
    props = b"".join(rng.choice(_PROP_ATOMS) for _ in range(rng.randint(0, 20)))
    fixed = 72 + bh + sh
    true_total = fixed + len(body) + topic_len_size + len(topic) + 2 + len(props)

    def length(actual, room, bits):
        choice = rng.randrange(4)
        if choice == 0:
            return actual
        if choice == 1:
            return actual + rng.randint(-4, 4)
        if choice == 2:
            return room + rng.randint(-4, 4)
        return rng.getrandbits(bits) - 2 ** (bits - 1)

    return craft_record(
        body, topic, props, magic=magic, sys_flag=sys_flag,
        crc=None if rng.random() < 0.5 else rng.getrandbits(31),
        total=length(true_total, fixed, 32),
        body_len=length(len(body), true_total - fixed - topic_len_size - 2, 32),
        topic_len=length(len(topic), len(topic) + len(props), 16),
        props_len=length(len(props), len(props), 16),
    )


def fuzz_main(seed: int, iterations: int) -> dict:
    """Random garbage, damaged sample records, torn tails and structured records, all
    scanned through guarded memory and checked by check_scan. Run in a child process
    by the test below; a decoder crash kills only the child. Returns counts of the
    stop reasons and decoded records, so the caller can see the fuzz reached
    records and not only garbage."""
    rng = random.Random(seed)
    base = sample_data()
    starts = [r[codec.F_POS] for r in sample_records(ALL_FLAGS)]
    seen = {"records": 0}
    for i in range(iterations):
        kind = i % 4
        record_starts = [0]
        if kind == 0:
            buf = rng.randbytes(rng.randint(0, 4096))
        elif kind == 1:
            mutable = bytearray(base)
            for _ in range(rng.randint(1, 16)):
                mutable[rng.randrange(len(mutable))] = rng.randrange(256)
            buf = bytes(mutable[:rng.randint(0, len(mutable))])
            record_starts = starts
        elif kind == 2:
            mutable = bytearray(base[:rng.randint(0, len(base))])
            # random 4-byte words, to hit length fields with large and negative values
            for _ in range(rng.randint(1, 6)):
                if len(mutable) >= 4:
                    at = rng.randrange(len(mutable) - 3)
                    mutable[at:at + 4] = rng.randbytes(4)
            buf = bytes(mutable)
            record_starts = starts
        else:
            records = [random_structured_record(rng) for _ in range(rng.randint(1, 3))]
            buf = b"".join(records)
            claimed = struct.unpack_from(">i", records[-1])[0]
            last = len(buf) - len(records[-1])
            # end the buffer where the last record claims to end, or cut it anywhere
            if 0 < claimed <= len(records[-1]) and rng.random() < 0.5:
                buf = buf[:last + claimed]
            elif rng.random() < 0.3:
                buf = buf[:rng.randint(0, len(buf))]
        candidates = [p for p in record_starts if p <= len(buf)]
        pos = rng.choice(candidates) if rng.random() < 0.7 else rng.randint(0, len(buf))
        flags = rng.choice(FLAG_CHOICES)
        try:
            result = check_scan(buf, pos, rng.randint(1, 50), flags)
        except AssertionError:
            print(f"iteration {i}: pos={pos} flags={flags} buf={buf.hex()}", file=sys.stderr)
            raise
        seen["records"] += result.count
        seen[result.stop_reason] = seen.get(result.stop_reason, 0) + 1
    return seen


def test_garbage_fuzz_in_subprocess():
    tests_dir = os.path.dirname(os.path.abspath(__file__))
    code = (
        "import json, sys; sys.path.insert(0, sys.argv[1]); import test_fuzz_decoder as t; "
        "print(json.dumps(t.fuzz_main(int(sys.argv[2]), int(sys.argv[3]))))"
    )
    seed = random.SystemRandom().randrange(2**32)
    proc = subprocess.run(
        [sys.executable, "-c", code, tests_dir, str(seed), "50000"],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, (
        f"decoder fuzz (seed {seed}) exited with {proc.returncode} "
        f"({'SIGSEGV: a read outside the buffer' if proc.returncode == -11 else 'failure'})\n"
        f"{proc.stderr[-4000:]}"
    )
    seen = json.loads(proc.stdout)
    records = seen.pop("records")
    errors = sum(n for reason, n in seen.items() if codec.is_error(int(reason)))
    # the fuzz must reach both sides: whole records decoded and damage reported
    assert records > 1000 and errors > 1000, proc.stdout


def test_guard_page_catches_an_overread_in_subprocess():
    """The guard page really faults: reading one byte past placed data kills the child
    with SIGSEGV (so a clean run of the tests above means no over-read)."""
    tests_dir = os.path.dirname(os.path.abspath(__file__))
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); import test_fuzz_decoder as t; "
        "p = t.guarded().place(b'abc'); assert p[2] == b'c'; p[3]"
    )
    proc = subprocess.run([sys.executable, "-c", code, tests_dir], capture_output=True,
                          timeout=60)
    assert proc.returncode == -11, proc.stderr
