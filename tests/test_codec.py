"""The record codec and the message model: RocketMQ's test vectors (format doc §19),
Java hashCode and BODYCRC against pure-Python references, the properties string
(§4), message ids (§5), input validation, and every record field round-tripped
through a real MessageStore."""

from __future__ import annotations

import ipaddress
import struct
import tempfile
import zlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import mqstore
from mqstore import Message, MessageStore, PutStatus, StoreConfig, codec
from mqstore.message import (
    PROPERTY_DELAY_TIME_LEVEL,
    decode_host,
    decode_msg_id,
    decode_properties,
    encode_host,
    encode_properties,
    hashmap_order,
    offset_msg_id,
)

FIXED_CLOCK_MS = 1_700_000_000_123
SMALL_FILE = 64 * 1024
I32_MIN, I32_MAX = -(2**31), 2**31 - 1
I64_MIN, I64_MAX = -(2**63), 2**63 - 1

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


# ----------------------------------------------------------------------------- references


def reference_java_hash(text: str) -> int:
    """Java String.hashCode(): h = 31*h + unit over UTF-16 code units, signed i32."""
    data = text.encode("utf-16-le", "surrogatepass")
    h = 0
    for (unit,) in struct.iter_unpack("<H", data):
        h = (31 * h + unit) & 0xFFFFFFFF
    return h - (1 << 32) if h >= 1 << 31 else h


def reference_crc(data: bytes) -> int:
    return zlib.crc32(data) & 0x7FFFFFFF


def host_string(ip: ipaddress._BaseAddress, port: int) -> str:
    """The canonical 'ip:port' / '[ipv6]:port' text decode_host produces."""
    return f"[{ip}]:{port}" if ip.version == 6 else f"{ip}:{port}"


# ----------------------------------------------------------------------------- §19 test vectors


@pytest.mark.parametrize(
    "text, expected",
    [
        ("TAG1", 2567159),
        ("TagA", 2598919),
        ("TagB", 2598920),
        ("abc", 96354),
        ("schedule_tag", 1162501618),
        ("FooBar#Hello", -101609924),
        ("polygenelubricants", -2147483648),
        ("Aa", 2112),
        ("BB", 2112),
        ("été", 227742),
        ("😀", 1772899),
        ("", 0),
    ],
)
def test_java_hash_vectors(text, expected):
    assert mqstore.java_hash(text) == expected
    assert codec.java_hash(text) == expected
    # the UTF-8 entry point the decoder uses for tag codes must agree
    assert codec.java_hash_utf8(text.encode("utf-8")) == expected


def test_java_hash_collision_and_min_value():
    assert mqstore.java_hash("Aa") == mqstore.java_hash("BB") == 2112
    # Integer.MIN_VALUE: the index takes abs() of it as 0 (§7.4); the hash itself is MIN
    assert mqstore.java_hash("polygenelubricants") == I32_MIN


@pytest.mark.parametrize(
    "body, expected",
    [
        (b"Once, there was a chance for me!", 151131488),
        (b"body", 1537739698),
        (b"", 0),
    ],
)
def test_body_crc_vectors(body, expected):
    assert mqstore.body_crc(body) == expected
    assert mqstore.body_crc(bytearray(body)) == expected
    assert mqstore.body_crc(memoryview(body)) == expected


def test_record_fixed_overhead_is_91():
    assert codec.record_size(0, 0, 0) == 91 == codec.RECORD_FIXED_SIZE_V4
    # each IPv6 host adds 12 bytes (§3.2: 115 with both hosts IPv6)
    assert codec.record_size(0, 0, 0, v6_born=True) == 103
    assert codec.record_size(0, 0, 0, v6_store=True) == 103
    assert codec.record_size(0, 0, 0, v6_born=True, v6_store=True) == 115
    assert codec.record_size(10, 20, 30) == 91 + 60


def test_record_size_foobar_157():
    props = encode_properties({"TAGS": "TAG1", "KEYS": "1700000000000"})
    assert len(props) == 4 + 1 + 4 + 1 + 4 + 1 + 13  # v4: no trailing separator
    assert codec.record_size(32, len(b"FooBar"), len(props)) == 157


