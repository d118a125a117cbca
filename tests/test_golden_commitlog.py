"""The golden stores written by RocketMQ 4.9.8: we read every record exactly, encode
the same fields to the same bytes, and writing the same workload through mqstore
produces byte-identical CommitLog files."""

from __future__ import annotations

import hashlib

import pytest

from golden import (
    CASES,
    GOLDEN_CONFIG,
    GOLDEN_FILE_SIZE,
    commitlog_files,
    decode_commitlog,
    manifest,
    summary,
)
from mqstore import Message, MessageStore, PutStatus, codec
from mqstore._native import ffi, lib
from mqstore.message import (
    PROPERTY_DELAY_TIME_LEVEL,
    PROPERTY_REAL_QUEUE_ID,
    PROPERTY_REAL_TOPIC,
    SCHEDULE_TOPIC,
)


@pytest.mark.parametrize("case", CASES)
def test_every_record_decodes_to_the_manifest(case):
    records, _ = decode_commitlog(case)
    rows = manifest(case)
    assert len(records) == len(rows)
    for (message, raw, position), row in zip(records, rows):
        where = f"{case} @ {row['commitLogOffset']}"
        assert position == row["commitLogOffset"], where
        assert message.commitlog_offset == row["commitLogOffset"], where
        assert message.topic == row["topic"], where
        assert message.queue_id == row["queueId"], where
        assert message.queue_offset == row["queueOffset"], where
        assert message.store_size == row["storeSize"] == len(raw), where
        assert message.msg_id == row["msgId"], where
        assert message.uniq_key == row["uniqKey"], where
        assert message.tags == row["tags"], where
        assert message.get_property("KEYS") == row["keys"], where
        assert dict(message.properties) == row["properties"], where
        assert message.born_timestamp == row["bornTimestamp"], where
        assert message.store_timestamp == row["storeTimestamp"], where
        assert message.born_host == row["bornHost"], where
        assert message.store_host == row["storeHost"], where
        assert message.sys_flag == row["sysFlag"], where
        assert message.reconsume_times == row["reconsumeTimes"], where
        assert message.flag == row["flag"], where
        assert message.body_crc == row["bodyCRC"], where
        assert message.prepared_transaction_offset == row["preparedTransactionOffset"], where
        assert len(message.body) == row["bodyLength"], where
        assert hashlib.sha256(message.body).hexdigest() == row["bodySha256"], where
        if "bodyHex" in row:
            assert message.body.hex() == row["bodyHex"], where


@pytest.mark.parametrize("case", CASES)
def test_tag_codes_match_the_consume_queue_column(case):
    """The scanner's tag code (Java hash of TAGS) is what RocketMQ put in the CQ, for
    every record outside SCHEDULE_TOPIC_XXXX (whose tag code is a delivery time)."""
    rows = manifest(case)
    for path in commitlog_files(case):
        data = path.read_bytes()
        result = codec.scan(data, len(data), 0, 1024, codec.SCAN_PROPERTIES)
        start = int(path.name)
        by_offset = {row["commitLogOffset"]: row for row in rows}
        for i in range(result.count):
            f = result.fields[i * codec.FIELDS:(i + 1) * codec.FIELDS]
            row = by_offset[start + f[codec.F_POS]]
            if row["cqTagsCode"] is None or row["topic"] == SCHEDULE_TOPIC:
                continue
            assert f[codec.F_TAGS_CODE] == row["cqTagsCode"], row["commitLogOffset"]
            keys = data[f[codec.F_KEYS_OFF]:f[codec.F_KEYS_OFF] + f[codec.F_KEYS_LEN]]
            assert (keys.decode() if f[codec.F_KEYS_OFF] >= 0 else None) == row["keys"]


@pytest.mark.parametrize("case", CASES)
def test_blank_records_match_the_summary(case):
    _, blanks = decode_commitlog(case)
    if case == "basic":
        expected = [(b["offset"], b["declaredSize"]) for b in summary(case)["blankRecords"]]
        assert blanks == expected
    for offset, declared in blanks:
        assert offset % GOLDEN_FILE_SIZE + declared == GOLDEN_FILE_SIZE


