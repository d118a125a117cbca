"""`mqstore cat --format json` formats most records in C (mq_json_lines) and leaves the
rest to the Python formatter. The two must write the same bytes for every record,
with every filter the C path takes (topic, queue, since, limit)."""

from __future__ import annotations

import itertools

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from golden import CASES, case_dir
from mqstore import Message, MessageStore
from mqstore.jsonl import JsonLines, iter_chunks
from mqstore.replay import open_readonly

SMALL = dict(mapped_file_size_commitlog=32 * 1024, mapped_file_size_consume_queue=2000,
             max_hash_slot_num=64, max_index_num=256)
FAR = 2**62


def both_ways(path, **filters):
    """(C path bytes, Python path bytes, lines) for the whole log of `path`."""
    limit = filters.pop("limit", None)
    fast, slow = [], []
    with open_readonly(path) as store:
        fast_lines, slow_lines = JsonLines(**filters), JsonLines(**filters)
        remaining = limit
        for chunk in iter_chunks(store, store.min_commitlog_offset()):
            data, f, count, base, file_from, _ = chunk
            emitted = fast_lines.lines(*chunk, fast.append, remaining)
            slow_lines._lines(data, f, count, base, file_from, slow.append, remaining, 0, count)
            if remaining is not None:
                remaining -= emitted
                if remaining <= 0:
                    break
    return b"".join(fast), b"".join(slow)


texts = st.text(st.characters(blacklist_characters="\x00\x01\x02",
                              blacklist_categories=("Cs",)), min_size=1, max_size=8)
plain = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E,
                              blacklist_characters='"\\ '), min_size=1, max_size=8)
bodies = st.one_of(
    st.binary(max_size=120),
    st.text(max_size=40).map(lambda t: t.encode("utf-8", "surrogatepass")),
    st.sampled_from([b"", b'q"uote\\back\nnl\r\t\b\f\x00\x1f\x7f', "é😀".encode(),
                     b"\xed\xa0\x80", b"\xc0\x80", b"\xf4\x90\x80\x80", b"\xe0\x80\x80",
                     b"\xf0\x8f\xbf\xbf", b"\xc3", b"ab\xff"]),
)
records = st.fixed_dictionaries(
    {
        "topic": st.sampled_from(["T", "Orders", "A-b_c%1|x"]),
        "body": bodies,
        "tags": st.none() | plain | texts,
        "keys": st.none() | st.lists(plain, min_size=1, max_size=3),
        "properties": st.dictionaries(plain | texts, plain | texts, max_size=3),
        "flag": st.integers(-(2**31), 2**31 - 1),
        "born_host": st.sampled_from(["127.0.0.1:10911", "10.0.0.255:65535", "[::1]:1"]),
        "store_host": st.sampled_from(["192.168.1.2:10911", "[2001:db8::1]:9"]),
        "born_timestamp": st.integers(0, 2**62),
        "reconsume_times": st.integers(0, 2**31 - 1),
    }
)


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(st.lists(st.tuples(records, st.integers(0, 2)), min_size=1, max_size=30),
       st.sampled_from([None, "T", "Orders"]), st.sampled_from([None, 0, 2]),
       st.sampled_from([None, 1, 7]), st.booleans())