def test_record_size_foobar_157_through_the_store(tmp_path):
    with small_store(tmp_path) as store:
        msg = Message("FooBar", b"x" * 32, tags="TAG1", keys="1700000000000")
        result = store.put(msg)
        assert result.status is PutStatus.PUT_OK
        assert result.store_size == 157
        assert store.look_by_offset(result.commitlog_offset).store_size == 157
        second = store.put(msg)
        assert second.commitlog_offset == 157


def test_offset_msg_id_vector():
    host = encode_host("127.0.0.1:10911")
    assert host == bytes([127, 0, 0, 1]) + struct.pack(">i", 10911)
    assert mqstore.offset_msg_id(host, 0) == "7F00000100002A9F0000000000000000"
    assert decode_msg_id("7F00000100002A9F0000000000000000") == ("127.0.0.1:10911", 0)
    assert decode_msg_id("7f00000100002a9f0000000000000000") == ("127.0.0.1:10911", 0)


def test_offset_msg_id_ipv6_is_56_hex_chars():
    host = encode_host("[2001:db8::1]:10911")
    assert len(host) == 20
    msg_id = offset_msg_id(host, 123456789)
    assert len(msg_id) == 56
    assert msg_id == msg_id.upper()
    assert msg_id == "20010DB8000000000000000000000001" + "00002A9F" + "00000000075BCD15"
    assert decode_msg_id(msg_id) == ("[2001:db8::1]:10911", 123456789)


@st.composite
def hosts(draw, version=None):
    v = draw(st.sampled_from([4, 6])) if version is None else version
    ip = draw(st.ip_addresses(v=v))
    port = draw(st.integers(0, 65535))
    return ip, port


@settings(max_examples=200, deadline=None)
@given(hosts(), st.integers(0, I64_MAX))
def test_msg_id_round_trip(host, offset):
    ip, port = host
    text = host_string(ip, port)
    raw = encode_host(text)
    assert raw == ip.packed + struct.pack(">i", port)
    assert decode_host(raw) == text
    msg_id = offset_msg_id(raw, offset)
    assert len(msg_id) == (32 if ip.version == 4 else 56)
    assert msg_id == (raw + struct.pack(">q", offset)).hex().upper()
    assert decode_msg_id(msg_id) == (text, offset)


@pytest.mark.parametrize("bad", ["", "7F00000100002A9F000000000000000", "X" * 32, "7F" * 20])
def test_decode_msg_id_rejects_malformed(bad):
    with pytest.raises(ValueError):
        decode_msg_id(bad)


def test_decode_msg_id_rejects_non_str():
    with pytest.raises(TypeError):
        decode_msg_id(b"7F00000100002A9F0000000000000000")


# ----------------------------------------------------------------------------- hashes and CRC

# Any Unicode text, lone surrogates included (Java strings may hold them).
any_text = st.text(st.characters(exclude_categories=()), max_size=200)


@settings(max_examples=500, deadline=None)
@given(any_text)
def test_java_hash_matches_reference(text):
    assert codec.java_hash(text) == reference_java_hash(text)


# Byte soup biased towards the edges of UTF-8: lead bytes with restricted second-byte
# ranges (E0, ED, F0, F4), overlong and out-of-range leads, stray continuations,
# truncated sequences and well-formed text.
utf8_edges = st.sampled_from(
    [
        b"\x80",
        b"\xbf",
        b"\xc0",
        b"\xc1",
        b"\xc2",
        b"\xdf",
        b"\xe0",
        b"\xe0\x9f",
        b"\xe0\xa0",
        b"\xe1",
        b"\xec",
        b"\xed",
        b"\xed\x9f",
        b"\xed\xa0",
        b"\xee",
        b"\xef",
        b"\xef\xbf",
        b"\xf0",
        b"\xf0\x8f",
        b"\xf0\x90",
        b"\xf0\x9f\x98",
        b"\xf1",
        b"\xf3",
        b"\xf4",
        b"\xf4\x8f",
        b"\xf4\x90",
        b"\xf5",
        b"\xf8",
        b"\xfe",
        b"\xff",
        b"\x00",
        b"a",
    ]
)
utf8_soup = st.one_of(
    st.binary(max_size=64),
    st.lists(
        st.one_of(
            utf8_edges,
            st.binary(min_size=1, max_size=3),
            any_text.map(lambda t: t.encode("utf-8", "surrogatepass")),
        ),
        max_size=30,
    ).map(b"".join),
)


