"""Checking a store directory: every CommitLog record (sizes, CRC, offsets), every
ConsumeQueue unit against the record it points at, and the checkpoint.

Read-only: files are mapped read-only and nothing is written, so it runs on a live
store or a read-only copy. `verify_store(path)` returns a VerifyReport.
"""

from __future__ import annotations

import mmap
import os
import struct
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Tuple

from . import codec
from ._native import ffi, lib
from .checkpoint import CHECKPOINT_FILE_SIZE
from .config import DEFAULT_DELAY_LEVELS, parse_delay_levels
from .dispatch import delivery_time
from .message import SCHEDULE_TOPIC
from .storedir import (
    COMMITLOG_DIR,
    abort_present,
    numbered_files,
    queue_dirs,
)

_CHUNK = 4096  # records per native scan call
_UNIT = struct.Struct(">qiq")
_UNIT_SIZE = 20
_MAGIC = struct.pack(">i", codec.MESSAGE_MAGIC_CODE)
_BLANK_FILL_SIZE = 2**31 - 1  # RocketMQ's pre-fill unit: (0, INT32_MAX, 0)
_EMPTY_UNIT = bytes(_UNIT_SIZE)

F = codec.FIELDS


@dataclass
class Problem:
    """One thing wrong: the file (relative to the store), the byte position in that
    file, and what is wrong there."""

    file: str
    offset: int
    what: str

    def __str__(self) -> str:
        return f"{self.file} @{self.offset}: {self.what}"


@dataclass
class VerifyReport:
    """What `verify_store` found. `problems` make the store unsound; `notes` are
    worth knowing but expected (a crashed or live writer's tail not dispatched yet)."""

    path: str
    problems: List[Problem] = field(default_factory=list)
    notes: List[str] = field(default_factory=list)
    commitlog_files: int = 0
    commitlog_bytes: int = 0
    records: int = 0
    queues: int = 0
    units: int = 0
    seconds: float = 0.0
    clean_shutdown: bool = True

    @property
    def ok(self) -> bool:
        return not self.problems


class _Mapped:
    """A read-only mapping of one file (empty files get no mapping)."""

    def __init__(self, path: str) -> None:
        self.path = path
        with open(path, "rb") as fh:
            self.size = os.fstat(fh.fileno()).st_size
            self.map = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) if self.size else None
        if self.map is not None:
            try:
                self.map.madvise(mmap.MADV_SEQUENTIAL)
            except (AttributeError, OSError):
                pass
            self.ptr = ffi.from_buffer(self.map)
        else:
            self.ptr = ffi.NULL

    def close(self) -> None:
        if self.map is not None:
            self.ptr = ffi.NULL
            self.map.close()
            self.map = None


class _ExpectedQueue:
    """The units a ConsumeQueue should hold, built from the records: a byte image
    from queue offset `first` on; an all-zero unit means "no record claims it"."""

    __slots__ = ("first", "data")

    def __init__(self, first: int) -> None:
        self.first = first
        self.data = bytearray()

    def place(self, queue_offset: int, count: int) -> int:
        """Make room for `count` units from `queue_offset`; their byte position."""
        if queue_offset < self.first:
            self.data[:0] = bytes((self.first - queue_offset) * _UNIT_SIZE)
            self.first = queue_offset
        pos = (queue_offset - self.first) * _UNIT_SIZE
        need = pos + count * _UNIT_SIZE - len(self.data)
        if need > 0:
            self.data.extend(bytes(need))
        return pos

    @property
    def end(self) -> int:
        return self.first + len(self.data) // _UNIT_SIZE


