"""The CommitLog record codec: Python's view of the C core in ``_native``.

Format constants live here, once. Encoding happens inside CommitLog (straight into
the mapped file); this module decodes, scans and hashes.
"""

from __future__ import annotations

from typing import List, NamedTuple, Tuple

from ._native import ffi, lib

MESSAGE_MAGIC_CODE = -626843481  # 0xDAA320A7
MESSAGE_MAGIC_CODE_V2 = -626843477  # 0xDAA320AB (RocketMQ 5, 2-byte topic length)
BLANK_MAGIC_CODE = -875286124  # 0xCBD43194
BLANK_RECORD_SIZE = 8
RECORD_FIXED_SIZE_V4 = 91  # TOTALSIZE with empty body, topic and properties, IPv4 hosts
MAX_TOPIC_BYTES = 127
MAX_PROPERTIES_BYTES = 32767

# sysflag bits
COMPRESSED_FLAG = 0x1
MULTI_TAGS_FLAG = 0x2
TRANSACTION_TYPE_MASK = 0xC
TRANSACTION_NOT_TYPE = 0x0
TRANSACTION_PREPARED_TYPE = 0x4
TRANSACTION_COMMIT_TYPE = 0x8
TRANSACTION_ROLLBACK_TYPE = 0xC
BORNHOST_V6_FLAG = 0x10
STOREHOST_V6_FLAG = 0x20

FIELDS = lib.MQ_FIELDS
F_POS = lib.MQ_F_POS
F_TOTAL_SIZE = lib.MQ_F_TOTAL_SIZE
F_MAGIC = lib.MQ_F_MAGIC
F_BODY_CRC = lib.MQ_F_BODY_CRC
F_QUEUE_ID = lib.MQ_F_QUEUE_ID
F_FLAG = lib.MQ_F_FLAG
F_QUEUE_OFFSET = lib.MQ_F_QUEUE_OFFSET
F_PHYSICAL_OFFSET = lib.MQ_F_PHYSICAL_OFFSET
F_SYS_FLAG = lib.MQ_F_SYS_FLAG
F_BORN_TIMESTAMP = lib.MQ_F_BORN_TIMESTAMP
F_BORN_HOST_OFF = lib.MQ_F_BORN_HOST_OFF
F_BORN_HOST_LEN = lib.MQ_F_BORN_HOST_LEN
F_STORE_TIMESTAMP = lib.MQ_F_STORE_TIMESTAMP
F_STORE_HOST_OFF = lib.MQ_F_STORE_HOST_OFF
F_STORE_HOST_LEN = lib.MQ_F_STORE_HOST_LEN
F_RECONSUME_TIMES = lib.MQ_F_RECONSUME_TIMES
F_PREPARED_OFFSET = lib.MQ_F_PREPARED_OFFSET
F_BODY_OFF = lib.MQ_F_BODY_OFF
F_BODY_LEN = lib.MQ_F_BODY_LEN
F_TOPIC_OFF = lib.MQ_F_TOPIC_OFF
F_TOPIC_LEN = lib.MQ_F_TOPIC_LEN
F_PROPS_OFF = lib.MQ_F_PROPS_OFF
F_PROPS_LEN = lib.MQ_F_PROPS_LEN
F_TAGS_CODE = lib.MQ_F_TAGS_CODE
F_KEYS_OFF = lib.MQ_F_KEYS_OFF
F_KEYS_LEN = lib.MQ_F_KEYS_LEN
F_UNIQ_OFF = lib.MQ_F_UNIQ_OFF
F_UNIQ_LEN = lib.MQ_F_UNIQ_LEN

SCAN_CHECK_CRC = lib.MQ_SCAN_CHECK_CRC
SCAN_PROPERTIES = lib.MQ_SCAN_PROPERTIES