@settings(max_examples=1000, deadline=None)
@given(utf8_soup)
def test_java_hash_utf8_matches_reference_for_any_bytes(data):
    expected = reference_java_hash(data.decode("utf-8", "replace"))
    assert codec.java_hash_utf8(data) == expected


def test_java_hash_utf8_all_two_byte_inputs():
    for b0 in range(256):
        for b1 in range(256):
            data = bytes((b0, b1))
            expected = reference_java_hash(data.decode("utf-8", "replace"))
            assert codec.java_hash_utf8(data) == expected, data


def test_java_hash_utf8_three_and_four_byte_edges():
    leads = [0xC2, 0xDF, 0xE0, 0xE1, 0xED, 0xEE, 0xEF, 0xF0, 0xF1, 0xF4, 0xF5]
    seconds = [0x00, 0x41, 0x7F, 0x80, 0x8F, 0x90, 0x9F, 0xA0, 0xBF, 0xC0, 0xE0, 0xFF]
    for lead in leads:
        for second in seconds:
            for third in seconds:
                for tail in (b"", b"\x80", b"\xbf", b"A", b"\xc3"):
                    data = bytes((lead, second, third)) + tail
                    expected = reference_java_hash(data.decode("utf-8", "replace"))
                    assert codec.java_hash_utf8(data) == expected, data


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=4096), st.integers(0, 7))
def test_body_crc_matches_zlib(data, skew):
    assert mqstore.body_crc(data) == reference_crc(data)
    # unaligned starts and lengths that are not multiples of 8 (slicing-by-8 tail)
    view = memoryview(data)[skew:]
    assert mqstore.body_crc(view) == reference_crc(bytes(view))
    assert mqstore.body_crc(bytearray(data)) == reference_crc(data)


@pytest.mark.parametrize("length", [*range(0, 34), 255, 256, 257, 4095, 4096, 4097, 65537])
def test_body_crc_lengths(length):
    data = bytes((i * 131 + 7) & 0xFF for i in range(length))
    assert mqstore.body_crc(data) == reference_crc(data)


# ----------------------------------------------------------------------------- properties

prop_text = st.text(
    st.characters(exclude_categories=("Cs",), exclude_characters="\x00\x01\x02"),
    min_size=1,
    max_size=30,
)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(prop_text, prop_text, max_size=30))
def test_properties_round_trip(props):
    encoded = encode_properties(props)
    assert isinstance(encoded, bytes)
    assert not encoded.endswith(b"\x02")  # v4 writer: no trailing separator
    assert decode_properties(encoded) == props
    assert decode_properties(encoded.decode("utf-8")) == props
    # v5's trailing separator is accepted too
    assert decode_properties(encoded + b"\x02") == props
    # entries come out in hashmap_order of the keys
    names = [seg.split(b"\x01", 1)[0].decode() for seg in encoded.split(b"\x02") if seg]
    assert names == hashmap_order(props)
    assert sorted(names) == sorted(props)


def test_encode_properties_skips_none_values():
    assert encode_properties({"a": "1", "b": None}) == b"a\x011"
    assert encode_properties({}) == b""


@pytest.mark.parametrize(
    "text, expected",
    [
        ("k1\x01v1", {"k1": "v1"}),
        ("", {}),
        (" ", {}),
        ("aaa", {}),
        ("k1\x01", {}),
        ("\x01v1", {}),
        ("k1\x01\x02k2\x01v2", {"k2": "v2"}),
        ("k\x01a\x02k\x01b", {"k": "b"}),  # later duplicate wins
        ("k\x01a\x01b", {"k": "a\x01b"}),  # value keeps further \x01
        ("k\x01v\x02", {"k": "v"}),  # v5 trailing separator
        ("\x02\x02k\x01v\x02\x02", {"k": "v"}),
        ("k\x01\x01", {"k": "\x01"}),
        ("a\x01b\x02c\x02d\x01e", {"a": "b", "d": "e"}),
    ],
)
def test_decode_properties_rocketmq_rules(text, expected):
    assert decode_properties(text) == expected
    assert decode_properties(text.encode("utf-8")) == expected