def test_c_and_python_formatters_write_the_same_bytes(tmp_path_factory, specs, topic, queue,
                                                      limit, since_mid):
    path = tmp_path_factory.mktemp("store")
    clock = itertools.count(1_700_000_000_000, 10)
    with MessageStore(path, clock=lambda: next(clock), **SMALL) as store:
        for spec, queue_id in specs:
            properties = {k: v for k, v in spec["properties"].items()
                          if k not in ("TAGS", "KEYS")}
            message = Message(**{**spec, "properties": properties})
            assert store.put(message, queue_id).ok
    since = 1_700_000_000_000 + 10 * (len(specs) // 2) if since_mid else None
    fast, slow = both_ways(path, topics=None if topic is None else frozenset([topic]),
                           queue_id=queue, since=since, limit=limit)
    assert fast == slow
    if topic is None and queue is None and not since_mid and limit is None:
        assert fast.count(b"\n") == len(specs)


def test_filters_the_c_path_cannot_take_go_to_python(tmp_path):
    with MessageStore(tmp_path, **SMALL) as store:
        for i in range(5):
            store.put(Message("T", b"%d" % i), i % 2)
    for filters in (dict(queue_id=-1), dict(queue_id=2**31), dict(since=2**63),
                    dict(since=-(2**64)), dict(limit=2**32)):
        fast, slow = both_ways(tmp_path, **filters)
        assert fast == slow, filters
    assert both_ways(tmp_path, limit=2**32)[0].count(b"\n") == 5
    assert both_ways(tmp_path, since=2**63)[0] == b""


def test_golden_stores_format_the_same_both_ways():
    for case in CASES:
        fast, slow = both_ways(case_dir(case) / "store")
        assert fast == slow and fast.count(b"\n") > 3, case


def test_records_left_to_python_keep_their_place(tmp_path):
    """Records the C formatter leaves (IPv6 host, non-plain properties) are formatted
    in Python between the others, in CommitLog order."""
    with MessageStore(tmp_path, **SMALL) as store:
        store.put(Message("T", b"1", tags="plain"))
        store.put(Message("T", b"2", born_host="[::1]:5"))
        store.put(Message("T", b"3", properties={"q": 'quo"te'}))
        store.put(Message("T", b"4"))
    fast, slow = both_ways(tmp_path)
    assert fast == slow
    assert [line.split(b'"body":')[1] for line in fast.splitlines()] == [
        b'"1"}', b'"2"}', b'"3"}', b'"4"}']


def test_c_formatter_refuses_fields_that_point_outside_the_buffer(tmp_path):
    """mq_json_lines checks every range it reads against the buffer, whatever the
    fields say: a record whose fields point outside is left to Python, unread."""
    from mqstore import codec
    from mqstore._native import ffi, lib

    with MessageStore(tmp_path, **SMALL) as store:
        store.put(Message("T", b"hello", tags="t"))
    with open_readonly(tmp_path) as store:
        data, f, count, base, _, _ = next(iter_chunks(store, 0))
    out = ffi.new("char[]", 1 << 16)
    io = ffi.new("int64_t[]", lib.MQ_JSON_IO)
    for slot, value in ((codec.F_BODY_OFF, base + len(data) - 2), (codec.F_BODY_LEN, -1),
                        (codec.F_TOPIC_OFF, base - 1), (codec.F_PROPS_LEN, len(data) + 1),
                        (codec.F_STORE_HOST_OFF, base + len(data) - 4),
                        (codec.F_KEYS_OFF, base + len(data)),
                        (codec.F_KEYS_OFF, base),  # in the buffer, outside the properties
                        (codec.F_UNIQ_OFF, base)):
        bad = list(f[:codec.FIELDS])
        bad[slot] = value
        if slot in (codec.F_KEYS_OFF, codec.F_UNIQ_OFF):
            bad[slot + 1] = 1 if value == base + len(data) else len(data)
        n = lib.mq_json_lines(ffi.from_buffer(data), len(data), ffi.new("int64_t[]", bad), 0,
                              1, base, -1, -(2**63), ffi.NULL, -1, -1, out, len(out), io)
        assert (n, io[lib.MQ_JSON_NEXT], io[lib.MQ_JSON_BYTES]) == (0, 0, 0), slot
    good = lib.mq_json_lines(ffi.from_buffer(data), len(data), ffi.new("int64_t[]", f), 0, 1,
                             base, -1, -(2**63), ffi.NULL, -1, -1, out, len(out), io)
    assert good == 1 and b'"body":"hello"' in ffi.unpack(out, io[lib.MQ_JSON_BYTES])