STOP_LIMIT = lib.MQ_STOP_LIMIT
STOP_END = lib.MQ_STOP_END
STOP_BLANK = lib.MQ_STOP_BLANK
STOP_ZERO = lib.MQ_STOP_ZERO
ERR_TRUNCATED = lib.MQ_ERR_TRUNCATED
ERR_MAGIC = lib.MQ_ERR_MAGIC
ERR_TOTAL_SIZE = lib.MQ_ERR_TOTAL_SIZE
ERR_FIELD_LENGTH = lib.MQ_ERR_FIELD_LENGTH
ERR_SIZE_MISMATCH = lib.MQ_ERR_SIZE_MISMATCH
ERR_CRC = lib.MQ_ERR_CRC
ERR_TORN = lib.MQ_ERR_TORN
ERR_UNIT_SIZE = lib.MQ_ERR_UNIT_SIZE

STOP_REASONS = {
    STOP_LIMIT: "record limit reached",
    STOP_END: "end of readable data",
    STOP_BLANK: "end-of-file blank record",
    STOP_ZERO: "zeros: nothing written here yet",
    ERR_TRUNCATED: "record extends past the readable data (torn or truncated)",
    ERR_MAGIC: "unknown magic code",
    ERR_TOTAL_SIZE: "TOTALSIZE smaller than any record",
    ERR_FIELD_LENGTH: "a length field is negative or points outside the record",
    ERR_SIZE_MISMATCH: "TOTALSIZE disagrees with the lengths inside the record",
    ERR_CRC: "body CRC mismatch",
    ERR_TORN: "record ends in NUL: torn after its lengths were written",
    ERR_UNIT_SIZE: "unit size differs from the record's",
}

ENC_NOSPACE = lib.MQ_ENC_NOSPACE
ENC_TOOBIG = lib.MQ_ENC_TOOBIG
ENC_BADARG = lib.MQ_ENC_BADARG


def is_error(reason: int) -> bool:
    """Whether a scan stop reason means damaged data (rather than a normal end)."""
    return reason >= ERR_TRUNCATED


def java_hash(text: str) -> int:
    """Java ``String.hashCode()`` of `text`: over UTF-16 code units, as a signed i32."""
    data = text.encode("utf-16-le", "surrogatepass")
    return lib.mq_java_hash_utf16le(data, len(data))


def java_hash_utf8(data: bytes) -> int:
    """Java ``String.hashCode()`` of the string that UTF-8 `data` decodes to
    (malformed bytes decode to U+FFFD, as Java and ``errors="replace"`` do)."""
    return lib.mq_java_hash_utf8(data, len(data))


def body_crc(data) -> int:
    """RocketMQ's BODYCRC: ``zlib.crc32(data) & 0x7FFFFFFF`` (0 for an empty body)."""
    if type(data) is not bytes:
        data = ffi.from_buffer(data)
    return lib.mq_crc32(data, len(data))


def record_size(body_len: int, topic_len: int, props_len: int, v6_born=False, v6_store=False):
    """TOTALSIZE of a v1 record with these byte lengths."""
    return lib.mq_record_size(
        body_len, topic_len, props_len, 20 if v6_born else 8, 20 if v6_store else 8
    )


class ScanResult(NamedTuple):
    """Output of `scan`: `fields` holds FIELDS ints per record, positions relative to
    the buffer; scanning stopped at `stop_pos` because of `stop_reason`."""

    count: int
    fields: List[int]
    stop_pos: int
    stop_reason: int


def scan(buf, buf_len: int, pos: int, max_records: int, flags: int = 0) -> ScanResult:
    """Validate and decode up to `max_records` whole records from ``buf[pos:buf_len]``.

    `buf` is a cffi ``char *`` or anything ``ffi.from_buffer`` accepts. Nothing at or
    beyond `buf_len` is read. Damaged input ends the scan with an ERR_* reason.
    """
    if not isinstance(buf, ffi.CData):
        buf = ffi.from_buffer(buf)
    out = ffi.new("int64_t[]", max_records * FIELDS + 2)
    stop = out + max_records * FIELDS
    count = lib.mq_scan(buf, buf_len, pos, max_records, flags, out, stop)
    return ScanResult(count, ffi.unpack(out, count * FIELDS), stop[0], stop[1])


def scan_one(buf, buf_len: int, pos: int, flags: int = 0) -> Tuple[List[int], int]:
    """Decode the record at `pos`: (fields, 0) on success, ([], reason) otherwise."""
    result = scan(buf, buf_len, pos, 1, flags)
    if result.count == 1:
        return result.fields, 0
    return [], result.stop_reason