def test_decode_properties_invalid_utf8_is_replaced():
    assert decode_properties(b"k\x01\xff") == {"k": "\ufffd"}


def test_hashmap_order_of_the_doc_example():
    # Bucket indexes (spread hash & 7) of the four keys: KEYS 7, UNIQ_KEY 4, WAIT 5,
    # TAGS 6. The format doc (§4.4) gives KEYS, UNIQ_KEY, WAIT, TAGS for a map of
    # capacity 16; the 4.9.8 golden stores (all 822 records) show the table sized for
    # the entry count (capacity 8 for 4 entries), which is what hashmap_order emulates.
    assert hashmap_order(["TAGS", "KEYS", "WAIT", "UNIQ_KEY"]) == [
        "UNIQ_KEY",
        "WAIT",
        "TAGS",
        "KEYS",
    ]


def test_hashmap_order_capacity_16_example():
    # 7..12 entries use a 16-bucket table under both readings of §4.4; there the doc's
    # four keys keep its order KEYS(7), UNIQ_KEY(12), WAIT(13), TAGS(14).
    keys = ["TAGS", "KEYS", "WAIT", "UNIQ_KEY", "a", "b", "c"]  # a/b/c: buckets 1/2/3
    assert hashmap_order(keys) == ["a", "b", "c", "KEYS", "UNIQ_KEY", "WAIT", "TAGS"]


@settings(max_examples=200, deadline=None)
@given(st.lists(prop_text, unique=True, max_size=60))
def test_hashmap_order_is_bucket_order(keys):
    ordered = hashmap_order(keys)
    assert sorted(ordered) == sorted(keys)
    capacity = 1
    while capacity * 3 < len(keys) * 4:
        capacity *= 2

    def bucket(key):
        h = reference_java_hash(key) & 0xFFFFFFFF
        return (h ^ (h >> 16)) & (capacity - 1)

    buckets = [bucket(k) for k in ordered]
    assert buckets == sorted(buckets)
    # insertion order within a bucket
    for a, b in zip(ordered, ordered[1:]):
        if bucket(a) == bucket(b):
            assert keys.index(a) < keys.index(b)


# ----------------------------------------------------------------------------- Message validation


def test_message_body_must_be_bytes_like():
    with pytest.raises(TypeError):
        Message("T", "str body")
    with pytest.raises(TypeError):
        Message("T", None)
    with pytest.raises(TypeError):
        Message("T", [1, 2])
    with pytest.raises(TypeError):
        Message(b"T", b"body")
    for body in (b"x", bytearray(b"x"), memoryview(b"x")):
        assert Message("T", body).body is body


@pytest.mark.parametrize(
    "properties",
    [{"a\x01": "v"}, {"a": "v\x01"}, {"a\x02": "v"}, {"a": "\x02v"}, {"": "v"}, {"a": ""}],
)
def test_message_rejects_separator_or_empty_properties(properties):
    with pytest.raises(ValueError):
        Message("T", b"", properties=properties)
    msg = Message("T", b"")
    ((name, value),) = properties.items()
    with pytest.raises(ValueError):
        msg.put_property(name, value)
    assert dict(msg.properties) == {}


@pytest.mark.parametrize(
    "kwargs",
    [
        {"tags": "a\x01b"},
        {"tags": "a\x02"},
        {"keys": "k\x02"},
        {"keys": ["ok", "k\x01"]},
        {"tags": ""},
    ],
)
def test_message_rejects_separator_in_tags_and_keys(kwargs):
    with pytest.raises(ValueError):
        Message("T", b"", **kwargs)


@pytest.mark.parametrize("properties", [{"a": 1}, {1: "v"}, {"a": b"v"}, {"a": None}, {None: "v"}])
def test_message_rejects_non_str_properties(properties):
    with pytest.raises(TypeError):
        Message("T", b"", properties=properties)


def test_message_rejects_non_str_tags_and_keys():
    with pytest.raises(TypeError):
        Message("T", b"", tags=1)
    with pytest.raises(TypeError):
        Message("T", b"", keys=[1])
    with pytest.raises(TypeError):
        Message("T", b"").put_property("a", None)


