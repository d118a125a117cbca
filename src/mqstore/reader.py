"""Reading a queue: RocketMQ's getMessage over a ConsumeQueue and the CommitLog, with
two-stage tag filtering (tag hash code, then the exact tag)."""

from __future__ import annotations

import logging
from typing import FrozenSet, List, Optional, Tuple

from . import codec
from ._native import ffi, lib
from .consumequeue import CQ_STORE_UNIT_SIZE
from .message import MessageExt
from .results import GetResult, GetStatus

log = logging.getLogger(__name__)

_F_TOTAL_SIZE = codec.F_TOTAL_SIZE

TagFilter = Optional[Tuple[FrozenSet[int], FrozenSet[str]]]


def parse_tags(expression: Optional[str]) -> TagFilter:
    """``None``/``"*"``: no filter. ``"a || b"``: (their Java hash codes, the tags).
    Raises TypeError for a non-str, ValueError naming the position of an empty tag."""
    if expression is None:
        return None
    if not isinstance(expression, str):
        raise TypeError(
            f"tags must be a str expression like 'a || b', got {type(expression).__name__}"
        )
    if expression.strip() in ("*", ""):
        return None
    tags = []
    position = 0
    for piece in expression.split("||"):
        tag = piece.strip()
        if not tag:
            raise ValueError(f"empty tag at position {position} in {expression!r}")
        tags.append(tag)
        position += len(piece) + 2
    return frozenset(codec.java_hash(tag) for tag in tags), frozenset(tags)


def _low32(value: int) -> int:
    """The low 32 bits of a tag code as a signed int (RocketMQ's tagsCode.intValue())."""
    if -0x80000000 <= value <= 0x7FFFFFFF:
        return value
    value &= 0xFFFFFFFF
    return value - 0x100000000 if value & 0x80000000 else value


_MISS_STATUS = {
    lib.MQ_MISS_NO_MATCH: GetStatus.NO_MATCHED_MESSAGE,
    lib.MQ_MISS_REMOVED: GetStatus.MESSAGE_WAS_REMOVING,
}
_NO_CODES = ffi.NULL
_PICK_IO, _PICK_HAVE, _PICK_SCANNED = lib.MQ_PICK_IO, lib.MQ_PICK_HAVE, lib.MQ_PICK_SCANNED
_PICK_FULL, _PICK_MISS, _PICK_DAMAGED = lib.MQ_PICK_FULL, lib.MQ_PICK_MISS, lib.MQ_PICK_DAMAGED
_LOC_FIELDS, _LOC_UNUSUAL = lib.MQ_LOC_FIELDS, lib.MQ_LOC_UNUSUAL
_pick_units, _locate_many, _unpack, _new = lib.mq_pick_units, lib.mq_locate_many, ffi.unpack, \
    object.__new__


