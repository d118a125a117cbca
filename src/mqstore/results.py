"""Outcomes of store operations: PutStatus and PutResult (one message), PutBatchResult."""

from __future__ import annotations

import enum
import itertools
from operator import itemgetter
from typing import Iterator, List, Optional, Sequence, Union, overload

from .message import offset_msg_id


class PutStatus(enum.Enum):
    """RocketMQ's PutMessageStatus. Anything but PUT_OK means "not acknowledged"; with
    FLUSH_DISK_TIMEOUT the record was written but not yet confirmed on disk."""

    PUT_OK = "PUT_OK"
    FLUSH_DISK_TIMEOUT = "FLUSH_DISK_TIMEOUT"
    FLUSH_SLAVE_TIMEOUT = "FLUSH_SLAVE_TIMEOUT"
    SLAVE_NOT_AVAILABLE = "SLAVE_NOT_AVAILABLE"
    SERVICE_NOT_AVAILABLE = "SERVICE_NOT_AVAILABLE"
    CREATE_MAPPED_FILE_FAILED = "CREATE_MAPPED_FILE_FAILED"
    MESSAGE_ILLEGAL = "MESSAGE_ILLEGAL"
    PROPERTIES_SIZE_EXCEEDED = "PROPERTIES_SIZE_EXCEEDED"
    OS_PAGECACHE_BUSY = "OS_PAGECACHE_BUSY"
    UNKNOWN_ERROR = "UNKNOWN_ERROR"


PUT_OK = PutStatus.PUT_OK


class PutResult(tuple):
    """The outcome of putting one message.

    On success (`status` PUT_OK or FLUSH_DISK_TIMEOUT) it says where the record went:
    `commitlog_offset`, `queue_id`, `queue_offset`, `store_timestamp`, `store_size`
    and `msg_id` (the offset message id). On failure those are -1 and `error` says why.

    A tuple underneath (one allocation per put); use the attributes, not positions.
    """

    __slots__ = ()

    status: PutStatus = property(itemgetter(0))  # type: ignore[assignment]
    commitlog_offset: int = property(itemgetter(1))  # type: ignore[assignment]
    queue_id: int = property(itemgetter(2))  # type: ignore[assignment]
    queue_offset: int = property(itemgetter(3))  # type: ignore[assignment]
    store_timestamp: int = property(itemgetter(4))  # type: ignore[assignment]
    store_size: int = property(itemgetter(5))  # type: ignore[assignment]
    error: Optional[str] = property(itemgetter(7))  # type: ignore[assignment]

    def __new__(
        cls,
        status: PutStatus,
        commitlog_offset: int,
        queue_id: int,
        queue_offset: int,
        store_timestamp: int,
        store_size: int,
        store_host: bytes,
        error: Optional[str] = None,
    ) -> PutResult:
        return _tuple_new(
            cls,
            (
                status,
                commitlog_offset,
                queue_id,
                queue_offset,
                store_timestamp,
                store_size,
                store_host,
                error,
            ),
        )

    @classmethod
    def failed(cls, status: PutStatus, error: str, queue_id: int = -1) -> PutResult:
        return _tuple_new(cls, (status, -1, queue_id, -1, -1, 0, b"", error))

    @property
    def ok(self) -> bool:
        """True only for PUT_OK."""
        return self[0] is PUT_OK

    @property
    def msg_id(self) -> Optional[str]:
        """Offset message id (store host + commitlog offset), None if nothing was written."""
        if self[1] < 0:
            return None
        return offset_msg_id(self[6], self[1])

    def __repr__(self) -> str:
        if self.commitlog_offset < 0:
            return f"PutResult({self.status.name}, error={self.error!r})"
        return (
            f"PutResult({self.status.name}, commitlog_offset={self.commitlog_offset}, "
            f"queue_id={self.queue_id}, queue_offset={self.queue_offset})"
        )


_tuple_new = tuple.__new__