@pytest.mark.parametrize("flag", [I32_MAX + 1, I32_MIN - 1, 2**40, -(2**63)])
def test_message_flag_out_of_int32(flag):
    with pytest.raises(ValueError):
        Message("T", b"", flag=flag)


@pytest.mark.parametrize("flag", [True, 1.0, "1", None])
def test_message_flag_must_be_int(flag):
    with pytest.raises(TypeError):
        Message("T", b"", flag=flag)


def test_message_flag_bounds_accepted():
    assert Message("T", b"", flag=I32_MAX).flag == I32_MAX
    assert Message("T", b"", flag=I32_MIN).flag == I32_MIN


@pytest.mark.parametrize(
    "host",
    [
        "",
        "127.0.0.1",
        "127.0.0.1:",
        ":10911",
        "127.0.0.1:65536",
        "127.0.0.1:-1",
        "127.0.0.1:+1",
        "127.0.0.1: 1",
        "127.0.0.1:1x",
        "256.0.0.1:80",
        "1.2.3:80",
        "localhost:80",
        "example.com:80",
        "[::1]",
        "[::1]80",
        "[::1]:",
        "::1",
        "[zz::1]:80",
        "[::1:80",
        " 127.0.0.1:80",
    ],
)
def test_bad_host_strings_raise_value_error(host):
    with pytest.raises(ValueError):
        encode_host(host)
    with pytest.raises(ValueError):
        Message("T", b"", born_host=host)
    with pytest.raises(ValueError):
        Message("T", b"", store_host=host)
    with pytest.raises(ValueError):
        StoreConfig(store_host=host)


def test_host_port_must_be_ascii_digits():
    # str.isdigit() accepts non-ASCII digits and int() converts them: "١٢" is 12.
    for host in ("127.0.0.1:\u0661\u0662", "127.0.0.1:\uff18\uff10", "[::1]:\u0968"):
        with pytest.raises(ValueError):
            encode_host(host)


def test_host_must_be_str():
    with pytest.raises(TypeError):
        encode_host(b"127.0.0.1:80")
    with pytest.raises(TypeError):
        Message("T", b"", born_host=("127.0.0.1", 80))


@pytest.mark.parametrize(
    "host, raw",
    [
        ("127.0.0.1:10911", "7f00000100002a9f"),
        ("0.0.0.0:0", "0000000000000000"),
        ("255.255.255.255:65535", "ffffffff0000ffff"),
        ("[::1]:1", "0000000000000000000000000000000100000001"),
        ("[2001:db8::ff]:10911", "20010db80000000000000000000000ff00002a9f"),
    ],
)
def test_host_encoding(host, raw):
    assert encode_host(host).hex() == raw
    assert decode_host(bytes.fromhex(raw)) == host


# ----------------------------------------------------------------------------- store round trip

TOPIC_RE = r"[%|a-zA-Z0-9_-]{1,127}"
SYS_FLAG_BASES = [0x0, 0x1, 0x2, 0x3, 0x8, 0x4, 0xC, 0x101, 0x301, 0x80]


# Strategies are built once: hypothesis re-validates strategies created inside a draw.
_topics = st.from_regex(TOPIC_RE, fullmatch=True)
_bodies = st.binary(max_size=2000)
_body_kinds = st.sampled_from([bytes, bytearray, memoryview])
_user_properties = st.dictionaries(
    prop_text.filter(lambda k: k != PROPERTY_DELAY_TIME_LEVEL), prop_text, max_size=6
)
_tags = st.none() | prop_text
_keys = st.none() | prop_text | st.lists(prop_text, min_size=1, max_size=3)
_maybe_host = st.none() | hosts().map(lambda h: host_string(*h))
_born_timestamps = st.none() | st.integers(I64_MIN, I64_MAX) | st.integers(0, 2**42)
# compression/transaction bits plus deliberately wrong IPv6 bits, which the store
# must replace with the real host types
_sys_flags = st.tuples(st.sampled_from(SYS_FLAG_BASES), st.sampled_from([0, 0x10, 0x20, 0x30]))
_int32 = st.integers(I32_MIN, I32_MAX)
_int64 = st.integers(I64_MIN, I64_MAX)
_queue_ids = st.integers(0, 3) | st.integers(0, I32_MAX)