def read_queue(
    store, topic: str, queue_id: int, offset: int, max_msgs: int, tag_filter: TagFilter
) -> GetResult:
    queue = store._consume_queues.get((topic, queue_id))
    if queue is None:
        return GetResult(GetStatus.NO_MESSAGE_IN_QUEUE, [], 0, 0, 0)
    min_offset, max_offset = queue.min_offset(), queue.max_offset()
    if max_offset == 0:
        return GetResult(GetStatus.NO_MESSAGE_IN_QUEUE, [], 0, min_offset, max_offset)
    if offset < min_offset:
        return GetResult(GetStatus.OFFSET_TOO_SMALL, [], min_offset, min_offset, max_offset)
    if offset == max_offset:
        return GetResult(GetStatus.OFFSET_OVERFLOW_ONE, [], offset, min_offset, max_offset)
    if offset > max_offset:
        return GetResult(GetStatus.OFFSET_OVERFLOW_BADLY, [], max_offset, min_offset, max_offset)
    config = store.config
    count_limit = min(max_msgs, config.max_transfer_count_on_message_in_memory)
    # RocketMQ reads up to 16000 bytes of units per call; without a filter only the
    # units that can be returned are worth reading.
    window = max(16000, max_msgs * CQ_STORE_UNIT_SIZE) // CQ_STORE_UNIT_SIZE
    units = queue.read_unit_bytes(offset, window if tag_filter is not None else count_limit)
    if not units:
        return GetResult(
            GetStatus.OFFSET_FOUND_NULL, [], queue.file_end_offset(offset), min_offset, max_offset
        )

    commitlog = store.commitlog
    commitlog_min, commitlog_max = commitlog.min_offset(), commitlog.max_offset()
    if tag_filter is None:
        codes, n_codes, names = _NO_CODES, -1, None
    else:
        codes = ffi.new("int32_t[]", [_low32(code) for code in tag_filter[0]])
        n_codes, names = len(tag_filter[0]), tag_filter[1]
    # The units are picked in C (RocketMQ's loop: tag code, removed, damaged, limits),
    # then the records they point at are checked in C and copied out once each. One
    # scratch block: io | picks (3 per message) | located | reasons | damaged units.
    n_units = len(units) // CQ_STORE_UNIT_SIZE
    scratch = ffi.new("int64_t[]", _PICK_IO + (4 + _LOC_FIELDS) * count_limit + window)
    io = scratch
    picks_c = scratch + _PICK_IO
    located_c = picks_c + 3 * count_limit
    reasons_c = located_c + _LOC_FIELDS * count_limit
    damaged = reasons_c + count_limit
    messages: List[MessageExt] = []
    scanned = 0
    miss_status = GetStatus.NO_MATCHED_MESSAGE
    byte_limit = config.max_transfer_bytes_on_message_in_memory
    while scanned < n_units and len(messages) < count_limit:
        io[_PICK_HAVE] = len(messages)
        n = _pick_units(ffi.from_buffer(units) + scanned * CQ_STORE_UNIT_SIZE,
                        n_units - scanned, codes, n_codes, commitlog_min, commitlog_max,
                        byte_limit, count_limit - len(messages), io, picks_c, damaged)
        first = offset + scanned
        if io[_PICK_DAMAGED]:
            for j in range(io[_PICK_DAMAGED]):
                store.note_damaged_unit(topic, queue_id, first + damaged[j],
                                        "points outside the CommitLog")
        if io[_PICK_MISS]:
            miss_status = _MISS_STATUS[io[_PICK_MISS]]
        scanned += io[_PICK_SCANNED]
        if n:
            found = _decode_units(store, topic, queue_id, _unpack(picks_c, 3 * n), picks_c,
                                  located_c, reasons_c, first)
            if names is None:
                messages += found
            else:
                for message in found:
                    if message.tags in names:
                        messages.append(message)
                    else:
                        miss_status = GetStatus.NO_MATCHED_MESSAGE
        if io[_PICK_FULL]:
            break
        if (scanned == n_units and len(messages) < count_limit and n_units < window
                and offset + n_units < queue.file_end_offset(offset)):
            # Units were skipped: read on (still within RocketMQ's window and this file).
            more = queue.read_unit_bytes(
                offset + n_units, min(window - n_units, count_limit - len(messages)))
            units += more
            n_units = len(units) // CQ_STORE_UNIT_SIZE
            # units read now may point past the end read above: refresh it, or a
            # message dispatched meanwhile is taken for a damaged unit
            commitlog_max = commitlog.max_offset()
    status = GetStatus.FOUND if messages else miss_status
    return GetResult(status, messages, offset + scanned, min_offset, max_offset)


def _decode_units(store, topic: str, queue_id: int, picks: List[int], picks_c, located_c,
                  reasons_c, first: int) -> List[MessageExt]:
    """The messages that picks (offset, size, unit index from `first`; also in C at
    `picks_c`) point at, one native check per CommitLog file; damaged records are
    logged, counted and skipped."""
    commitlog = store.commitlog
    file_size = commitlog.file_size
    result: List[MessageExt] = []
    append = result.append
    count = len(picks) // 3
    start = 0
    while start < count:
        file_start = picks[3 * start] - picks[3 * start] % file_size
        end = start + 1
        while end < count and file_start <= picks[3 * end] < file_start + file_size:
            end += 1
        mapped = commitlog.queue.find_by_offset(file_start)
        if mapped is None or not mapped.hold():
            start = end
            continue
        try:
            commitlog.note_read(mapped)
            n = end - start
            ptr = mapped.ptr
            _locate_many(ptr, mapped.wrote_position, file_start, queue_id, picks_c + 3 * start,
                         n, located_c, reasons_c)
            located = _unpack(located_c, n * _LOC_FIELDS)
            why = _unpack(reasons_c, n)
            for i, (offset, size, body_at, body_len, queue_offset) in enumerate(zip(
                    picks[3 * start : 3 * end : 3], picks[3 * start + 1 : 3 * end : 3],
                    located[0::_LOC_FIELDS], located[1::_LOC_FIELDS], located[2::_LOC_FIELDS])):
                # MessageExt's fast build, inlined: this loop is get()'s cost per message.
                # The rest of the fields are decoded from _record on first use.
                if why[i] and why[i] != _LOC_UNUSUAL:
                    store.note_damaged_unit(topic, queue_id, first + picks[3 * (start + i) + 2],
                                            codec.STOP_REASONS.get(why[i], "invalid record"))
                    continue
                record = _unpack(ptr + (offset - file_start), size)  # checked: in the file
                if why[i]:
                    append(MessageExt._from_record(record, topic))
                    continue
                msg = _new(MessageExt)
                msg.body = record[body_at : body_at + body_len]
                msg.topic = topic
                msg.queue_id = queue_id
                msg.queue_offset = queue_offset
                msg.commitlog_offset = offset
                msg._record = record
                append(msg)
        finally:
            mapped.release()
        start = end
    return result
