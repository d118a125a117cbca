"""Opening a store after a clean shutdown or a crash: RocketMQ's normal and abnormal
recovery over the CommitLog, ConsumeQueues and index, reported as a RecoveryReport."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import List

from . import codec

log = logging.getLogger(__name__)


@dataclass
class RecoveryReport:
    """What opening the store found and did.

    `abnormal` is True when the last run did not close cleanly (the abort file was
    there). The CommitLog was walked from `start_offset`, validating
    `records_checked` records (with CRC when `check_crc_on_recover`); the log ends at
    `end_offset`; `bytes_truncated` bytes of a damaged tail were cut off and
    `files_deleted` removed (only never-written pre-allocated files); `stop_reason`
    says where the walk ended. `queues_truncated` ConsumeQueues lost units pointing
    past the end, `index_files_dropped` were newer than the checkpoint, and
    `records_dispatched` records were (re)dispatched to queues and index.
    """

    abnormal: bool = False
    start_offset: int = 0
    end_offset: int = 0
    records_checked: int = 0
    bytes_truncated: int = 0
    files_deleted: List[str] = field(default_factory=list)
    stop_reason: str = ""
    queues_truncated: int = 0
    index_files_dropped: List[str] = field(default_factory=list)
    records_dispatched: int = 0

    @property
    def changed_anything(self) -> bool:
        return bool(self.bytes_truncated or self.files_deleted or self.queues_truncated
                    or self.index_files_dropped)

    def summary(self) -> str:
        kind = ("with the abort file present (a crash, or a writer still running)"
                if self.abnormal else "after a clean shutdown")
        return (
            f"recovered {kind}: walked {self.records_checked} records from offset "
            f"{self.start_offset}, log ends at {self.end_offset} ({self.stop_reason or 'end'}); "
            f"cut {self.bytes_truncated} bytes, deleted {len(self.files_deleted)} files, "
            f"repaired {self.queues_truncated} queues, dropped "
            f"{len(self.index_files_dropped)} index files, dispatched "
            f"{self.records_dispatched} records"
        )


def abnormal_start_file(commitlog, min_timestamp: int) -> int:
    """Index of the CommitLog file abnormal recovery starts from: from the newest file
    backwards, the first whose first record is a message stored at or before
    `min_timestamp` (the checkpoint minus a margin); the first file otherwise."""
    files = commitlog.queue.files
    for index in range(len(files) - 1, -1, -1):
        fields, reason = codec.scan_one(files[index].ptr, commitlog.file_size, 0)
        if reason == 0:
            stored = fields[codec.F_STORE_TIMESTAMP]
            if stored != 0 and stored <= min_timestamp:
                return index
    return 0