@st.composite
def messages(draw):
    body = draw(_bodies)
    base, v6_bits = draw(_sys_flags)
    msg = Message(
        draw(_topics),
        draw(_body_kinds)(body),
        tags=draw(_tags),
        keys=draw(_keys),
        properties=draw(_user_properties),
        flag=draw(_int32),
        born_timestamp=draw(_born_timestamps),
        born_host=draw(_maybe_host),
        store_host=draw(_maybe_host),
        sys_flag=base | v6_bits,
        reconsume_times=draw(_int32),
        prepared_transaction_offset=draw(_int64),
    )
    return msg, body, draw(_queue_ids)


def _is_v6(host_text):
    return host_text.startswith("[")


@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(st.lists(messages(), min_size=1, max_size=6), st.booleans())
def test_record_round_trip_through_the_store(batch, reuse_topic):
    if reuse_topic:  # exercise queue offset assignment within one (topic, queue)
        first = batch[0][0].topic
        for msg, _, _ in batch:
            msg.topic = first
    config_store_host = "127.0.0.1:10911"
    expected_queue_offsets = {}
    with (
        tempfile.TemporaryDirectory() as tmp,
        small_store(tmp, clock=lambda: FIXED_CLOCK_MS) as store,
    ):
        stored = []
        for msg, body, queue_id in batch:
            expected_props = dict(msg.properties)
            result = store.put(msg, queue_id)
            assert result.status is PutStatus.PUT_OK, result
            stored.append((msg, body, queue_id, expected_props, result))
        for msg, body, queue_id, expected_props, result in stored:
            ext = store.look_by_offset(result.commitlog_offset)
            assert ext is not None
            born_host = msg.born_host or config_store_host
            store_host = msg.store_host or config_store_host
            tx_type = msg.sys_flag & codec.TRANSACTION_TYPE_MASK
            key = (msg.topic, queue_id)
            if tx_type in (codec.TRANSACTION_PREPARED_TYPE, codec.TRANSACTION_ROLLBACK_TYPE):
                expected_queue_offset = 0
            else:
                expected_queue_offset = expected_queue_offsets.get(key, 0)
                expected_queue_offsets[key] = expected_queue_offset + 1
            expected_sys_flag = msg.sys_flag & ~(codec.BORNHOST_V6_FLAG | codec.STOREHOST_V6_FLAG)
            if _is_v6(born_host):
                expected_sys_flag |= codec.BORNHOST_V6_FLAG
            if _is_v6(store_host):
                expected_sys_flag |= codec.STOREHOST_V6_FLAG
            props_raw = encode_properties(expected_props)
            topic_raw = msg.topic.encode("ascii")

            assert ext.topic == msg.topic
            assert ext.body == body
            assert type(ext.body) is bytes
            assert dict(ext.properties) == expected_props
            assert ext.encoded_properties() == props_raw
            assert ext.tags == msg.tags
            assert ext.keys == msg.keys
            assert ext.flag == msg.flag
            assert ext.queue_id == queue_id == result.queue_id
            assert ext.queue_offset == expected_queue_offset == result.queue_offset
            assert ext.commitlog_offset == result.commitlog_offset
            expected_born_ts = FIXED_CLOCK_MS if msg.born_timestamp is None else msg.born_timestamp
            assert ext.born_timestamp == expected_born_ts
            assert ext.store_timestamp == FIXED_CLOCK_MS == result.store_timestamp
            assert ext.born_host == decode_host(encode_host(born_host))
            assert ext.store_host == decode_host(encode_host(store_host))
            assert ext.sys_flag == expected_sys_flag
            assert ext.reconsume_times == msg.reconsume_times
            assert ext.prepared_transaction_offset == msg.prepared_transaction_offset
            assert ext.magic_code == codec.MESSAGE_MAGIC_CODE
            assert ext.body_crc == reference_crc(body)
            size = codec.record_size(
                len(body),
                len(topic_raw),
                len(props_raw),
                v6_born=_is_v6(born_host),
                v6_store=_is_v6(store_host),
            )
            assert ext.store_size == size == result.store_size
            msg_id = offset_msg_id(encode_host(store_host), result.commitlog_offset)
            assert ext.msg_id == msg_id == result.msg_id
            assert decode_msg_id(msg_id) == (ext.store_host, result.commitlog_offset)
        # records are laid end to end from offset 0
        offsets = [r.commitlog_offset for *_, r in stored]
        assert offsets[0] == 0
        for (*_, a), (*_, b) in zip(stored, stored[1:]):
            assert b.commitlog_offset == a.commitlog_offset + a.store_size
        walked = list(store.iter_commitlog())
        assert [m.commitlog_offset for m in walked] == offsets
        assert [m.body for m in walked] == [body for _, body, *_ in stored]


