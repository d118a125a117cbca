"""Messages: what a producer hands the store (Message) and what a reader gets back
(MessageExt), with RocketMQ's property encoding, host encoding and message ids."""

from __future__ import annotations

import ipaddress
import itertools
import operator
import os
import random
import struct
import threading
import time
from functools import lru_cache
from types import MappingProxyType
from typing import Iterable, List, Mapping, Optional, Union

from . import codec
from ._native import ffi, lib

NAME_VALUE_SEPARATOR = "\x01"
PROPERTY_SEPARATOR = "\x02"
KEY_SEPARATOR = " "

PROPERTY_KEYS = "KEYS"
PROPERTY_TAGS = "TAGS"
PROPERTY_WAIT_STORE_MSG_OK = "WAIT"
PROPERTY_DELAY_TIME_LEVEL = "DELAY"
PROPERTY_RETRY_TOPIC = "RETRY_TOPIC"
PROPERTY_REAL_TOPIC = "REAL_TOPIC"
PROPERTY_REAL_QUEUE_ID = "REAL_QID"
PROPERTY_TRANSACTION_PREPARED = "TRAN_MSG"
PROPERTY_PRODUCER_GROUP = "PGROUP"
PROPERTY_ORIGIN_MESSAGE_ID = "ORIGIN_MESSAGE_ID"
PROPERTY_UNIQ_CLIENT_MESSAGE_ID_KEYIDX = "UNIQ_KEY"
PROPERTY_CLUSTER = "CLUSTER"

SCHEDULE_TOPIC = "SCHEDULE_TOPIC_XXXX"

_I32_MIN, _I32_MAX = -(2**31), 2**31 - 1
_I64_MIN, _I64_MAX = -(2**63), 2**63 - 1

BodyLike = Union[bytes, bytearray, memoryview]


# ----------------------------------------------------------------------------- hosts


@lru_cache(maxsize=1024)
def encode_host(host: str) -> bytes:
    """``"1.2.3.4:10911"`` or ``"[2001:db8::1]:10911"`` -> IP bytes + big-endian i32 port
    (8 or 20 bytes), RocketMQ's host encoding. Raises ValueError when malformed."""
    if not isinstance(host, str):
        raise TypeError(f"host must be a str like '127.0.0.1:10911', got {type(host).__name__}")
    if host.startswith("["):
        addr, sep, port = host[1:].partition("]:")
    else:
        addr, sep, port = host.rpartition(":")
    if not sep or not (port.isascii() and port.isdigit()):
        raise ValueError(f"host {host!r} is not 'ip:port' or '[ipv6]:port'")
    try:
        ip = ipaddress.ip_address(addr)
    except ValueError:
        raise ValueError(f"host {host!r} does not hold an IP address") from None
    if int(port) > 65535:
        raise ValueError(f"host {host!r}: port out of range")
    return ip.packed + struct.pack(">i", int(port))


@lru_cache(maxsize=1024)
def decode_host(data: bytes) -> str:
    """Inverse of `encode_host` (IPv6 rendered as RFC 5952, in brackets)."""
    port = struct.unpack(">i", data[-4:])[0]
    ip = ipaddress.ip_address(data[:-4])
    return f"[{ip}]:{port}" if ip.version == 6 else f"{ip}:{port}"


def offset_msg_id(store_host: bytes, commitlog_offset: int) -> str:
    """RocketMQ's offset message id: uppercase hex of store IP, port and CL offset."""
    return (store_host + struct.pack(">q", commitlog_offset)).hex().upper()


def decode_msg_id(msg_id: str) -> tuple:
    """(store host as 'ip:port', commitlog offset) of an offset message id."""
    if not isinstance(msg_id, str):
        raise TypeError("msg_id must be a str")
    if len(msg_id) not in (32, 56):
        raise ValueError(f"msg id {msg_id!r} is not 32 or 56 hex digits")
    try:
        raw = bytes.fromhex(msg_id)
    except ValueError:
        raise ValueError(f"msg id {msg_id!r} is not hex") from None
    return decode_host(raw[:-8]), struct.unpack(">q", raw[-8:])[0]