class PutBatchResult(Sequence[PutResult]):
    """The outcome of `put_batch`: one `status` for the whole batch (written all or
    none) and, when written, one PutResult per message (built on access)."""

    __slots__ = (
        "status",
        "error",
        "queue_id",
        "store_timestamp",
        "_offsets",
        "_sizes",
        "_first_queue_offset",
        "_store_host",
    )

    def __init__(
        self,
        status: PutStatus,
        queue_id: int = -1,
        first_queue_offset: int = -1,
        store_timestamp: int = -1,
        offsets: Union[int, Sequence[int]] = (),
        sizes: Sequence[int] = (),
        store_host: bytes = b"",
        error: Optional[str] = None,
    ) -> None:
        """`offsets`: each message's CommitLog offset, or the first one (the records
        are contiguous, so the rest follow from `sizes`)."""
        self.status = status
        self.error = error
        self.queue_id = queue_id
        self.store_timestamp = store_timestamp
        self._offsets = offsets
        self._sizes = sizes
        self._first_queue_offset = first_queue_offset
        self._store_host = store_host

    def _offset_list(self) -> Sequence[int]:
        offsets = self._offsets
        if offsets.__class__ is int:
            offsets = self._offsets = list(
                itertools.accumulate(self._sizes[:-1], initial=offsets))
        return offsets

    @property
    def ok(self) -> bool:
        return self.status is PUT_OK

    @property
    def commitlog_offsets(self) -> List[int]:
        return list(self._offset_list())

    @property
    def msg_ids(self) -> List[str]:
        return [offset_msg_id(self._store_host, offset) for offset in self._offset_list()]

    def __len__(self) -> int:
        return len(self._sizes)

    @overload
    def __getitem__(self, index: int) -> PutResult: ...
    @overload
    def __getitem__(self, index: slice) -> List[PutResult]: ...

    def __getitem__(self, index: Union[int, slice]):
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError("batch result index out of range")
        return _tuple_new(
            PutResult,
            (
                self.status,
                self._offset_list()[index],
                self.queue_id,
                self._first_queue_offset + index,
                self.store_timestamp,
                self._sizes[index],
                self._store_host,
                None,
            ),
        )

    def __iter__(self) -> Iterator[PutResult]:
        for i in range(len(self)):
            yield self[i]

    def __repr__(self) -> str:
        return f"PutBatchResult({self.status.name}, {len(self)} messages, error={self.error!r})"


class GetStatus(enum.Enum):
    """RocketMQ's GetMessageStatus: why `get` returned what it did."""

    FOUND = "FOUND"
    NO_MATCHED_MESSAGE = "NO_MATCHED_MESSAGE"
    MESSAGE_WAS_REMOVING = "MESSAGE_WAS_REMOVING"
    OFFSET_FOUND_NULL = "OFFSET_FOUND_NULL"
    OFFSET_OVERFLOW_BADLY = "OFFSET_OVERFLOW_BADLY"
    OFFSET_OVERFLOW_ONE = "OFFSET_OVERFLOW_ONE"
    OFFSET_TOO_SMALL = "OFFSET_TOO_SMALL"
    NO_MATCHED_LOGIC_QUEUE = "NO_MATCHED_LOGIC_QUEUE"
    NO_MESSAGE_IN_QUEUE = "NO_MESSAGE_IN_QUEUE"


class GetResult:
    """The outcome of `get`: `status`, the `messages` found, where the next read should
    begin (`next_begin_offset`) and the queue's `min_offset` / `max_offset`."""

    __slots__ = ("status", "messages", "next_begin_offset", "min_offset", "max_offset")

    def __init__(
        self,
        status: GetStatus,
        messages: list,
        next_begin_offset: int,
        min_offset: int,
        max_offset: int,
    ) -> None:
        self.status = status
        self.messages = messages
        self.next_begin_offset = next_begin_offset
        self.min_offset = min_offset
        self.max_offset = max_offset

    def __repr__(self) -> str:
        return (
            f"GetResult({self.status.name}, {len(self.messages)} messages, "
            f"next_begin_offset={self.next_begin_offset}, min_offset={self.min_offset}, "
            f"max_offset={self.max_offset})"
        )