def test_round_trip_survives_reopen(tmp_path):
    msgs = [
        Message("TopicA", b"", tags="TagA"),
        Message("TopicA", b"\x00" * 1999, keys=["k1", "k2"], born_host="[::1]:9"),
        Message(
            "TopicB",
            "é😀".encode(),
            properties={"地区": "华东 ☃"},
            store_host="[2001:db8::2]:10911",
            flag=-1,
        ),
    ]
    with small_store(tmp_path, clock=lambda: FIXED_CLOCK_MS) as store:
        results = [store.put(m, 1) for m in msgs]
        before = [store.look_by_offset(r.commitlog_offset) for r in results]
    with small_store(tmp_path, clock=lambda: FIXED_CLOCK_MS) as store:
        # After a clean shutdown the walk starts where the last dispatched record ends
        # (that record is CRC-checked first), so it checks nothing more here.
        assert not store.recovery.abnormal
        assert (
            store.recovery.start_offset
            == store.recovery.end_offset
            == results[-1].commitlog_offset + results[-1].store_size
        )
        assert store.recovery.bytes_truncated == 0
        after = [store.look_by_offset(r.commitlog_offset) for r in results]
        for a, b, m in zip(before, after, msgs):
            assert (a.topic, a.body, dict(a.properties), a.sys_flag, a.msg_id, a.flag) == (
                b.topic,
                b.body,
                dict(b.properties),
                b.sys_flag,
                b.msg_id,
                b.flag,
            )
            assert b.body == bytes(m.body)
        assert [a.queue_offset for a in after] == [0, 1, 0]
        assert after[1].sys_flag == codec.BORNHOST_V6_FLAG
        assert after[2].sys_flag == codec.STOREHOST_V6_FLAG
        assert len(after[2].msg_id) == 56
        # queue offsets continue after recovery
        assert store.put(Message("TopicA", b"x"), 1).queue_offset == 2


def test_store_rejects_illegal_topics(tmp_path):
    with small_store(tmp_path) as store:
        for topic in ("", "a" * 128, "topic with space", "主题", "a/b"):
            result = store.put(Message(topic, b"x"))
            assert result.status is PutStatus.MESSAGE_ILLEGAL, topic
            assert result.commitlog_offset == -1
        assert store.put(Message("a" * 127, b"x")).status is PutStatus.PUT_OK
        assert store.max_commitlog_offset() == codec.record_size(1, 127, 0)


def test_properties_size_limit(tmp_path):
    with small_store(tmp_path) as store:
        # "k\x01" + value: 32767 bytes fits, 32768 does not
        ok = store.put(Message("T", b"", properties={"k": "v" * (32767 - 2)}))
        assert ok.status is PutStatus.PUT_OK
        assert len(store.look_by_offset(ok.commitlog_offset).encoded_properties()) == 32767
        too_big = store.put(Message("T", b"", properties={"k": "v" * (32767 - 1)}))
        assert too_big.status is PutStatus.PROPERTIES_SIZE_EXCEEDED
        # multi-byte characters count in UTF-8 bytes
        wide = store.put(Message("T", b"", properties={"k": "é" * 16383}))
        assert wide.status is PutStatus.PROPERTIES_SIZE_EXCEEDED