@pytest.mark.parametrize("case", CASES)
def test_reencoding_the_decoded_fields_gives_identical_bytes(case):
    records, _ = decode_commitlog(case)
    for message, raw, position in records:
        buffer = bytearray(GOLDEN_FILE_SIZE)
        dst = ffi.from_buffer(buffer)
        topic = message.topic.encode()
        props = message.encoded_properties()  # the raw stored string, untouched
        size = lib.mq_encode_record(
            dst, 0, GOLDEN_FILE_SIZE, message.commitlog_offset, message.body,
            len(message.body), topic, len(topic), props, len(props), message.queue_id,
            message.flag, message.queue_offset, message.sys_flag, message.born_timestamp,
            message._born_host_raw, len(message._born_host_raw), message.store_timestamp,
            message._store_host_raw, len(message._store_host_raw), message.reconsume_times,
            message.prepared_transaction_offset,
        )
        assert size == len(raw)
        assert bytes(buffer[:size]) == raw, position


@pytest.mark.parametrize("case", CASES)
def test_properties_reserialise_in_java_hashmap_order(case):
    """Our properties encoder (Java HashMap order) reproduces every stored string."""
    records, _ = decode_commitlog(case)
    for message, _raw, position in records:
        rebuilt = Message("T", b"", properties=dict(message.properties))
        assert rebuilt.encoded_properties() == message._props_raw, position


class FixedClock:
    def __init__(self) -> None:
        self.now = 0

    def __call__(self) -> int:
        return self.now


def _replay_message(message):
    """The Message a producer would have sent to get this stored record, and its queue."""
    properties = dict(message.properties)
    topic, queue_id = message.topic, message.queue_id
    if PROPERTY_DELAY_TIME_LEVEL in properties and topic != SCHEDULE_TOPIC:
        # Delivered by RocketMQ's schedule service: DELAY stays in the stored string
        # but must not delay it again. A stored record put back is kept as it is.
        return message, queue_id
    if topic == SCHEDULE_TOPIC and PROPERTY_DELAY_TIME_LEVEL in properties:
        # Stored by the delay path: give the store the original topic and queue and let
        # it do RocketMQ's rewrite (REAL_TOPIC / REAL_QID, HashMap re-serialisation).
        topic = properties.pop(PROPERTY_REAL_TOPIC)
        queue_id = int(properties.pop(PROPERTY_REAL_QUEUE_ID))
    replay = Message(
        topic,
        message.body,
        properties=properties,
        flag=message.flag,
        born_timestamp=message.born_timestamp,
        born_host=message.born_host,
        store_host=message.store_host,
        sys_flag=message.sys_flag & ~0x30,
        reconsume_times=message.reconsume_times,
        prepared_transaction_offset=message.prepared_transaction_offset,
    )
    return replay, queue_id


@pytest.mark.parametrize("case", CASES)
def test_writing_the_golden_workload_gives_identical_files(case, tmp_path):
    records, _ = decode_commitlog(case)
    clock = FixedClock()
    store = MessageStore(tmp_path / "store", clock=clock, **GOLDEN_CONFIG)
    with store:
        for message, _raw, position in records:
            replay, queue_id = _replay_message(message)
            clock.now = message.store_timestamp
            result = store.put(replay, queue_id)
            assert result.status is PutStatus.PUT_OK, (position, result)
            assert result.commitlog_offset == position
            assert result.queue_offset == message.queue_offset
            assert result.msg_id == message.msg_id
    ours = sorted((tmp_path / "store" / "commitlog").iterdir())
    golden = commitlog_files(case)
    written = [p for p in golden if any(p.read_bytes())]
    assert [p.name for p in ours] == [p.name for p in written]
    for mine, theirs in zip(ours, written):
        assert mine.read_bytes() == theirs.read_bytes(), mine.name
    # What is left in golden is RocketMQ's pre-allocated, never-written next file.
    for extra in golden[len(written):]:
        assert not any(extra.read_bytes())
