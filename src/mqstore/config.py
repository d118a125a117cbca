"""StoreConfig: every setting of the store, with RocketMQ's names and defaults."""

from __future__ import annotations

import dataclasses
import re
import time
from dataclasses import dataclass, field
from typing import Callable, List, Optional

ASYNC_FLUSH = "ASYNC_FLUSH"
SYNC_FLUSH = "SYNC_FLUSH"
CQ_STORE_UNIT_SIZE = 20

DEFAULT_DELAY_LEVELS = "1s 5s 10s 30s 1m 2m 3m 4m 5m 6m 7m 8m 9m 10m 20m 30m 1h 2h"
_DELAY_UNITS_MS = {"s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}


def wall_clock_ms() -> int:
    """Milliseconds since the epoch: the default store clock."""
    return time.time_ns() // 1_000_000


def parse_delay_levels(text: str) -> List[int]:
    """Parse RocketMQ's `message_delay_level` ("1s 5s ... 2h") into milliseconds per level.

    Only an integer followed by one of s, m, h, d is accepted, as in RocketMQ.
    Raises ValueError for anything else.
    """
    levels = []
    for item in text.split():
        match = re.fullmatch(r"([0-9]+)([smhd])", item)
        if not match:
            raise ValueError(
                f"message_delay_level: {item!r} is not an integer followed by s, m, h or d"
            )
        levels.append(int(match.group(1)) * _DELAY_UNITS_MS[match.group(2)])
    if not levels:
        raise ValueError("message_delay_level: no levels given")
    return levels


def parse_delete_when(text: str) -> List[int]:
    """Parse `delete_when` ("04" or "01;13") into hours; ValueError when malformed."""
    hours = []
    for part in text.split(";"):
        if not re.fullmatch(r"[0-9]{1,2}", part.strip()) or not 0 <= int(part) <= 23:
            raise ValueError(f"delete_when: {part!r} is not an hour 00..23 (use '04' or '01;13')")
        hours.append(int(part))
    return hours


@dataclass
class StoreConfig:
    """Settings of a MessageStore. Names are RocketMQ's MessageStoreConfig in snake_case.

    Durability (`flush_disk_type`):

    - ``ASYNC_FLUSH`` (default): `put` returns once the record is in the mapped file.
      A killed process loses nothing (the kernel keeps the pages); an OS crash or power
      loss may lose what was written since the last flush (at most about
      `flush_commitlog_thorough_interval` ms), never leaving a torn record visible
      after recovery.
    - ``SYNC_FLUSH``: `put` returns PUT_OK only after msync covered the record
      (group commit: concurrent putters share one flush). Nothing acknowledged is lost
      by a crash of the process or the machine.
    """

    mapped_file_size_commitlog: int = 1024 * 1024 * 1024
    mapped_file_size_consume_queue: int = 300_000 * CQ_STORE_UNIT_SIZE
    max_hash_slot_num: int = 5_000_000
    max_index_num: int = 5_000_000 * 4
    max_message_size: int = 4 * 1024 * 1024
    flush_disk_type: str = ASYNC_FLUSH
    flush_interval_commitlog: int = 500
    flush_commitlog_least_pages: int = 4
    flush_commitlog_thorough_interval: int = 10_000
    flush_interval_consume_queue: int = 1000
    flush_consume_queue_least_pages: int = 2
    flush_consume_queue_thorough_interval: int = 60_000
    sync_flush_timeout: int = 5000
    file_reserved_time: int = 72
    delete_when: str = "04"
    #: Percent of the store's partition in use above which expired CommitLog files are
    #: deleted at any hour, not only at `delete_when` (RocketMQ: clamped to 10..95).
    disk_max_used_space_ratio: int = 75
    #: Percent above which the store is marked disk full: puts return
    #: SERVICE_NOT_AVAILABLE until usage drops (RocketMQ 5 `diskSpaceWarningLevelRatio`,
    #: 4.9.8 system property, default 90; valid 35..90).
    disk_space_warning_level_ratio: int = 90
    #: Percent above which cleanup deletes the oldest CommitLog files even when they
    #: have not expired (RocketMQ `diskSpaceCleanForciblyRatio`, default 85; 30..85).
    disk_space_clean_forcibly_ratio: int = 85
    #: Whether cleanup may delete unexpired files above the forcible ratio.
    clean_file_forcibly_enable: bool = True
    #: How often (ms) the store's scheduler thread runs cleanup and checks disk use.
    clean_resource_interval: int = 10_000
    #: Pause (ms) between two CommitLog file deletions of one cleanup pass.
    delete_commit_log_files_interval: int = 100
    #: Pause (ms) after a ConsumeQueue that had files deleted.
    delete_consume_queue_files_interval: int = 100
    #: At most this many CommitLog files are deleted per cleanup pass.
    delete_file_batch_max: int = 10
    #: A file deleted while readers hold it is kept (unreadable to new readers) and
    #: retried; after this many ms it is unlinked regardless (see docs/retention.md).
    destroy_mapped_file_interval_forcibly: int = 120_000
    #: Log a one-line `stats()` summary every this many ms (0: never).
    stats_log_interval: int = 0
    message_delay_level: str = DEFAULT_DELAY_LEVELS
    check_crc_on_recover: bool = True
    message_index_enable: bool = True
    max_msgs_num_batch: int = 64
    max_transfer_bytes_on_message_in_memory: int = 256 * 1024
    max_transfer_count_on_message_in_memory: int = 32
    #: Touch every page of a new CommitLog file in the background before the writer
    #: reaches it. Off by default, as RocketMQ's `warmMapedFileEnable`: dirtying a
    #: whole file of zero pages ahead of the writer sets off writeback that slows 4 KiB
    #: writes 3-6x (docs/performance.md, bench/bench_warm.py).
    warm_mapped_file_enable: bool = False
    #: Create the next CommitLog file in the background, ahead of need.
    preallocate_mapped_file: bool = True
    #: `ip:port` (IPv4) or `[ipv6]:port` written as STOREHOSTADDRESS and used in msg ids.
    store_host: str = "127.0.0.1:10911"
    #: Born host for messages that do not name one; None means the store host.
    born_host: Optional[str] = None
    #: Create a topic (with `default_topic_queue_nums` queues) on its first send, as a
    #: development broker does; off, sending to an unknown topic is an error.
    auto_create_topic_enable: bool = True
    default_topic_queue_nums: int = 4
    #: Deliver delayed messages when due (RocketMQ does on a master). Turn off to open
    #: a store for inspection or rebuilding without adding records to it.
    schedule_delivery_enable: bool = True
    #: Check back transactions left in doubt (off: halves stay as they are).
    transaction_check_enable: bool = True
    #: How often the schedule service saves `config/delayOffset.json` while idle (ms);
    #: it also saves after every batch of deliveries and at close.
    flush_delay_offset_interval: int = 10_000
    #: A transaction's half message is checked back after this long in doubt (ms).
    transaction_timeout: int = 6_000
    #: Check-backs per transaction before it is dropped to TRANS_CHECK_MAX_TIME_TOPIC.
    transaction_check_max: int = 15
    #: Interval of the transaction check pass (ms).
    transaction_check_interval: int = 60_000
    #: Store clock in milliseconds since the epoch; inject one to reproduce exact bytes.
    clock: Callable[[], int] = field(default=wall_clock_ms, compare=False, repr=False)
    #: Disk usage of the partition holding a directory, ``f(path) -> fraction`` in
    #: 0.0..1.0 (negative: unknown); None measures it with statvfs as RocketMQ does.
    #: Inject one to test the disk-space policy without filling a disk.
    disk_usage: Optional[Callable[[str], float]] = field(default=None, compare=False,
                                                         repr=False)

    def __post_init__(self) -> None:
        from .message import encode_host  # local: message imports config

        positive = (
            "mapped_file_size_commitlog",
            "mapped_file_size_consume_queue",
            "max_hash_slot_num",
            "max_index_num",
            "max_message_size",
            "flush_interval_commitlog",
            "flush_interval_consume_queue",
            "sync_flush_timeout",
            "max_msgs_num_batch",
            "default_topic_queue_nums",
            "flush_delay_offset_interval",
            "transaction_timeout",
            "transaction_check_max",
            "transaction_check_interval",
            "clean_resource_interval",
            "delete_file_batch_max",
        )
        for name in positive:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        for name in (
            "flush_commitlog_least_pages",
            "flush_consume_queue_least_pages",
            "flush_commitlog_thorough_interval",
            "flush_consume_queue_thorough_interval",
            "delete_commit_log_files_interval",
            "delete_consume_queue_files_interval",
            "destroy_mapped_file_interval_forcibly",
            "stats_log_interval",
        ):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
        if self.mapped_file_size_commitlog > 2**31 - 1:
            raise ValueError(
                "mapped_file_size_commitlog must be below 2 GiB (TOTALSIZE of the "
                f"end-of-file record is an i32), got {self.mapped_file_size_commitlog}"
            )
        if self.mapped_file_size_commitlog < 4096:
            raise ValueError("mapped_file_size_commitlog must be at least 4096 bytes")
        # RocketMQ's getter rounds the ConsumeQueue file size up to whole units.
        unit = CQ_STORE_UNIT_SIZE
        self.mapped_file_size_consume_queue = -(-self.mapped_file_size_consume_queue // unit) * unit
        if self.flush_disk_type not in (ASYNC_FLUSH, SYNC_FLUSH):
            raise ValueError(
                f"flush_disk_type must be {ASYNC_FLUSH!r} or {SYNC_FLUSH!r}, "
                f"got {self.flush_disk_type!r}"
            )
        if not isinstance(self.file_reserved_time, int) or self.file_reserved_time < 0:
            raise ValueError(
                f"file_reserved_time must be >= 0 hours, got {self.file_reserved_time!r}"
            )
        if not isinstance(self.disk_max_used_space_ratio, int) or not (
            10 <= self.disk_max_used_space_ratio <= 95
        ):
            raise ValueError(
                f"disk_max_used_space_ratio must be 10..95, got {self.disk_max_used_space_ratio!r}"
            )
        for name, low, high in (
            ("disk_space_warning_level_ratio", 35, 90),
            ("disk_space_clean_forcibly_ratio", 30, 85),
        ):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
                raise ValueError(f"{name} must be {low}..{high} (percent), got {value!r}")
        if not isinstance(self.delete_when, str):
            raise ValueError(f"delete_when must be a str like '04' or '01;13', "
                             f"got {self.delete_when!r}")
        parse_delete_when(self.delete_when)
        parse_delay_levels(self.message_delay_level)
        for name in ("store_host", "born_host"):
            value = getattr(self, name)
            if value is None and name == "born_host":
                continue
            try:
                encode_host(value)
            except (TypeError, ValueError) as exc:
                raise ValueError(f"{name}: {exc}") from None
        if not callable(self.clock):
            raise ValueError("clock must be a callable returning milliseconds")
        if self.disk_usage is not None and not callable(self.disk_usage):
            raise ValueError("disk_usage must be None or a callable f(path) -> fraction used")

    @property
    def delay_levels_ms(self) -> List[int]:
        """Delay per level in ms; level n (1-based) is element n-1."""
        return parse_delay_levels(self.message_delay_level)

    def replace(self, **changes) -> StoreConfig:
        """A copy with some fields changed; unknown names raise TypeError."""
        return dataclasses.replace(self, **changes)
