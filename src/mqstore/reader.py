"""Reading a queue: RocketMQ's getMessage over a ConsumeQueue and the CommitLog, with
two-stage tag filtering (tag hash code, then the exact tag)."""

from __future__ import annotations

import logging
from typing import FrozenSet, List, Optional, Tuple

from . import codec
from ._native import ffi, lib
from .consumequeue import BLANK_UNIT_SIZE, CQ_STORE_UNIT_SIZE
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
    units, _ = queue.read_units(offset, window if tag_filter is not None else count_limit)
    if not units:
        return GetResult(
            GetStatus.OFFSET_FOUND_NULL, [], queue.file_end_offset(offset), min_offset, max_offset
        )

    byte_limit = config.max_transfer_bytes_on_message_in_memory
    commitlog = store.commitlog
    commitlog_min, commitlog_max = commitlog.min_offset(), commitlog.max_offset()
    codes, names = tag_filter if tag_filter is not None else (None, None)
    messages: List[MessageExt] = []
    total_bytes = 0
    scanned = 0
    miss_status = GetStatus.NO_MATCHED_MESSAGE
    while scanned < len(units) and len(messages) < count_limit:
        # Pick the next candidates by their units alone, then decode them in bulk.
        picked: List[Tuple[int, int, int]] = []
        budget = count_limit - len(messages)
        full = False
        while scanned < len(units) and len(picked) < budget:
            commitlog_offset, size, tag_code = units[scanned]
            if (messages or picked) and total_bytes + size > byte_limit:
                full = True
                break
            scanned += 1
            if codes is not None and _low32(tag_code) not in codes:
                miss_status = GetStatus.NO_MATCHED_MESSAGE
                continue
            if size == BLANK_UNIT_SIZE and commitlog_offset == 0:
                continue  # a pre-fill unit
            if commitlog_offset < commitlog_min:
                miss_status = GetStatus.MESSAGE_WAS_REMOVING
                continue
            if commitlog_offset < 0 or size <= 0 or commitlog_offset + size > commitlog_max:
                store.note_damaged_unit(
                    topic, queue_id, offset + scanned - 1, "points outside the CommitLog"
                )
                continue
            picked.append((commitlog_offset, size, offset + scanned - 1))
            total_bytes += size
        for message in _decode_units(store, topic, queue_id, picked):
            if names is not None and message.tags not in names:
                miss_status = GetStatus.NO_MATCHED_MESSAGE
                continue
            messages.append(message)
        if full:
            break
        if (scanned == len(units) and len(messages) < count_limit and len(units) < window
                and offset + len(units) < queue.file_end_offset(offset)):
            # Units were skipped: read on (still within RocketMQ's window and this file).
            more, _ = queue.read_units(offset + len(units),
                                       min(window - len(units), count_limit - len(messages)))
            units.extend(more)
            # units read now may point past the end read above: refresh it, or a
            # message dispatched meanwhile is taken for a damaged unit
            commitlog_max = commitlog.max_offset()
    status = GetStatus.FOUND if messages else miss_status
    return GetResult(status, messages, offset + scanned, min_offset, max_offset)


def _decode_units(store, topic: str, queue_id: int, picked) -> List[MessageExt]:
    """Decode the records the picked units point at, one native call per CommitLog
    file; damaged records are logged, counted and skipped."""
    commitlog = store.commitlog
    file_size = commitlog.file_size
    result: List[MessageExt] = []
    start = 0
    while start < len(picked):
        file_start = picked[start][0] - picked[start][0] % file_size
        end = start + 1
        while end < len(picked) and file_start <= picked[end][0] < file_start + file_size:
            end += 1
        group = picked[start:end]
        mapped = commitlog.queue.find_by_offset(file_start)
        if mapped is None or not mapped.hold():
            start = end
            continue
        try:
            commitlog.note_read(mapped)
            n = len(group)
            positions = ffi.new("int64_t[]", [u[0] - file_start for u in group])
            out = ffi.new("int64_t[]", n * codec.FIELDS)
            reasons = ffi.new("int64_t[]", n)
            lib.mq_decode_many(mapped.ptr, mapped.wrote_position, positions, n, 0, out, reasons)
            fields = ffi.unpack(out, n * codec.FIELDS)
            why = ffi.unpack(reasons, n)
            ptr, build, width = mapped.ptr, MessageExt._from_fields, codec.FIELDS
            for i in range(n):
                if why[i]:
                    store.note_damaged_unit(
                        topic,
                        queue_id,
                        group[i][2],
                        codec.STOP_REASONS.get(why[i], "invalid record"),
                    )
                    continue
                if fields[i * width + _F_TOTAL_SIZE] != group[i][1]:
                    store.note_damaged_unit(
                        topic, queue_id, group[i][2], "unit size differs from the record's"
                    )
                    continue
                result.append(build(ptr, fields, i, topic))
        finally:
            mapped.release()
        start = end
    return result
