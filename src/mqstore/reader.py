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
_PICK_IO, _PICK_HAVE = lib.MQ_PICK_IO, lib.MQ_PICK_HAVE
if (lib.MQ_PICK_SCANNED, lib.MQ_PICK_FULL, lib.MQ_PICK_MISS, lib.MQ_PICK_DAMAGED,
        lib.MQ_PICK_UNORDERED, _PICK_IO) != (2, 3, 4, 5, 6, 7):  # pragma: no cover
    raise ImportError("mqstore: mq_pick_units' io layout does not match reader.py")
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
    scratch = ffi.new("int64_t[]", _PICK_IO + (4 + _LOC_FIELDS) * count_limit + n_units)
    picks_c = scratch + _PICK_IO
    located_c = picks_c + 3 * count_limit
    reasons_c = located_c + _LOC_FIELDS * count_limit
    damaged = reasons_c + count_limit
    messages: List[MessageExt] = []
    scanned = 0
    miss_status = GetStatus.NO_MATCHED_MESSAGE
    byte_limit = config.max_transfer_bytes_on_message_in_memory
    while True:
        scratch[_PICK_HAVE] = len(messages)
        n = _pick_units(ffi.from_buffer(units) + scanned * CQ_STORE_UNIT_SIZE,
                        n_units - scanned, codes, n_codes, commitlog_min, commitlog_max,
                        byte_limit, count_limit - len(messages), scratch, picks_c, damaged)
        _, _, step, full, miss, n_damaged, unordered = _unpack(scratch, _PICK_IO)
        first = offset + scanned
        scanned += step
        if n_damaged:
            for j in range(n_damaged):
                store.note_damaged_unit(topic, queue_id, first + damaged[j],
                                        "points outside the CommitLog")
        if miss:
            miss_status = _MISS_STATUS[miss]
        if n:
            found = _decode_units(store, topic, queue_id, _unpack(picks_c, 3 * n), picks_c,
                                  located_c, reasons_c, first, unordered)
            if names is None:
                messages += found
            else:
                for message in found:
                    if message.tags in names:
                        messages.append(message)
                    else:
                        miss_status = GetStatus.NO_MATCHED_MESSAGE
        if full or len(messages) >= count_limit:
            break
        if scanned < n_units:
            continue  # picked as many as asked, but some were dropped: pick on
        if n_units < window and offset + n_units < queue.file_end_offset(offset):
            # Units were skipped: read on (still within RocketMQ's window and this file).
            more = queue.read_unit_bytes(
                offset + n_units, min(window - n_units, count_limit - len(messages)))
            if not more:
                break
            units += more
            n_units = len(units) // CQ_STORE_UNIT_SIZE
            damaged = ffi.new("int64_t[]", n_units)
            # units read now may point past the end read above: refresh it, or a
            # message dispatched meanwhile is taken for a damaged unit
            commitlog_max = commitlog.max_offset()
        else:
            break
    status = GetStatus.FOUND if messages else miss_status
    return GetResult(status, messages, offset + scanned, min_offset, max_offset)


def _decode_units(store, topic: str, queue_id: int, picks: List[int], picks_c, located_c,
                  reasons_c, first: int, unordered: int) -> List[MessageExt]:
    """The messages that picks (offset, size, unit index from `first`; also in C at
    `picks_c`; `unordered` when not in CommitLog order) point at, one native check per
    run of picks in one CommitLog file; damaged records are logged, counted and
    skipped."""
    commitlog = store.commitlog
    file_size = commitlog.file_size
    result: List[MessageExt] = []
    append = result.append
    count = len(picks) // 3
    start = 0
    while start < count:
        file_start = picks[3 * start] - picks[3 * start] % file_size
        end = count
        if unordered or picks[3 * count - 3] >= file_start + file_size:  # several files
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
            sound = _locate_many(ptr, mapped.wrote_position, file_start, queue_id,
                                 picks_c + 3 * start, n, located_c, reasons_c)
            located = _unpack(located_c, n * _LOC_FIELDS)
            offsets = picks[3 * start : 3 * end : 3]
            sizes = picks[3 * start + 1 : 3 * end : 3]
            if sound == n and not any(_unpack(reasons_c, n)):
                # The common case, inlined (this loop is get()'s cost per message): one
                # copy of each record; the fields not set here are decoded from
                # _record on first use (MessageExt._decode_rest).
                for offset, size, body_at, body_len, queue_offset in zip(
                        offsets, sizes, located[0::_LOC_FIELDS], located[1::_LOC_FIELDS],
                        located[2::_LOC_FIELDS]):
                    record = _unpack(ptr + (offset - file_start), size)
                    msg = _new(MessageExt)
                    msg.body = record[body_at : body_at + body_len]
                    msg.topic = topic
                    msg.queue_id = queue_id
                    msg.queue_offset = queue_offset
                    msg.commitlog_offset = offset
                    msg._properties = msg._encoded = None
                    msg._record = record
                    append(msg)
            else:
                _decode_checked(store, topic, queue_id, ptr, file_start, offsets, sizes,
                                located, _unpack(reasons_c, n), picks[3 * start + 2 : 3 * end : 3],
                                first, append)
        finally:
            mapped.release()
        start = end
    return result


def _decode_checked(store, topic, queue_id, ptr, file_start, offsets, sizes, located, why,
                    indices, first, append) -> None:
    """_decode_units' loop for a group with damaged or unusual records."""
    for i, (offset, size) in enumerate(zip(offsets, sizes)):
        if why[i] > 0:
            store.note_damaged_unit(topic, queue_id, first + indices[i],
                                    codec.STOP_REASONS.get(why[i], "invalid record"))
            continue
        record = _unpack(ptr + (offset - file_start), size)  # checked: in the file
        if why[i] == _LOC_UNUSUAL:
            append(MessageExt._from_record(record, topic))
            continue
        j = i * _LOC_FIELDS
        msg = _new(MessageExt)
        msg.body = record[located[j] : located[j] + located[j + 1]]
        msg.topic = topic
        msg.queue_id = queue_id
        msg.queue_offset = located[j + 2]
        msg.commitlog_offset = offset
        msg._properties = msg._encoded = None
        msg._record = record
        append(msg)