def _month_start_ms(now_ms: int) -> int:
    """Start of the local calendar month containing `now_ms` (RocketMQ's time base)."""
    local = time.localtime(now_ms / 1000)
    return int(time.mktime((local.tm_year, local.tm_mon, 1, 0, 0, 0, 0, 0, -1)) * 1000)


class UniqIdGenerator:
    """Client message ids (UNIQ_KEY) in RocketMQ's MessageClientIDSetter layout: host
    IP, pid (16 bits), a per-generator random int, milliseconds since the start of the
    current local month (i32, wrapping as Java's int cast does after 24.8 days), and a
    counter (16 bits); uppercase hex (32 digits for IPv4). Thread-safe."""

    __slots__ = ("_prefix", "_counter", "_month_start", "_next_month")

    def __init__(self, host_ip: str = "127.0.0.1") -> None:
        packed = ipaddress.ip_address(host_ip).packed
        pid = struct.pack(">H", os.getpid() & 0xFFFF)
        self._prefix = (packed + pid + random.getrandbits(32).to_bytes(4, "big")).hex().upper()
        self._counter = itertools.count()
        self._month_start = self._next_month = 0

    def next_id(self, now_ms: Optional[int] = None) -> str:
        if now_ms is None:
            now_ms = time.time_ns() // 1_000_000
        if not self._month_start <= now_ms < self._next_month:
            start = _month_start_ms(now_ms)
            self._next_month = _month_start_ms(start + 32 * 86_400_000)
            self._month_start = start
        elapsed = max(0, now_ms - self._month_start) & 0xFFFFFFFF
        return f"{self._prefix}{elapsed:08X}{next(self._counter) & 0xFFFF:04X}"


_generators: dict = {}


def create_uniq_id(host_ip: str = "127.0.0.1", now_ms: Optional[int] = None) -> str:
    """A client message id (UNIQ_KEY): see UniqIdGenerator. Thread-safe."""
    generator = _generators.get(host_ip)
    if generator is None:
        generator = _generators.setdefault(host_ip, UniqIdGenerator(host_ip))
    return generator.next_id(now_ms)


def uniq_id_time_hint(uniq_id: str, now_ms: Optional[int] = None) -> int:
    """Approximate creation time (ms) encoded in a UNIQ_KEY: its month offset applied to
    the current month, or the previous one when that would lie in the future."""
    raw = bytes.fromhex(uniq_id)
    elapsed = struct.unpack(">I", raw[-6:-2])[0]
    now_ms = time.time_ns() // 1_000_000 if now_ms is None else now_ms
    start = _month_start_ms(now_ms)
    if start + elapsed > now_ms:
        start = _month_start_ms(start - 1)
    return start + elapsed


# ----------------------------------------------------------------------------- properties


@lru_cache(maxsize=4096)
def _hashmap_spread(key: str) -> int:
    h = codec.java_hash(key) & 0xFFFFFFFF
    return h ^ (h >> 16)


def hashmap_order(keys: Iterable[str]) -> List[str]:
    """The iteration order of the ``java.util.HashMap`` RocketMQ 4.9.8 serialises a
    message's properties from, given the keys in insertion order.

    Iteration goes bucket by bucket (bucket = spread Java hash & (capacity - 1)),
    insertion order within a bucket. The table is the smallest power of two that holds
    the entries under the 0.75 load factor: that is what the golden 4.9.8 stores show
    (all 822 records), not the default capacity of 16.
    """
    keys = list(keys)
    capacity = 1
    while len(keys) * 4 > capacity * 3:
        capacity *= 2
    mask = capacity - 1
    return sorted(keys, key=lambda k: _hashmap_spread(k) & mask)


_ORDER_CACHE: dict = {}


def encode_properties(properties: Mapping[str, str]) -> bytes:
    """RocketMQ 4.9.8's properties string: ``name\\x01value`` joined by ``\\x02``, in
    Java HashMap order, UTF-8. Entries whose value is None are skipped."""
    if not properties:
        return b""
    keys = tuple(properties)
    order = _ORDER_CACHE.get(keys)
    if order is None:
        # Messages of one application share a few key sets: remember their order.
        order = tuple(hashmap_order(keys))
        if len(_ORDER_CACHE) < 4096:
            _ORDER_CACHE[keys] = order
    if len(order) == 1:
        key = order[0]
        value = properties[key]
        return b"" if value is None else f"{key}\x01{value}".encode()
    return "\x02".join(
        [f"{k}\x01{properties[k]}" for k in order if properties[k] is not None]
    ).encode()


