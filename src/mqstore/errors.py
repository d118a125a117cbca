"""Exceptions raised by mqstore. Every error derives from MQStoreError."""

from __future__ import annotations


class MQStoreError(Exception):
    """Base class of every error mqstore raises on purpose."""


class StoreClosedError(MQStoreError):
    """The store (or the part of it being used) has been closed."""


class StoreLockedError(MQStoreError):
    """Another live process (or another store in this process) has the directory open."""

    def __init__(self, path: str, holder_pid: int | None) -> None:
        who = f"process {holder_pid}" if holder_pid else "another process"
        super().__init__(f"store {path} is locked by {who}")
        self.path = path
        self.holder_pid = holder_pid


class StoreCorruptedError(MQStoreError):
    """A store file is damaged or foreign in a way mqstore will not repair by itself."""

    def __init__(self, message: str, path: str | None = None, offset: int | None = None):
        super().__init__(message)
        self.path = path
        self.offset = offset


class RecordError(MQStoreError):
    """A CommitLog record failed validation (torn, truncated, bad CRC, bad lengths)."""

    def __init__(self, reason: str, offset: int, path: str | None = None) -> None:
        where = f" in {path}" if path else ""
        super().__init__(f"invalid record at offset {offset}{where}: {reason}")
        self.reason = reason
        self.offset = offset
        self.path = path


class DiskFullError(MQStoreError):
    """A store file could not be created or reserved because the disk is full."""


class MQClientError(MQStoreError, ValueError):
    """A producer or consumer refused its input before writing anything (RocketMQ's
    MQClientException for bad topics, groups, bodies or properties)."""


class SendError(MQStoreError):
    """The store did not take a sent message (disk full, size limits, ...); nothing of
    it was written. `status` is the store's PutStatus."""

    def __init__(self, message: str, status=None) -> None:
        super().__init__(message)
        self.status = status


class ClientClosedError(MQStoreError):
    """The producer or consumer has been shut down."""
