"""JSON lines straight from CommitLog records, for `mqstore cat --format json`.

Builds each line from the native scanner's fields and one bytes copy per chunk of
records, without making MessageExt objects: the output is the same as
`cli.message_record` gives (tests compare the two), several times faster.
"""

from __future__ import annotations

import base64
import json
import re
from json.encoder import encode_basestring
from typing import Callable, Dict, FrozenSet, Iterator, List, Optional

from . import codec
from ._native import ffi, lib
from .message import decode_host, decode_properties

_CHUNK = 1024
F = codec.FIELDS
_JSON_NEXT, _JSON_BYTES, _JSON_FULL = lib.MQ_JSON_NEXT, lib.MQ_JSON_BYTES, lib.MQ_JSON_FULL
_OUT_CAP = 8 << 20  # the C formatter's output buffer, unless one record needs more
_I32_MAX, _I64_MIN, _I64_MAX = 2**31 - 1, -(2**63), 2**63 - 1

# Bytes that JSON text can carry between quotes as they are: printable ASCII but " and \.
_NEEDS_CARE = re.compile(rb"[^\x20\x21\x23-\x5b\x5d-\x7e]")
# A properties string RocketMQ's decoder reads as written: name\x01value segments
# joined by \x02, names and values non-empty, plain printable ASCII without " or \.
_PLAIN = rb"[\x20\x21\x23-\x5b\x5d-\x7e]+"
_PLAIN_PROPS = re.compile(
    _PLAIN + rb"\x01" + _PLAIN + rb"(?:\x02" + _PLAIN + rb"\x01" + _PLAIN + rb")*"
)

_json_str = json.JSONEncoder(ensure_ascii=False).encode
_encode_str = encode_basestring  # the C quoting json uses (ensure_ascii=False)


def _quoted(text: Optional[str]) -> bytes:
    return b"null" if text is None else _json_str(text).encode("utf-8", "surrogatepass")


def iter_chunks(store, from_offset: int) -> Iterator[tuple]:
    """(data, fields, count, data_position, file_from_offset, fields_c) per chunk of
    records from `from_offset` to the end of the log: `data` is a copy of the chunk's
    bytes, which start at `data_position` in the file; `fields` the scanner's output as
    a list, and `fields_c` the same in C memory, valid until the next chunk is asked
    for. Raises RecordError at a damaged record."""
    out = ffi.new("int64_t[]", _CHUNK * F + 2)
    stop = out + _CHUNK * F
    view = memoryview(ffi.buffer(out)).cast("q")

    def read(mapped, position, readable):
        count = lib.mq_scan(
            mapped.ptr, readable, position, _CHUNK, codec.SCAN_PROPERTIES, out, stop
        )
        stop_pos, reason = stop[0], stop[1]
        if not count:
            return None, stop_pos, reason
        data = ffi.unpack(mapped.ptr + position, stop_pos - position)
        chunk = (data, view[: count * F].tolist(), count, position, mapped.file_from_offset,
                 out)
        return chunk, stop_pos, reason

    return store.commitlog.walk(from_offset, read)