def decode_properties(data: Union[bytes, str]) -> dict:
    """Parse a properties string exactly as RocketMQ's MessageDecoder does (segments
    shorter than 3 characters, empty names and empty values are dropped; a later
    duplicate wins). Invalid UTF-8 decodes with U+FFFD replacements."""
    if isinstance(data, (bytes, bytearray, memoryview)):
        data = bytes(data).decode("utf-8", "replace")
    result = {}
    for segment in data.split(PROPERTY_SEPARATOR):
        if len(segment) >= 3:
            name, sep, value = segment.partition(NAME_VALUE_SEPARATOR)
            if sep and name and value:
                result[name] = value
    return result


def _check_property(name, value) -> None:
    if not isinstance(name, str) or not isinstance(value, str):
        raise TypeError(f"property names and values must be str, got {name!r}={value!r}")
    if not name or not value:
        raise ValueError(f"property {name!r}: names and values must not be empty")
    for text in (name, value):
        if NAME_VALUE_SEPARATOR in text or PROPERTY_SEPARATOR in text:
            raise ValueError(
                f"property {name!r}: names and values must not contain \\x01 or \\x02 "
                "(RocketMQ's separators)"
            )
        if "\x00" in text:
            raise ValueError(
                f"property {name!r}: names and values must not contain NUL (recovery "
                "takes a record ending in NUL for a torn write)"
            )


