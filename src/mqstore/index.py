"""The index: IndexFiles under ``index/`` (a 40-byte header, a hash-slot table and
20-byte entries chained per slot) mapping ``topic#key`` to CommitLog offsets, and the
IndexService that fills them and answers key queries the way RocketMQ does."""

from __future__ import annotations

import logging
import os
import re
import struct
import threading
import time
from typing import Iterator, List

from . import codec
from ._native import ffi, lib
from .errors import MQStoreError, StoreCorruptedError
from .mappedfile import MappedFile, drop_unreserved_file

log = logging.getLogger(__name__)

INDEX_HEADER_SIZE = 40
HASH_SLOT_SIZE = 4
INDEX_ENTRY_SIZE = 20
_HEADER = struct.Struct(">qqqqii")
_ENTRY = struct.Struct(">iqii")
_NAME_RE = re.compile(r"[0-9]{17}")


def index_file_size(slot_num: int, index_num: int) -> int:
    return INDEX_HEADER_SIZE + slot_num * HASH_SLOT_SIZE + index_num * INDEX_ENTRY_SIZE


def key_hash(topic: str, key: str) -> int:
    """RocketMQ's index key hash of ``topic#key``: abs(Java hash), MIN_VALUE -> 0."""
    h = codec.java_hash(f"{topic}#{key}")
    return 0 if h == -(2**31) else abs(h)


class IndexHeader:
    """The 40-byte header of an IndexFile, read from the mapped bytes."""

    __slots__ = (
        "begin_timestamp",
        "end_timestamp",
        "begin_phy_offset",
        "end_phy_offset",
        "hash_slot_count",
        "index_count",
    )

    def __init__(self, raw: bytes) -> None:
        (
            self.begin_timestamp,
            self.end_timestamp,
            self.begin_phy_offset,
            self.end_phy_offset,
            self.hash_slot_count,
            self.index_count,
        ) = _HEADER.unpack(raw)
        if self.index_count <= 0:
            self.index_count = 1


class IndexFile:
    """One IndexFile, named by its creation time (local ``yyyyMMddHHmmssSSS``)."""

    def __init__(
        self,
        path: str,
        slot_num: int,
        index_num: int,
        *,
        create: bool = False,
        readonly: bool = False,
        in_memory: bool = False,
    ) -> None:
        if not _NAME_RE.fullmatch(os.path.basename(path)):
            raise StoreCorruptedError(
                f"{path}: index file name is not a 17-digit timestamp", path=path
            )
        self.path = path
        self.slot_num = slot_num
        self.index_num = index_num
        self.file_size = index_file_size(slot_num, index_num)
        self._mapped = MappedFile(path, self.file_size, create=create, readonly=readonly,
                                  offset_name=False, in_memory=in_memory)
        self.readonly = readonly
        self.ptr = self._mapped.ptr

    def hold(self) -> bool:
        """Keep the mapping alive while reading outside the service's lock."""
        return self._mapped.hold()

    def release(self) -> None:
        self._mapped.release()

    def header(self) -> IndexHeader:
        return IndexHeader(ffi.unpack(self.ptr, INDEX_HEADER_SIZE))

    def init_from_previous(self, previous: IndexHeader) -> None:
        """A file replacing a full one starts at the previous file's end."""
        raw = _HEADER.pack(
            previous.end_timestamp,
            previous.end_timestamp,
            previous.end_phy_offset,
            previous.end_phy_offset,
            0,
            1,
        )
        ffi.memmove(self.ptr, raw, INDEX_HEADER_SIZE)

    def is_full(self) -> bool:
        return self.header().index_count >= self.index_num

    def iter_select(self, key_hash_value: int, begin: int, end: int) -> Iterator[int]:
        """CL offsets of entries with this key hash that may have been stored in
        [begin, end], newest first (RocketMQ's selectPhyOffset walk of a slot chain).

        Entry times are whole seconds after the header's begin time, rounded down, and
        the first entry of a file is timed against the previous file's end (RocketMQ
        writes it so), so this admits a second of slack and does not time-filter the
        first entry; callers check the record's real store time.
        """
        header = self.header()
        if header.index_count <= 1:
            return
        slot = key_hash_value % self.slot_num
        slot_value = struct.unpack(
            ">i", ffi.unpack(self.ptr + INDEX_HEADER_SIZE + slot * HASH_SLOT_SIZE, HASH_SLOT_SIZE)
        )[0]
        if slot_value <= 0 or slot_value > header.index_count:
            return
        entries = INDEX_HEADER_SIZE + self.slot_num * HASH_SLOT_SIZE
        position = slot_value
        for _ in range(header.index_count):  # a chain can never be longer; guards cycles
            hash_read, phy_offset, time_diff, previous = _ENTRY.unpack(
                ffi.unpack(self.ptr + entries + position * INDEX_ENTRY_SIZE, INDEX_ENTRY_SIZE)
            )
            if time_diff < 0:
                return
            time_read = header.begin_timestamp + time_diff * 1000
            in_range = position == 1 or begin - 1000 < time_read <= end
            if hash_read == key_hash_value and in_range:
                yield phy_offset
            if (
                previous <= 0
                or previous > header.index_count
                or previous == position
                or (position != 1 and time_read <= begin - 1000)
            ):
                return
            position = previous

    def flush(self) -> None:
        """msync the whole file (index writes land all over it)."""
        if self.readonly or self._mapped.is_closed or self._mapped.in_memory:
            return
        rc = lib.mq_msync(self.ptr, 0, self.file_size)
        if rc != 0:
            raise MQStoreError(f"msync of {self.path} failed: {os.strerror(-rc)}")

    def shutdown(self) -> None:
        self._mapped.shutdown()

    def destroy(self) -> None:
        self._mapped.destroy()