class JsonLines:
    """Turns scanned records into JSON lines, with cat's filters applied on the raw
    fields: topics, queue id, store time range, tags, key."""

    def __init__(
        self,
        topics: Optional[FrozenSet[str]] = None,
        queue_id: Optional[int] = None,
        since: Optional[int] = None,
        until: Optional[int] = None,
        tags: Optional[FrozenSet[str]] = None,
        key: Optional[str] = None,
    ) -> None:
        self.topics = None if topics is None else {t.encode("utf-8") for t in topics}
        self.queue_id = queue_id
        self.since = since
        self.until = until
        self.tags = tags
        self.key = key
        self.past_until = False  # a record later than `until` was seen in an earlier file
        self._until_file: Optional[int] = None
        self._topic_json: Dict[bytes, bytes] = {}
        self._hosts: Dict[bytes, bytes] = {}
        self._msg_id_prefix: Dict[bytes, str] = {}
        self._out = None  # the C formatter's output buffer, grown as needed
        self._io = ffi.new("int64_t[]", lib.MQ_JSON_IO)

    def _host(self, raw: bytes) -> bytes:
        text = self._hosts.get(raw)
        if text is None:
            text = self._hosts[raw] = b'"' + decode_host(raw).encode("ascii") + b'"'
        return text

    @staticmethod
    def _slow_props(raw: bytes):
        """(properties JSON, tags, keys, uniq key JSON) of any properties string."""
        props = decode_properties(raw)
        return (
            json.dumps(props, ensure_ascii=False).encode("utf-8", "surrogatepass"),
            _quoted(props.get("TAGS")),
            _quoted(props.get("KEYS")),
            _quoted(props.get("UNIQ_KEY")),
        )

    def lines(
        self,
        data: bytes,
        f: List[int],
        count: int,
        base: int,
        file_from: int,
        fields_c,
        emit: Callable[[bytes], None],
        limit: Optional[int],
    ) -> int:
        """Emit the JSON line of each matching record of a chunk; returns how many,
        at most `limit`. Records go through the C formatter (`mq_json_lines`) when the
        filters allow (no tags, key or until filter, at most one topic); a record it
        leaves (non-plain topic or properties, IPv6 host) is formatted here."""
        topics, queue_id, since = self.topics, self.queue_id, self.since
        if (self.tags is not None or self.key is not None or self.until is not None
                or (topics is not None and len(topics) != 1)
                or (queue_id is not None and not 0 <= queue_id <= _I32_MAX)
                or (since is not None and since > _I64_MAX)):
            return self._lines(data, f, count, base, file_from, emit, limit, 0, count)
        topic = next(iter(topics)) if topics is not None else ffi.NULL
        topic_len = len(topic) if topics is not None else -1
        queue_id = -1 if queue_id is None else queue_id
        since = _I64_MIN if since is None else max(since, _I64_MIN)
        # Room for the whole chunk's lines, within reason: a full buffer is emitted and
        # the formatter goes on (it stops before a line that would not fit).
        need = min(1024 * count + 12 * len(data),
                   max(_OUT_CAP, 1024 + 12 * max(f[1:count * F:F])))
        if self._out is None or len(self._out) < need:
            self._out = ffi.new("char[]", need)
        out, io = self._out, self._io
        data_c = ffi.from_buffer(data)
        emitted, i = 0, 0
        while i < count:
            left = -1 if limit is None else min(limit - emitted, _I32_MAX)
            if left == 0:
                break
            emitted += lib.mq_json_lines(data_c, len(data), fields_c, i, count, base, queue_id,
                                         since, topic, topic_len, left, out, len(out), io)
            if io[_JSON_BYTES]:
                emit(ffi.unpack(out, io[_JSON_BYTES]))
            i = io[_JSON_NEXT]
            if io[_JSON_FULL]:
                if not io[_JSON_BYTES]:  # (the buffer is sized so that this cannot happen)
                    out = self._out = ffi.new("char[]", 2 * len(out))
                continue
            if i < count and (limit is None or emitted < limit):
                emitted += self._lines(data, f, count, base, file_from, emit,
                                       None if limit is None else limit - emitted, i, i + 1)
                i += 1
        return emitted

    def _lines(
        self,
        data: bytes,
        f: List[int],
        count: int,
        base: int,
        file_from: int,
        emit: Callable[[bytes], None],
        limit: Optional[int],
        first: int,
        end: int,
    ) -> int:
        """The Python formatter, for records [first, end) of a chunk."""
        topics, queue_id, since, until = self.topics, self.queue_id, self.since, self.until
        want_tags, key = self.tags, self.key
        topic_json, host, msg_id_prefix = self._topic_json, self._host, self._msg_id_prefix
        hosts = self._hosts
        slow_props = self._slow_props
        plain = _PLAIN_PROPS.fullmatch
        filtering = want_tags is not None or key is not None
        emitted = 0
        lo, hi = first * F, end * F
        columns = zip(*(f[lo + k:hi:F] for k in range(1, 23)),
                      *(f[lo + k:hi:F] for k in range(24, 28)))
        # fmt: off
        for (size, magic, crc, queue, flag, queue_offset, physical, sys_flag, born,
             born_at, born_len, stamp, store_at, store_len, reconsume, prepared, body_at,
             body_len, topic_at, topic_len, props_at, props_len, keys_at, keys_len, uniq_at,
             uniq_len) in columns:
            # fmt: on
            topic_at -= base
            topic_raw = data[topic_at : topic_at + topic_len]
            if topics is not None and topic_raw not in topics:
                continue
            if queue_id is not None and queue != queue_id:
                continue
            if since is not None and stamp < since:
                continue
            if until is not None and stamp > until:
                if self._until_file is not None and file_from > self._until_file:
                    self.past_until = True
                    return emitted
                self._until_file = file_from
                continue
            props_at -= base
            props = data[props_at : props_at + props_len]
            if not props_len:
                props_json = b"{}"
                tags = keys = uniq = b"null"
            elif plain(props):
                # plain ASCII, well formed: the JSON object is the string with its
                # separators replaced (a repeated name appears twice: JSON readers keep
                # the last, as RocketMQ's decoder and the scanner's lookups do)
                props_json = b'{"' + props.replace(b"\x01", b'":"').replace(b"\x02", b'","')
                props_json += b'"}'
                keys = (
                    b"null"
                    if keys_at < 0
                    else b'"%s"' % data[keys_at - base : keys_at - base + keys_len]
                )
                uniq = (
                    b"null"
                    if uniq_at < 0
                    else b'"%s"' % data[uniq_at - base : uniq_at - base + uniq_len]
                )
                at = props.rfind(b"\x02TAGS\x01")
                if at < 0 and props.startswith(b"TAGS\x01"):
                    at = -1
                    end = props.find(b"\x02")
                    tags = b'"%s"' % (props[5:] if end < 0 else props[5:end])
                elif at < 0:
                    tags = b"null"
                else:
                    end = props.find(b"\x02", at + 6)
                    tags = b'"%s"' % (props[at + 6 :] if end < 0 else props[at + 6 : end])
            else:
                props_json, tags, keys, uniq = slow_props(props)
            if filtering:
                if want_tags is not None and _loads(tags) not in want_tags:
                    continue
                if (
                    key is not None
                    and key != _loads(uniq)
                    and key not in (_loads(keys) or "").split(" ")
                ):
                    continue
            body_at -= base
            body = data[body_at : body_at + body_len]
            if body.isascii():
                body_json, encoding = _encode_str(body.decode("ascii")).encode(), b'"utf-8"'
            else:
                try:
                    body_json = _encode_str(body.decode("utf-8")).encode("utf-8", "surrogatepass")
                    encoding = b'"utf-8"'
                except UnicodeDecodeError:
                    body_json = b'"' + base64.b64encode(body) + b'"'
                    encoding = b'"base64"'
            topic = topic_json.get(topic_raw)
            if topic is None:
                topic = topic_json[topic_raw] = _quoted(topic_raw.decode("utf-8", "replace"))
            born_at -= base
            store_at -= base
            store_raw = data[store_at : store_at + store_len]
            born_raw = data[born_at : born_at + born_len]
            born_host = hosts.get(born_raw) or host(born_raw)
            store_host = hosts.get(store_raw) or host(store_raw)
            prefix = msg_id_prefix.get(store_raw)
            if prefix is None:
                prefix = msg_id_prefix[store_raw] = store_raw.hex().upper().encode()
            emit(
                b'{"topic":%s,"queueId":%d,"queueOffset":%d,"commitLogOffset":%d,'
                b'"storeSize":%d,"msgId":"%s%016X","uniqKey":%s,"tags":%s,"keys":%s,'
                b'"properties":%s,"bornTimestamp":%d,"storeTimestamp":%d,"bornHost":%s,'
                b'"storeHost":%s,"sysFlag":%d,"reconsumeTimes":%d,"flag":%d,"bodyCRC":%d,'
                b'"preparedTransactionOffset":%d,"magicCode":%d,"bodyLength":%d,'
                b'"bodyEncoding":%s,"body":%s}\n'
                % (
                    topic,
                    queue,
                    queue_offset,
                    physical,
                    size,
                    prefix,
                    physical & 0xFFFFFFFFFFFFFFFF,
                    uniq,
                    tags,
                    keys,
                    props_json,
                    born,
                    stamp,
                    born_host,
                    store_host,
                    sys_flag,
                    reconsume,
                    flag,
                    crc,
                    prepared,
                    magic,
                    body_len,
                    encoding,
                    body_json,
                )
            )
            emitted += 1
            if limit is not None and emitted >= limit:
                return emitted
        return emitted


def _loads(value: bytes) -> Optional[str]:
    return json.loads(value)
