"""The store's `lock` file: one writing process per store directory.

Compatible with a live RocketMQ broker, which takes a POSIX record lock on byte 0
(``FileChannel.tryLock(0, 1, false)``) and writes the four bytes ``lock``.
"""

from __future__ import annotations

import fcntl
import os
import struct
import threading
from typing import Optional, Set

from .errors import StoreLockedError

# POSIX locks belong to the process: a second lock from this process would succeed
# (and closing its descriptor would drop the first). So this process keeps its own list.
_held: Set[str] = set()
_held_lock = threading.Lock()


def _holder_pid(fd: int) -> Optional[int]:
    """The pid holding a conflicting lock on byte 0 (Linux struct flock layout)."""
    try:
        request = struct.pack("hh4xqqi4x", fcntl.F_WRLCK, os.SEEK_SET, 0, 1, 0)
        answer = fcntl.fcntl(fd, fcntl.F_GETLK, request)
        kind, _, _, _, pid = struct.unpack("hh4xqqi4x", answer)
        return pid if kind != fcntl.F_UNLCK and pid > 0 else None
    except (OSError, struct.error):
        return None


class StoreLock:
    """An exclusive lock on ``<store>/lock``; StoreLockedError when someone has it."""

    def __init__(self, store_path: str) -> None:
        self.path = os.path.join(store_path, "lock")
        self._key = os.path.realpath(store_path)
        self._fd: Optional[int] = None

    def acquire(self) -> None:
        with _held_lock:
            if self._key in _held:
                raise StoreLockedError(self._key, os.getpid())
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, 0, os.SEEK_SET)
            except OSError:
                pid = _holder_pid(fd)
                os.close(fd)
                raise StoreLockedError(self._key, pid) from None
            os.pwrite(fd, b"lock", 0)
            os.fsync(fd)
            _held.add(self._key)
            self._fd = fd

    def release(self) -> None:
        with _held_lock:
            if self._fd is None:
                return
            os.close(self._fd)  # drops the POSIX lock
            self._fd = None
            _held.discard(self._key)