def _index_name(now_ms: int) -> str:
    seconds, millis = divmod(now_ms, 1000)
    return time.strftime("%Y%m%d%H%M%S", time.localtime(seconds)) + f"{millis:03d}"


class IndexService:
    """The index files of a store: built by the dispatcher (`add`), queried by key."""

    def __init__(self, store_path: str, slot_num: int, index_num: int, clock,
                 checkpoint=None, readonly: bool = False, in_memory: bool = False) -> None:
        self.directory = os.path.join(store_path, "index")
        self.slot_num = slot_num
        self.index_num = index_num
        self.clock = clock
        self.checkpoint = checkpoint
        self.readonly = readonly
        #: files in anonymous memory (a read-only store rebuilding its index)
        self.in_memory = in_memory
        self.files: List[IndexFile] = []
        self._lock = threading.RLock()
        self._resume = ffi.new("int32_t[2]")

    def load(self) -> None:
        """Map the existing index files in name order (StoreCorruptedError names a file
        with a foreign name or the wrong size)."""
        if self.in_memory or not os.path.isdir(self.directory):
            return
        names = sorted(os.listdir(self.directory))
        size = index_file_size(self.slot_num, self.index_num)
        if names and drop_unreserved_file(os.path.join(self.directory, names[-1]), size,
                                          self.readonly):
            names.pop()
        for name in names:
            self.files.append(
                IndexFile(
                    os.path.join(self.directory, name),
                    self.slot_num,
                    self.index_num,
                    readonly=self.readonly,
                )
            )

    def map_new_files(self) -> None:
        """Read-only: map index files another process created since the last look."""
        if self.in_memory or not os.path.isdir(self.directory):
            return
        gone = 0
        while gone < len(self.files) - 1 and not os.path.exists(self.files[gone].path):
            gone += 1  # deleted by the writer's cleanup: let go of the mapping
        if gone:
            with self._lock:
                dropped, self.files = self.files[:gone], self.files[gone:]
            for index_file in dropped:
                index_file.shutdown()
        known = {os.path.basename(f.path) for f in self.files}
        size = index_file_size(self.slot_num, self.index_num)
        for name in sorted(os.listdir(self.directory)):
            path = os.path.join(self.directory, name)
            if name not in known and _NAME_RE.fullmatch(name) and os.path.getsize(path) == size:
                self.files.append(IndexFile(path, self.slot_num, self.index_num,
                                            readonly=self.readonly))

    def delete_newer_than(self, timestamp: int) -> List[str]:
        """Drop index files whose end timestamp is after `timestamp` (abnormal recovery)."""
        kept, dropped = [], []
        for index_file in self.files:
            if index_file.header().end_timestamp > timestamp:
                dropped.append(index_file.path)
                index_file.shutdown() if self.readonly else index_file.destroy()
            else:
                kept.append(index_file)
        self.files = kept
        return dropped

    def delete_files_below(self, commitlog_min_offset: int, interval_forcibly_ms: int,
                           now_ms: int):
        """Cleanup: delete index files from the oldest (never the last) whose
        endPhyOffset is below `commitlog_min_offset`. Returns (paths deleted, path of a
        file still held by a reader, or None)."""
        deleted: List[IndexFile] = []
        held = None
        with self._lock:
            files = list(self.files)
        for index_file in files[:-1]:
            mapped = index_file._mapped
            if mapped.hold():
                try:
                    end = index_file.header().end_phy_offset
                finally:
                    mapped.release()
                if end >= commitlog_min_offset:
                    break
            # (hold() fails only for a file an earlier pass began deleting: retry it)
            if not mapped.try_destroy(interval_forcibly_ms, now_ms):
                held = index_file.path
                break
            deleted.append(index_file)
        if deleted:
            with self._lock:
                gone = {id(f) for f in deleted}
                self.files = [f for f in self.files if id(f) not in gone]
        return [f.path for f in deleted], held

    def end_phy_offset(self) -> int:
        """CL offset of the last indexed record (-1 when nothing is indexed)."""
        if not self.files:
            return -1
        header = self.files[-1].header()
        return header.end_phy_offset if header.index_count > 1 else -1

    def _new_file(self) -> IndexFile:
        if self.readonly:
            raise MQStoreError("index is read-only")
        if not self.in_memory:
            os.makedirs(self.directory, exist_ok=True)
        now = self.clock()
        name = _index_name(now)
        while self.files and name <= os.path.basename(self.files[-1].path):
            now += 1
            name = _index_name(now)
        index_file = IndexFile(os.path.join(self.directory, name), self.slot_num,
                               self.index_num, create=not self.in_memory,
                               in_memory=self.in_memory)
        if self.files:
            index_file.init_from_previous(self.files[-1].header())
        self.files.append(index_file)
        return index_file

    def add(self, buf, fields, count: int) -> None:
        """Index `count` scanned records (native scan output over `buf`, scanned with
        SCAN_PROPERTIES), rolling to a new file whenever one fills up."""
        if self.readonly:  # its files are mapped read-only: a write would crash
            raise MQStoreError("the index is read-only")
        resume = self._resume
        resume[0] = resume[1] = 0
        with self._lock:
            while True:
                current = self.files[-1] if self.files else self._new_file()
                done = lib.mq_index_add(
                    current.ptr, self.slot_num, self.index_num, buf, fields, count, resume
                )
                if done == 1:
                    return
                if done < 0:
                    raise MQStoreError("invalid index configuration")
                current.flush()  # RocketMQ flushes a full index file ...
                if self.checkpoint is not None:  # ... and checkpoints its end time
                    self.checkpoint.index_msg_timestamp = current.header().end_timestamp
                    self.checkpoint.flush()
                self._new_file()

    def iter_offsets(self, topic: str, key: str, begin: int, end: int) -> Iterator[int]:
        """CL offsets of every entry for ``topic#key`` stored in [begin, end], newest
        first (by file, then by chain). Only the hash is compared."""
        hashed = key_hash(topic, key)
        with self._lock:
            files = list(self.files)
        for index_file in reversed(files):
            if not index_file.hold():
                continue  # closed or deleted meanwhile
            try:
                header = index_file.header()
                if header.end_timestamp >= begin - 1000 and header.begin_timestamp <= end:
                    yield from index_file.iter_select(hashed, begin, end)
            finally:
                index_file.release()  # the mapping outlives a close() until this
            if header.end_timestamp < begin - 1000:
                return

    def flush(self) -> None:
        with self._lock:
            for index_file in self.files:
                index_file.flush()

    def shutdown(self) -> None:
        with self._lock:
            for index_file in self.files:
                if not self.readonly:
                    index_file.flush()
                index_file.shutdown()
            self.files = []
