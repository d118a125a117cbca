"""The store's `checkpoint` file (RocketMQ 4.9.8 layout: 4096 bytes, three big-endian
i64 timestamps) and its `abort` marker file."""

from __future__ import annotations

import os
import struct
import threading

from .errors import MQStoreError, StoreCorruptedError

CHECKPOINT_FILE_SIZE = 4096
_FIELDS = struct.Struct(">qqq")
#: recovery starts from a file whose first message is this much older than the checkpoint
RECOVERY_MARGIN_MS = 3000


class StoreCheckpoint:
    """physic / logics / index message timestamps, as RocketMQ's StoreCheckpoint.

    - `physic_msg_timestamp`: store time of the last message of a CommitLog flush;
    - `logics_msg_timestamp`: store time of the last message dispatched before a full
      ConsumeQueue flush;
    - `index_msg_timestamp`: end time of the last full index file flushed.

    Values change in memory; `flush()` writes and syncs the file. A read-only
    checkpoint reads the file and never writes.
    """

    def __init__(self, path: str, readonly: bool = False) -> None:
        self.path = path
        self.readonly = readonly
        self._lock = threading.Lock()
        self.physic_msg_timestamp = 0
        self.logics_msg_timestamp = 0
        self.index_msg_timestamp = 0
        if os.path.exists(path):
            size = os.path.getsize(path)
            if size != CHECKPOINT_FILE_SIZE:
                raise StoreCorruptedError(
                    f"{path}: checkpoint is {size} bytes, expected {CHECKPOINT_FILE_SIZE}",
                    path=path,
                )
            with open(path, "rb") as fh:
                (self.physic_msg_timestamp, self.logics_msg_timestamp,
                 self.index_msg_timestamp) = _FIELDS.unpack(fh.read(_FIELDS.size))

    def min_timestamp(self) -> int:
        """Where abnormal recovery may start: min(physic, logics) minus a margin."""
        return max(0, min(self.physic_msg_timestamp, self.logics_msg_timestamp)
                   - RECOVERY_MARGIN_MS)

    def flush(self) -> None:
        """Write the three timestamps (rest zero) and fsync, replacing the file whole."""
        if self.readonly:
            return
        with self._lock:
            data = _FIELDS.pack(self.physic_msg_timestamp, self.logics_msg_timestamp,
                                self.index_msg_timestamp).ljust(CHECKPOINT_FILE_SIZE, b"\0")
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                if os.pwrite(fd, data, 0) != CHECKPOINT_FILE_SIZE:
                    raise MQStoreError(f"short write to {self.path}")
                os.fsync(fd)
            finally:
                os.close(fd)

    def __repr__(self) -> str:
        return (f"StoreCheckpoint(physic={self.physic_msg_timestamp}, "
                f"logics={self.logics_msg_timestamp}, index={self.index_msg_timestamp})")


class AbortFile:
    """``<store>/abort``: present while a store is open for writing; a clean close
    removes it, so finding it at open means the last run ended abnormally."""

    def __init__(self, store_path: str) -> None:
        self.path = os.path.join(store_path, "abort")

    def exists(self) -> bool:
        return os.path.exists(self.path)

    def create(self) -> None:
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o644)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        _fsync_dir(os.path.dirname(self.path))

    def remove(self) -> None:
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            return
        _fsync_dir(os.path.dirname(self.path))


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