def test_scan_reports_tag_code_keys_and_uniq_key(tmp_path):
    with small_store(tmp_path) as store:
        msg = Message(
            "T",
            b"body",
            tags="tag😀",
            keys=["k1", "订单-1"],
            properties={"UNIQ_KEY": "0A0B0C0D" * 4},
        )
        result = store.put(msg)
        assert result.ok
    with open(tmp_path / "commitlog" / "00000000000000000000", "rb") as fh:
        data = fh.read()
    flags = codec.SCAN_CHECK_CRC | codec.SCAN_PROPERTIES
    fields, reason = codec.scan_one(data, len(data), 0, flags)
    assert reason == 0
    assert fields[codec.F_TAGS_CODE] == reference_java_hash("tag😀")
    keys = data[fields[codec.F_KEYS_OFF] : fields[codec.F_KEYS_OFF] + fields[codec.F_KEYS_LEN]]
    assert keys.decode() == "k1 订单-1"
    uniq = data[fields[codec.F_UNIQ_OFF] : fields[codec.F_UNIQ_OFF] + fields[codec.F_UNIQ_LEN]]
    assert uniq == b"0A0B0C0D" * 4
    # without SCAN_PROPERTIES the property slots stay empty
    fields, _ = codec.scan_one(data, len(data), 0)
    assert (fields[codec.F_TAGS_CODE], fields[codec.F_KEYS_OFF], fields[codec.F_UNIQ_OFF]) == (
        0,
        -1,
        -1,
    )


def test_scan_of_a_store_file_ends_at_zeros(tmp_path):
    with small_store(tmp_path) as store:
        sizes = [store.put(Message("T", b"x" * n)).store_size for n in (0, 1, 100)]
    with open(tmp_path / "commitlog" / "00000000000000000000", "rb") as fh:
        data = fh.read()
    assert len(data) == SMALL_FILE
    result = codec.scan(data, len(data), 0, 100, codec.SCAN_CHECK_CRC)
    assert result.count == 3
    assert result.stop_pos == sum(sizes)
    assert result.stop_reason == codec.STOP_ZERO
    assert not codec.is_error(result.stop_reason)
    limited = codec.scan(data, len(data), 0, 2)
    assert (limited.count, limited.stop_pos, limited.stop_reason) == (
        2,
        sizes[0] + sizes[1],
        codec.STOP_LIMIT,
    )


def test_scan_stops_at_blank_record(tmp_path):
    # fill the first file until the store rolls; the first file then ends with a blank
    with small_store(tmp_path) as store:
        offsets = []
        while True:
            result = store.put(Message("T", b"y" * 1000))
            offsets.append(result.commitlog_offset)
            if result.commitlog_offset >= SMALL_FILE:
                break
    with open(tmp_path / "commitlog" / "00000000000000000000", "rb") as fh:
        data = fh.read()
    result = codec.scan(data, len(data), 0, 1000, codec.SCAN_CHECK_CRC)
    assert result.count == len(offsets) - 1
    assert result.stop_reason == codec.STOP_BLANK
    blank_total, blank_magic = struct.unpack_from(">ii", data, result.stop_pos)
    assert blank_magic == codec.BLANK_MAGIC_CODE
    assert blank_total == SMALL_FILE - result.stop_pos
    assert blank_total >= codec.BLANK_RECORD_SIZE


def test_message_with_lone_surrogate_property_is_rejected(tmp_path):
    """A property that cannot be UTF-8 encoded must fail with ValueError (at the latest
    at put time) and write nothing."""
    with small_store(tmp_path) as store:
        with pytest.raises(ValueError):
            msg = Message("T", b"x", properties={"k": "\ud800"})
            store.put(msg)
        assert store.max_commitlog_offset() == 0


def test_look_by_offset_flags_ipv6_exactly():
    with (
        tempfile.TemporaryDirectory() as tmp,
        small_store(
            tmp,
            clock=lambda: FIXED_CLOCK_MS,
            store_host="[fe80::1]:10911",
            born_host="10.0.0.1:1",
        ) as store,
    ):
        result = store.put(Message("T", b"v6"))
        ext = store.look_by_offset(result.commitlog_offset)
        assert ext.sys_flag == codec.STOREHOST_V6_FLAG
        assert ext.store_host == "[fe80::1]:10911"
        assert ext.born_host == "10.0.0.1:1"
        assert ext.msg_id == "FE80000000000000000000000000000100002A9F0000000000000000"
        assert ext.store_size == codec.record_size(2, 1, 0, v6_store=True)