def _check_int(name: str, value, low: int, high: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if not low <= value <= high:
        raise ValueError(f"{name} {value} is out of range {low}..{high}")
    return value


# ----------------------------------------------------------------------------- messages


class Message:
    """A message to store: topic, body, tags, keys, user properties and RocketMQ's
    per-message fields.

    `keys` is one string or a list of strings (stored space-separated in KEYS).
    Raises TypeError for a body that is not bytes-like or fields of the wrong type,
    ValueError for properties containing RocketMQ's separators or empty names/values.

    The keyword-only fields are normally set by the store; replay and migration tools
    set them to reproduce a stored record exactly: `born_timestamp` (ms, default the
    store clock), `born_host` / `store_host` (``"ip:port"``, default from StoreConfig),
    `sys_flag` (compression and transaction bits; the IPv6 bits are derived),
    `reconsume_times`, `prepared_transaction_offset`.
    """

    __slots__ = (
        "topic",
        "body",
        "flag",
        "born_timestamp",
        "born_host",
        "store_host",
        "sys_flag",
        "reconsume_times",
        "prepared_transaction_offset",
        "_properties",
        "_encoded",
    )

    def __init__(
        self,
        topic: str,
        body: BodyLike,
        tags: Optional[str] = None,
        keys: Union[str, Iterable[str], None] = None,
        properties: Optional[Mapping[str, str]] = None,
        delay_level: int = 0,
        flag: int = 0,
        *,
        born_timestamp: Optional[int] = None,
        born_host: Optional[str] = None,
        store_host: Optional[str] = None,
        sys_flag: int = 0,
        reconsume_times: int = 0,
        prepared_transaction_offset: int = 0,
    ) -> None:
        if topic.__class__ is not str and not isinstance(topic, str):
            raise TypeError(f"topic must be a str, got {type(topic).__name__}")
        if body.__class__ is not bytes:
            if not isinstance(body, (bytes, bytearray, memoryview)):
                raise TypeError(
                    f"body must be bytes, bytearray or memoryview, got {type(body).__name__}"
                )
            if not memoryview(body).c_contiguous:
                raise TypeError("body must be a C-contiguous buffer (copy it with bytes(body))")
        self.topic = topic
        self.body = body
        self.flag = flag
        self.born_timestamp = born_timestamp
        self.born_host = born_host
        self.store_host = store_host
        self.sys_flag = sys_flag
        self.reconsume_times = reconsume_times
        self.prepared_transaction_offset = prepared_transaction_offset
        self._properties = {}
        self._encoded = None
        # One test for the common message (every field at its default); `x.__class__ is
        # not int or x` also catches bools and other non-int zeros.
        if (flag.__class__ is not int or flag or sys_flag.__class__ is not int or sys_flag
                or reconsume_times.__class__ is not int or reconsume_times
                or prepared_transaction_offset.__class__ is not int
                or prepared_transaction_offset or born_timestamp is not None
                or born_host is not None or store_host is not None):
            self._check_fields()
        if properties:
            for name, value in properties.items():
                _check_property(name, value)
                self._properties[name] = value
        if tags is not None:
            self.tags = tags
        if keys is not None:
            self.keys = keys
        if delay_level:
            self.delay_level = delay_level

    def _check_fields(self) -> None:
        """Validate the numeric fields and hosts (TypeError or ValueError naming one)."""
        _check_int("flag", self.flag, _I32_MIN, _I32_MAX)
        if self.born_timestamp is not None:
            _check_int("born_timestamp", self.born_timestamp, _I64_MIN, _I64_MAX)
        for name in ("born_host", "store_host"):
            host = getattr(self, name)
            if host is not None:
                try:
                    encode_host(host)
                except (TypeError, ValueError) as exc:
                    raise type(exc)(f"{name}: {exc}") from None
        _check_int("sys_flag", self.sys_flag, _I32_MIN, _I32_MAX)
        _check_int("reconsume_times", self.reconsume_times, _I32_MIN, _I32_MAX)
        _check_int("prepared_transaction_offset", self.prepared_transaction_offset, _I64_MIN,
                   _I64_MAX)

    # -- properties -------------------------------------------------------------

    @property
    def properties(self) -> Mapping[str, str]:
        """All properties (TAGS, KEYS, DELAY and user properties), read-only; change
        them with `put_property` / `remove_property` or the tags/keys setters."""
        return MappingProxyType(self._props())

    def _props(self) -> dict:
        return self._properties

    def put_property(self, name: str, value: str) -> None:
        """Set one property. Raises TypeError/ValueError for an invalid name or value."""
        _check_property(name, value)
        self._props()[name] = value
        self._encoded = None

    def remove_property(self, name: str) -> None:
        """Remove a property if present."""
        self._props().pop(name, None)
        self._encoded = None

    def get_property(self, name: str, default: Optional[str] = None) -> Optional[str]:
        return self._props().get(name, default)

    @property
    def tags(self) -> Optional[str]:
        return self._props().get(PROPERTY_TAGS)

    @tags.setter
    def tags(self, value: Optional[str]) -> None:
        if value is None:
            self.remove_property(PROPERTY_TAGS)
        else:
            self.put_property(PROPERTY_TAGS, value)

    @property
    def keys(self) -> List[str]:
        """The message keys (KEYS split on spaces); empty when there are none."""
        value = self._props().get(PROPERTY_KEYS)
        return [k for k in value.split(KEY_SEPARATOR) if k] if value else []

    @keys.setter
    def keys(self, value: Union[str, Iterable[str], None]) -> None:
        if value is None:
            self.remove_property(PROPERTY_KEYS)
            return
        if isinstance(value, str):
            joined = value
        else:
            items = list(value)
            for item in items:
                if not isinstance(item, str):
                    raise TypeError(f"keys must be str, got {type(item).__name__}")
            joined = KEY_SEPARATOR.join(items)
        self.put_property(PROPERTY_KEYS, joined)

    @property
    def delay_level(self) -> int:
        value = self._props().get(PROPERTY_DELAY_TIME_LEVEL)
        try:
            return int(value) if value else 0
        except ValueError:
            return 0

    @delay_level.setter
    def delay_level(self, level: int) -> None:
        _check_int("delay_level", level, 0, _I32_MAX)
        if level == 0:
            self.remove_property(PROPERTY_DELAY_TIME_LEVEL)
        else:
            self.put_property(PROPERTY_DELAY_TIME_LEVEL, str(level))

    def derive(self, topic: str, properties: Mapping[str, str], **changes) -> Message:
        """A new Message for `topic` with `properties` and this message's body, flag,
        born time and hosts, sys flag (without the IPv6 bits, which the hosts decide)
        and reconsume times; `changes` replaces any of those keyword fields. The broker
        builds its retries, dead letters and half messages this way."""
        fields = dict(
            flag=self.flag,
            born_timestamp=self.born_timestamp,
            born_host=self.born_host,
            store_host=self.store_host,
            sys_flag=self.sys_flag & ~0x30,
            reconsume_times=self.reconsume_times,
        )
        fields.update(changes)
        return Message(topic, self.body, properties=properties, **fields)

    def encoded_properties(self) -> bytes:
        """The stored properties string (UTF-8, Java HashMap order), cached."""
        encoded = self._encoded
        if encoded is None:
            encoded = self._encoded = encode_properties(self._props())
        return encoded

    def __repr__(self) -> str:
        size = self.body.nbytes if isinstance(self.body, memoryview) else len(self.body)
        return (
            f"{type(self).__name__}(topic={self.topic!r}, tags={self.tags!r}, body=<{size} bytes>)"
        )


def _lazy_field(name: str, doc: str) -> property:
    """A MessageExt field kept in slot `_name`, decoded from the record copy of a
    message `get` built the first time any such field is read or written."""
    read = operator.attrgetter("_" + name)
    slot = "_" + name

    def get(self):
        if self._record is not None:
            self._decode_rest()
        return read(self)

    def put(self, value) -> None:
        if self._record is not None:
            self._decode_rest()  # first, so the stored values do not overwrite this one
        object.__setattr__(self, slot, value)
    # (_decode_rest holds _DECODE_LOCK and checks _record again inside it, so a write
    # that follows a decode in one thread is never undone by a decode in another.)

    return property(get, put, doc=doc)


class MessageExt(Message):
    """A stored message, as read back from the CommitLog: every field of the record.

    `body` is a `bytes` copy, independent of the mapped file. `properties` are parsed
    from the stored string on first use. `msg_id` is the offset message id. A message
    from `get` has body, topic, queue id and offsets set when it is read, and holds a
    copy of its whole record until any other field (or the properties, hosts or msg
    id) is first read or written; that decodes them all and drops the copy.
    """

    __slots__ = (
        "queue_id",
        "queue_offset",
        "commitlog_offset",
        "_store_size",
        "_store_timestamp",
        "_body_crc",
        "_magic_code",
        "_flag",
        "_born_timestamp",
        "_sys_flag",
        "_reconsume_times",
        "_prepared_transaction_offset",
        "_props_raw",
        "_hosts_raw",
        "_born_host_len",
        "_record",
    )

    def __init__(self, *args, **kwargs) -> None:
        raise TypeError("MessageExt is what a store returns; build a Message to store one")

    flag = _lazy_field("flag", "FLAG as stored.")
    born_timestamp = _lazy_field("born_timestamp", "BORNTIMESTAMP (ms).")
    sys_flag = _lazy_field("sys_flag", "SYSFLAG as stored.")
    reconsume_times = _lazy_field("reconsume_times", "RECONSUMETIMES.")
    prepared_transaction_offset = _lazy_field(
        "prepared_transaction_offset", "PREPAREDTRANSACTIONOFFSET.")
    store_size = _lazy_field("store_size", "TOTALSIZE of the record.")
    store_timestamp = _lazy_field("store_timestamp", "STORETIMESTAMP (ms).")
    body_crc = _lazy_field("body_crc", "BODYCRC as stored.")
    magic_code = _lazy_field("magic_code", "MAGICCODE (v1 or v2).")

    @classmethod
    def _from_fields(cls, ptr, f: List[int], i: int = 0, topic: Optional[str] = None) -> MessageExt:
        """Build from `codec.scan` fields (record i) over the buffer at `ptr`; `topic`,
        when the caller knows it, saves decoding it."""
        msg = object.__new__(cls)
        msg._record = None
        msg._fill(ptr, f, i * codec.FIELDS, topic)
        return msg

    @classmethod
    def _from_record(cls, record: bytes, topic: str) -> MessageExt:
        """Every field decoded from a copy of one whole record the C core has checked.
        (get() builds most messages itself, setting only body, topic, queue id,
        offsets and empty property caches, and leaves `_record` for the rest: see
        `_decode_rest`.)"""
        msg = object.__new__(cls)
        msg._record = None
        msg._fill(ffi.from_buffer(record), _decode(record), 0, topic)
        return msg

    def _decode_rest(self) -> None:
        """Decode the fields get() did not set from the record copy, then drop it
        (once per message: under a lock, the copy checked again)."""
        with _DECODE_LOCK:
            if self._record is not None:
                self._decode_record_copy(self._record)

    def _decode_record_copy(self, record: bytes) -> None:
        # The C core checked this record when it was read, so its lengths hold; plain
        # struct reads of the copy are cheaper than another native decode.
        (self._store_size, self._magic_code, self._body_crc, _, self._flag, _, _, sys_flag,
         self._born_timestamp) = _RECORD_HEAD.unpack_from(record)
        born = 20 if sys_flag & codec.BORNHOST_V6_FLAG else 8
        store = 20 if sys_flag & codec.STOREHOST_V6_FLAG else 8
        (self._store_timestamp,) = _I64.unpack_from(record, 48 + born)
        self._reconsume_times, self._prepared_transaction_offset, body_len = \
            _RECORD_TAIL.unpack_from(record, 56 + born + store)
        at = 72 + born + store + body_len
        if self._magic_code == codec.MESSAGE_MAGIC_CODE:
            at += 1 + record[at]
        else:
            at += 2 + _I16.unpack_from(record, at)[0]
        self._sys_flag = sys_flag
        self._props_raw = record[at + 2 :]
        self._hosts_raw = record[48 : 56 + born + store]  # born host, store time, store host
        self._born_host_len = born
        self._record = None

    def _fill(self, ptr, f: List[int], base: int, topic: Optional[str]) -> None:
        """Set every field from scan fields at f[base:] over the buffer at `ptr`.

        Field slots are indexed by number for speed; `_FIELD_ORDER` below pins them to
        the codec's F_* constants."""
        # Hosts, body, topic and properties lie in one run from the born host to the
        # end of the record: one copy out of the mapped file, then slices of it.
        start = f[base + 10]
        props_at = f[base + 21] - start
        props_end = props_at + f[base + 22]
        run = ffi.unpack(ptr + start, props_end)
        if topic is None:
            topic_at = f[base + 19] - start
            topic = run[topic_at : topic_at + f[base + 20]].decode("utf-8", "replace")
        self.topic = topic
        body_at = f[base + 17] - start
        self.body = run[body_at : body_at + f[base + 18]]
        self.queue_id = f[base + 4]
        self.queue_offset = f[base + 6]
        self.commitlog_offset = f[base + 7]
        self._props_raw = run[props_at:props_end]
        born_host_len = f[base + 11]
        self._hosts_raw = run[: born_host_len + 8 + f[base + 14]]
        self._born_host_len = born_host_len
        self._properties = None
        self._encoded = None
        (self._store_size, self._magic_code, self._body_crc) = f[base + 1 : base + 4]
        self._flag = f[base + 5]
        self._sys_flag = f[base + 8]
        self._born_timestamp = f[base + 9]
        self._store_timestamp = f[base + 12]
        self._reconsume_times = f[base + 15]
        self._prepared_transaction_offset = f[base + 16]

    def _slot_values(self) -> dict:
        """The slots actually set (the base class's slots that MessageExt answers
        through properties are not)."""
        values = {}
        for cls in type(self).__mro__:
            for name in getattr(cls, "__slots__", ()):
                if name in _SHADOWED:
                    continue
                try:
                    values[name] = object.__getattribute__(self, name)
                except AttributeError:
                    continue  # not decoded yet: it will be, from _record
        return values

    def __copy__(self) -> MessageExt:
        new = object.__new__(type(self))
        new.__setstate__(self.__getstate__())
        if new._properties is not None:
            new._properties = dict(new._properties)
        return new

    def __getstate__(self):
        return None, self._slot_values()

    def __setstate__(self, state) -> None:
        for name, value in state[1].items():
            object.__setattr__(self, name, value)

    @property
    def _born_host_raw(self) -> bytes:
        if self._record is not None:
            self._decode_rest()
        return self._hosts_raw[: self._born_host_len]

    @property
    def _store_host_raw(self) -> bytes:
        if self._record is not None:
            self._decode_rest()
        return self._hosts_raw[self._born_host_len + 8 :]

    def _props(self) -> dict:
        props = self._properties
        if props is None:
            if self._record is not None:
                self._decode_rest()
            props = self._properties = decode_properties(self._props_raw)
        return props

    def encoded_properties(self) -> bytes:
        if self._encoded is None and self._properties is None:
            if self._record is not None:
                self._decode_rest()
            return self._props_raw
        return super().encoded_properties()

    @property
    def born_host(self) -> str:  # type: ignore[override]
        """Born host as ``ip:port`` (``[ipv6]:port``)."""
        return decode_host(self._born_host_raw)

    @property
    def store_host(self) -> str:  # type: ignore[override]
        """Store host as ``ip:port`` (``[ipv6]:port``)."""
        return decode_host(self._store_host_raw)

    @property
    def msg_id(self) -> str:
        """Offset message id: store host and commitlog offset, uppercase hex."""
        return offset_msg_id(self._store_host_raw, self.commitlog_offset)

    @property
    def uniq_key(self) -> Optional[str]:
        return self._props().get(PROPERTY_UNIQ_CLIENT_MESSAGE_ID_KEYIDX)

    @property
    def transaction_type(self) -> int:
        return self.sys_flag & codec.TRANSACTION_TYPE_MASK

    def __repr__(self) -> str:
        return (
            f"MessageExt(topic={self.topic!r}, queue_id={self.queue_id}, "
            f"queue_offset={self.queue_offset}, commitlog_offset={self.commitlog_offset}, "
            f"tags={self.tags!r}, body=<{len(self.body)} bytes>)"
        )


_FIELD_ORDER = (
    codec.F_TOTAL_SIZE,
    codec.F_MAGIC,
    codec.F_BODY_CRC,
    codec.F_QUEUE_ID,
    codec.F_FLAG,
    codec.F_QUEUE_OFFSET,
    codec.F_PHYSICAL_OFFSET,
    codec.F_SYS_FLAG,
    codec.F_BORN_TIMESTAMP,
    codec.F_BORN_HOST_OFF,
    codec.F_BORN_HOST_LEN,
    codec.F_STORE_TIMESTAMP,
    codec.F_STORE_HOST_OFF,
    codec.F_STORE_HOST_LEN,
    codec.F_RECONSUME_TIMES,
    codec.F_PREPARED_OFFSET,
    codec.F_BODY_OFF,
    codec.F_BODY_LEN,
    codec.F_TOPIC_OFF,
    codec.F_TOPIC_LEN,
    codec.F_PROPS_OFF,
    codec.F_PROPS_LEN,
)
#: Base-class slots a MessageExt answers through properties instead.
_SHADOWED = frozenset(("born_host", "store_host", "flag", "born_timestamp", "sys_flag",
                       "reconsume_times", "prepared_transaction_offset"))
_ZERO = ffi.new("int64_t[1]")
_DECODE_LOCK = threading.Lock()  # MessageExt._decode_rest: one decode per message
_RECORD_HEAD = struct.Struct(">iiiiiqqiq")  # TOTALSIZE .. BORNTIMESTAMP
_RECORD_TAIL = struct.Struct(">iqi")  # RECONSUMETIMES, PREPARED..OFFSET, BODYLENGTH
_I64, _I16 = struct.Struct(">q"), struct.Struct(">h")


def _decode(record: bytes) -> List[int]:
    """Scan fields of one whole record (checked by the C core when it was read)."""
    out = ffi.new("int64_t[]", codec.FIELDS)
    reason = ffi.new("int64_t[1]")
    if not lib.mq_decode_many(ffi.from_buffer(record), len(record), _ZERO, 1, 0, out,
                              reason):  # pragma: no cover - checked when it was read
        raise ValueError(f"stored record no longer decodes (reason {reason[0]})")
    return ffi.unpack(out, codec.FIELDS)

if tuple(range(1, 23)) != _FIELD_ORDER:  # pragma: no cover - guards the C header
    raise ImportError("mqstore: C field layout does not match MessageExt._from_fields")