class _Verifier:
    def __init__(
        self, path: str, progress: Optional[Callable[[int, int], None]], delay_levels_ms: List[int]
    ) -> None:
        self.path = path
        self.report = VerifyReport(path)
        self.progress = progress
        self.delay_levels = delay_levels_ms
        self.files: List[Tuple[int, _Mapped]] = []  # (file_from_offset, mapping)
        self.file_size = 0
        self.min_offset = 0
        self.end_offset = 0
        self.max_store_timestamp = 0
        self.expected: Dict[Tuple[str, int], _ExpectedQueue] = {}
        self.topics: Dict[bytes, str] = {}
        self._tail_problem: Optional[int] = None  # a damage no whole record follows
        self.out = ffi.new("int64_t[]", _CHUNK * F + 2)
        self.runs = ffi.new("int32_t[]", _CHUNK)
        self.fields = memoryview(ffi.buffer(self.out)).cast("q")

    def problem(self, file: str, offset: int, what: str) -> None:
        self.report.problems.append(Problem(file, offset, what))

    # -- CommitLog ----------------------------------------------------------------

    def open_commitlog(self) -> None:
        directory = os.path.join(self.path, COMMITLOG_DIR)
        names = numbered_files(directory)
        if not names:
            self.report.notes.append("no CommitLog files")
            return
        expected_from = None
        for name in names:
            rel = f"{COMMITLOG_DIR}/{name}"
            mapped = _Mapped(os.path.join(directory, name))
            start = int(name)
            if not self.file_size:
                self.file_size = mapped.size
            if mapped.size != self.file_size:
                self.problem(
                    rel,
                    0,
                    f"file is {mapped.size} bytes; the first CommitLog file is {self.file_size}",
                )
            if len(name) != 20:
                self.problem(rel, 0, "file name is not 20 digits")
            if expected_from is not None and start != expected_from:
                self.problem(
                    rel,
                    0,
                    f"file starts at CommitLog offset {start}, expected "
                    f"{expected_from} (a file is missing or misnamed)",
                )
            if self.file_size and start % self.file_size:
                self.problem(
                    rel,
                    0,
                    f"file offset {start} is not a multiple of the file size {self.file_size}",
                )
            expected_from = start + self.file_size
            self.files.append((start, mapped))
            self.report.commitlog_bytes += mapped.size
        self.report.commitlog_files = len(self.files)
        self.min_offset = self.files[0][0]

    def scan_commitlog(self) -> None:
        total = sum(m.size for _, m in self.files)
        done = 0
        open_end = None  # (file, position) where a file's data ended without a blank
        last_with_data = max(
            (
                i
                for i, (_, m) in enumerate(self.files)
                if m.map is not None and m.map[:8] != bytes(8)
            ),
            default=-1,
        )
        for index, (start, mapped) in enumerate(self.files):
            self._tail_problem = None
            end, full = self._scan_file(start, mapped)
            if index == last_with_data and not self.report.clean_shutdown:
                self._tail_damage_is_expected()
            if end and open_end is not None:
                self.problem(
                    open_end[0],
                    open_end[1],
                    "the data ends without an "
                    "end-of-file blank record, yet a later file holds records",
                )
            if end:
                self.end_offset = start + end
                open_end = (
                    None if full else (f"{COMMITLOG_DIR}/{os.path.basename(mapped.path)}", end)
                )
            elif not self.end_offset:
                self.end_offset = start
            done += mapped.size
            if self.progress is not None:
                self.progress(done, total)

    def _tail_damage_is_expected(self) -> None:
        """After an unclean shutdown (or while a writer runs) the last record may be
        torn: recovery cuts it. Damage in the last file with data, after which no
        whole record follows, is then a note, not a problem."""
        index = self._tail_problem
        if index is None or index != len(self.report.problems) - 1:
            return
        problem = self.report.problems.pop()
        self.report.notes.append(
            f"{problem}: a torn tail after an unclean shutdown (or a write in progress); "
            "recovery at the next writable open cuts it"
        )

    def _scan_file(self, start: int, mapped: _Mapped) -> Tuple[int, bool]:
        """Check the records of one file; returns where its data ends and whether it
        ends as a full file does (with the end-of-file record or exactly at its end)."""
        rel = f"{COMMITLOG_DIR}/{os.path.basename(mapped.path)}"
        if mapped.map is None:
            return 0, False
        ptr, size = mapped.ptr, mapped.size
        out, stop = self.out, self.out + _CHUNK * F
        flags = codec.SCAN_CHECK_CRC | codec.SCAN_PROPERTIES
        pos = 0
        while True:
            count = lib.mq_scan(ptr, size, pos, _CHUNK, flags, out, stop)
            if count:
                self._take_records(rel, ptr, start, count)
                self._tail_problem = None
            pos, reason = stop[0], stop[1]
            if reason == codec.STOP_LIMIT:
                continue
            if reason == codec.STOP_END:
                return pos, True
            if reason == codec.STOP_BLANK:
                declared = int.from_bytes(mapped.map[pos : pos + 4], "big", signed=True)
                if declared != size - pos:
                    self.problem(
                        rel,
                        pos,
                        f"end-of-file blank record declares {declared} "
                        f"bytes, {size - pos} are left in the file",
                    )
                return pos, True
            if reason == codec.STOP_ZERO:
                data_after = lib.mq_last_nonzero(ptr, pos, size)
                if data_after > pos:
                    self.problem(
                        rel,
                        pos,
                        f"zeros where a record should start, but data "
                        f"follows up to byte {data_after} (records lost)",
                    )
                    resume = self._resync(rel, mapped, pos + 1)
                    if resume is None:
                        self._tail_problem = len(self.report.problems) - 1
                        return data_after, False
                    pos = resume
                    continue
                return pos, False
            self.problem(rel, pos, self._describe_damage(mapped, pos, reason))
            if (
                reason == codec.ERR_CRC
                and lib.mq_scan(ptr, size, pos, 1, codec.SCAN_PROPERTIES, out, stop) == 1
            ):
                # only the body is wrong: the record still links to its unit
                self._tail_problem = len(self.report.problems) - 1
                self._take_records(rel, ptr, start, 1)
                pos = stop[0]
                continue
            resume = self._resync(rel, mapped, pos + 1)
            if resume is None:
                self._tail_problem = len(self.report.problems) - 1
                return max(pos, lib.mq_last_nonzero(ptr, pos, size)), False
            pos = resume

    def _describe_damage(self, mapped: _Mapped, pos: int, reason: int) -> str:
        text = codec.STOP_REASONS[reason]
        offset = f"CommitLog offset {int(os.path.basename(mapped.path)) + pos}"
        if reason == codec.ERR_CRC:
            fields, why = codec.scan_one(mapped.ptr, mapped.size, pos, 0)
            if not why:
                body = mapped.map[
                    fields[codec.F_BODY_OFF] : fields[codec.F_BODY_OFF] + fields[codec.F_BODY_LEN]
                ]
                return (
                    f"{text}: stored {fields[codec.F_BODY_CRC]}, body gives "
                    f"{codec.body_crc(body)} ({offset})"
                )
        if reason in (codec.ERR_MAGIC, codec.ERR_TRUNCATED, codec.ERR_TOTAL_SIZE):
            head = mapped.map[pos : pos + 8]
            if len(head) == 8:
                total, magic = struct.unpack(">ii", head)
                if reason == codec.ERR_MAGIC:
                    return f"{text} 0x{magic & 0xFFFFFFFF:08X} ({offset})"
                return (
                    f"{text}: TOTALSIZE {total}, {mapped.size - pos} bytes left in the "
                    f"file ({offset})"
                )
        return f"{text} ({offset})"

    def _resync(self, rel: str, mapped: _Mapped, pos: int) -> Optional[int]:
        """The next position after damage where a whole record (CRC, PHYSICALOFFSET
        agreeing with its place) or the end-of-file record starts; None when none."""
        data, start = mapped.map, int(os.path.basename(mapped.path))
        blank = struct.pack(">i", codec.BLANK_MAGIC_CODE)
        while True:
            found = data.find(_MAGIC, pos + 4)
            found_blank = data.find(blank, pos + 4)
            candidates = [c - 4 for c in (found, found_blank) if c >= 0]
            if not candidates:
                return None
            at = min(candidates)
            fields, reason = codec.scan_one(mapped.ptr, mapped.size, at, codec.SCAN_CHECK_CRC)
            if (
                reason == codec.STOP_BLANK
                and int.from_bytes(data[at : at + 4], "big", signed=True) == mapped.size - at
            ):
                self.report.notes.append(
                    f"{rel}: resumed checking at byte {at} (end-of-file record) after damage"
                )
                return at
            if not reason and fields[codec.F_PHYSICAL_OFFSET] == start + at:
                self.report.notes.append(
                    f"{rel}: resumed checking at byte {at} after "
                    f"skipping {at - pos + 1} damaged bytes"
                )
                return at
            pos = at + 1

    def _take_records(self, rel: str, ptr, start: int, count: int) -> None:
        """Per chunk of records: offsets agree with positions; expected units noted."""
        fields = self.fields
        end = count * F
        positions = fields[codec.F_POS : end : F].tolist()
        physical = fields[codec.F_PHYSICAL_OFFSET : end : F].tolist()
        if list(map(start.__add__, positions)) != physical:
            for p, q in zip(physical, positions):
                if p != start + q:
                    self.problem(
                        rel,
                        q,
                        f"PHYSICALOFFSET field says {p}, the record is at "
                        f"CommitLog offset {start + q}",
                    )
        stamp = max(fields[codec.F_STORE_TIMESTAMP : end : F])
        if stamp > self.max_store_timestamp:
            self.max_store_timestamp = stamp
        self.report.records += count
        self._expect_units(ptr, count)

    def _expect_units(self, ptr, count: int) -> None:
        out, runs = self.out, self.runs
        fields = self.fields
        n_runs = lib.mq_queue_runs(ptr, out, count, runs)
        topics = self.topics
        for r in range(n_runs):
            first = runs[r]
            last = runs[r + 1] if r + 1 < n_runs else count
            base = first * F
            if out[base + codec.F_SYS_FLAG] & codec.TRANSACTION_PREPARED_TYPE:
                continue  # PREPARED / ROLLBACK records get no unit
            raw = ffi.unpack(ptr + out[base + codec.F_TOPIC_OFF], out[base + codec.F_TOPIC_LEN])
            topic = topics.get(raw)
            if topic is None:
                topic = topics[raw] = raw.decode("utf-8", "replace")
            if topic == SCHEDULE_TOPIC:
                self._schedule_tag_codes(ptr, first, last)
            key = (topic, out[base + codec.F_QUEUE_ID])
            queue = self.expected.get(key)
            offsets = fields[base + codec.F_QUEUE_OFFSET : last * F : F].tolist()
            first_offset = offsets[0]
            if queue is None:
                queue = self.expected[key] = _ExpectedQueue(first_offset)
            if offsets[-1] - first_offset == len(offsets) - 1 and (
                len(offsets) < 3 or offsets == list(range(first_offset, offsets[-1] + 1))
            ):
                pos = queue.place(first_offset, len(offsets))
                lib.mq_cq_write_units(
                    ffi.from_buffer(queue.data), pos, len(queue.data), out + base, len(offsets)
                )
            else:  # queue offsets not consecutive: one record at a time
                for i, queue_offset in enumerate(offsets):
                    pos = queue.place(queue_offset, 1)
                    lib.mq_cq_write_units(
                        ffi.from_buffer(queue.data), pos, len(queue.data), out + base + i * F, 1
                    )

    def _schedule_tag_codes(self, ptr, first: int, last: int) -> None:
        """SCHEDULE_TOPIC_XXXX units carry the delivery time as their tag code."""
        out, levels = self.out, self.delay_levels
        for i in range(first, last):
            out[i * F + codec.F_TAGS_CODE] = delivery_time(ptr, out, i, levels)

    # -- ConsumeQueues --------------------------------------------------------------

    def check_queues(self) -> None:
        on_disk = queue_dirs(self.path)
        has_root = os.path.isdir(os.path.join(self.path, "consumequeue"))
        clean = self.report.clean_shutdown
        if not has_root:
            if self.expected:
                self.report.notes.append(
                    "no consumequeue directory: the store rebuilds it at open (or run "
                    "`mqstore rebuild`)"
                )
            return
        cq_file_size = None
        for key in sorted(set(on_disk) | set(self.expected)):
            topic, queue_id = key
            directory = on_disk.get(key)
            expected = self.expected.get(key)
            rel_dir = f"consumequeue/{topic}/{queue_id}"
            if directory is None:
                assert expected is not None
                what = (
                    f"{expected.end - expected.first} records of {topic}/{queue_id} "
                    "have no ConsumeQueue"
                )
                if clean:
                    self.problem(rel_dir, 0, what)
                else:
                    self.report.notes.append(
                        what + " (not dispatched before the unclean "
                        "shutdown; the next writable open does it)"
                    )
                continue
            self.report.queues += 1
            names = numbered_files(directory)
            if not names:
                continue
            images = []
            for i, name in enumerate(names):
                file_path = os.path.join(directory, name)
                size = os.path.getsize(file_path)
                if cq_file_size is None:
                    cq_file_size = size
                rel = f"{rel_dir}/{name}"
                if size != cq_file_size or size % _UNIT_SIZE:
                    self.problem(rel, 0, f"file is {size} bytes, expected {cq_file_size}")
                    continue
                if i and int(name) != int(names[i - 1]) + cq_file_size:
                    self.problem(
                        rel,
                        0,
                        f"file starts at byte {int(name)} of the queue, "
                        f"expected {int(names[i - 1]) + cq_file_size}",
                    )
                with open(file_path, "rb") as fh:
                    images.append((int(name), rel, fh.read()))
            self._check_queue(topic, queue_id, images, expected, clean)

    def _check_queue(self, topic: str, queue_id: int, images, expected, clean: bool) -> None:
        """Compare one queue's units with the units its records call for."""
        cl_min, cl_end = self.min_offset, self.end_offset
        exp_first = expected.first if expected else 0
        exp_data = expected.data if expected else b""
        exp_end = exp_first + len(exp_data) // _UNIT_SIZE
        last_unit = None  # queue offset one past the last written unit
        # trailing zero units are room not written yet
        for logical, _rel, data in reversed(images):
            end = lib.mq_last_nonzero(ffi.from_buffer(data), 0, len(data))
            if end > 0:
                last_unit = (logical + -(-end // _UNIT_SIZE) * _UNIT_SIZE) // _UNIT_SIZE
                break
        if last_unit is None:
            last_unit = images[0][0] // _UNIT_SIZE
        for logical, rel, data in images:
            first_unit = logical // _UNIT_SIZE
            n_units = min(len(data) // _UNIT_SIZE, max(0, last_unit - first_unit))
            self.report.units += n_units
            if not n_units:
                continue
            # fast path: the byte range both sides cover is identical
            lo, hi = max(first_unit, exp_first), min(first_unit + n_units, exp_end)
            if hi > lo:
                same = (
                    data[(lo - first_unit) * _UNIT_SIZE : (hi - first_unit) * _UNIT_SIZE]
                    == exp_data[(lo - exp_first) * _UNIT_SIZE : (hi - exp_first) * _UNIT_SIZE]
                )
                if same and lo == first_unit and hi == first_unit + n_units:
                    continue
            for i in range(n_units):
                queue_offset = first_unit + i
                actual = data[i * _UNIT_SIZE : (i + 1) * _UNIT_SIZE]
                if exp_first <= queue_offset < exp_end:
                    wanted = exp_data[
                        (queue_offset - exp_first) * _UNIT_SIZE : (queue_offset - exp_first + 1)
                        * _UNIT_SIZE
                    ]
                else:
                    wanted = _EMPTY_UNIT
                if actual == wanted:
                    continue
                self._unit_problem(
                    rel,
                    i * _UNIT_SIZE,
                    topic,
                    queue_id,
                    queue_offset,
                    actual,
                    wanted,
                    cl_min,
                    cl_end,
                )
        # records with no unit yet
        if exp_end > last_unit and expected is not None:
            start = max(last_unit, exp_first)
            missing = exp_end - start
            first_cl = _UNIT.unpack_from(exp_data, (start - exp_first) * _UNIT_SIZE)[0]
            what = (
                f"{missing} records of {topic}/{queue_id} (queue offsets {start}.."
                f"{exp_end - 1}, from CommitLog offset {first_cl}) have no unit"
            )
            rel_dir = f"consumequeue/{topic}/{queue_id}"
            if clean:
                self.problem(rel_dir, last_unit * _UNIT_SIZE, what)
            else:
                self.report.notes.append(
                    f"{rel_dir}: {what} yet (not dispatched before the "
                    "unclean shutdown; the next writable open does it)"
                )

    def _unit_problem(
        self, rel, pos, topic, queue_id, queue_offset, actual, wanted, cl_min, cl_end
    ) -> None:
        offset, size, tag = _UNIT.unpack(actual)
        if actual == _EMPTY_UNIT:
            if wanted != _EMPTY_UNIT:
                self.problem(
                    rel,
                    pos,
                    f"unit {queue_offset} is zeros, but the record at "
                    f"CommitLog offset {_UNIT.unpack(wanted)[0]} belongs there",
                )
            return
        if offset == 0 and size == _BLANK_FILL_SIZE and tag == 0:
            return  # RocketMQ's pre-fill before a queue's first unit
        if offset < cl_min:
            return  # points at a CommitLog file already deleted (expired)
        head = f"unit {queue_offset} -> CommitLog offset {offset} size {size} tag code {tag}"
        if offset >= cl_end:
            self.problem(rel, pos, f"{head}: past the end of the CommitLog ({cl_end})")
            return
        record = self._record_at(offset)
        if record is None:
            self.problem(rel, pos, f"{head}: no valid record starts there")
            return
        r_size, r_topic, r_queue, r_qoffset = record
        if wanted == _EMPTY_UNIT:
            why = "no record claims this queue offset"
        else:
            w_offset, w_size, w_tag = _UNIT.unpack(wanted)
            if w_offset != offset:
                why = f"the record of this queue offset is at {w_offset}"
            elif w_size != size:
                why = f"the record there is {w_size} bytes"
            else:
                why = f"the record's tag code is {w_tag}"
        if (r_topic, r_queue) != (topic, queue_id):
            why += f"; the record there belongs to {r_topic}/{r_queue} offset {r_qoffset}"
        elif r_qoffset != queue_offset:
            why += f"; the record there has queue offset {r_qoffset}"
        self.problem(rel, pos, f"{head}: {why}")

    def _record_at(self, offset: int) -> Optional[Tuple[int, str, int, int]]:
        """(size, topic, queue id, queue offset) of a whole record at a CommitLog
        offset, else None."""
        if not self.file_size:
            return None
        index = (offset - self.min_offset) // self.file_size
        if not 0 <= index < len(self.files):
            return None
        start, mapped = self.files[index]
        if mapped.map is None:
            return None
        fields, reason = codec.scan_one(mapped.ptr, mapped.size, offset - start, 0)
        if reason:
            return None
        topic = mapped.map[
            fields[codec.F_TOPIC_OFF] : fields[codec.F_TOPIC_OFF] + fields[codec.F_TOPIC_LEN]
        ].decode("utf-8", "replace")
        return (
            fields[codec.F_TOTAL_SIZE],
            topic,
            fields[codec.F_QUEUE_ID],
            fields[codec.F_QUEUE_OFFSET],
        )

    # -- checkpoint -------------------------------------------------------------------

    def check_checkpoint(self) -> None:
        path = os.path.join(self.path, "checkpoint")
        if not os.path.exists(path):
            if self.report.records:
                self.report.notes.append("no checkpoint file (never flushed)")
            return
        size = os.path.getsize(path)
        if size != CHECKPOINT_FILE_SIZE:
            self.problem("checkpoint", 0, f"file is {size} bytes, expected {CHECKPOINT_FILE_SIZE}")
            return
        with open(path, "rb") as fh:
            values = struct.unpack(">qqq", fh.read(24))
        newest = self.max_store_timestamp
        for value, name, pos in zip(
            values, ("physicMsgTimestamp", "logicsMsgTimestamp", "indexMsgTimestamp"), (0, 8, 16)
        ):
            if value < 0:
                self.problem("checkpoint", pos, f"{name} is negative ({value})")
            elif name == "physicMsgTimestamp" and value > newest:
                # it is the store time of a flushed record: no record is that new
                self.problem(
                    "checkpoint",
                    pos,
                    f"{name} {value} is later than the newest record's store time {newest}",
                )
            elif value > newest + self._latest_delivery_slack():
                self.problem(
                    "checkpoint",
                    pos,
                    f"{name} {value} is later than anything the "
                    f"store holds (newest record {newest})",
                )

    def _latest_delivery_slack(self) -> int:
        # logics/index times follow dispatch, which sees the same store times; allow
        # the longest delay level for scheduled deliveries' bookkeeping.
        return max(self.delay_levels, default=0)

    def close(self) -> None:
        for _, mapped in self.files:
            mapped.close()


def verify_store(
    path: str,
    progress: Optional[Callable[[int, int], None]] = None,
    message_delay_level: str = DEFAULT_DELAY_LEVELS,
) -> VerifyReport:
    """Check every CommitLog record, every ConsumeQueue unit and the checkpoint of the
    store at `path`, reading only. `progress(done_bytes, total_bytes)` is called after
    each CommitLog file. Raises OSError when the directory cannot be read."""
    if not os.path.isdir(path):
        raise FileNotFoundError(f"{path}: no such store directory")
    started = time.perf_counter()
    verifier = _Verifier(path, progress, parse_delay_levels(message_delay_level))
    verifier.report.clean_shutdown = not abort_present(path)
    try:
        verifier.open_commitlog()
        verifier.scan_commitlog()
        verifier.check_queues()
        verifier.check_checkpoint()
    finally:
        verifier.close()
    verifier.report.seconds = time.perf_counter() - started
    return verifier.report
