"""Expiry cleanup and the disk-space policy (RocketMQ's CleanCommitLogService and
CleanConsumeQueueService, format doc §16), and the store's scheduler thread that runs
them with the statistics sampler."""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, List, Optional

from .config import parse_delete_when
from .diskspace import partition_used_ratio

log = logging.getLogger(__name__)

HOUR_MS = 3_600_000
#: RocketMQ checks the disk every 10 s (and mqstore also at every CommitLog file roll)
DISK_CHECK_INTERVAL_MS = 10_000


@dataclass
class CleanupResult:
    """What one cleanup pass did. `reason` is why CommitLog files were considered:
    "time" (a `delete_when` hour), "space" (disk use above
    `disk_max_used_space_ratio`), "manual" (`delete_expired_files()`), or "" when no
    condition held; `forced` when unexpired files could go (disk use above
    `disk_space_clean_forcibly_ratio`)."""

    reason: str = ""
    forced: bool = False
    commitlog_files: List[str] = field(default_factory=list)
    consume_queue_files: List[str] = field(default_factory=list)
    index_files: List[str] = field(default_factory=list)
    #: files whose deletion waits for readers to let go (retried on the next pass)
    pending_files: List[str] = field(default_factory=list)
    commitlog_min_offset: int = 0
    disk_used_ratio: float = 0.0

    @property
    def deleted(self) -> List[str]:
        """Every file deleted, CommitLog first."""
        return self.commitlog_files + self.consume_queue_files + self.index_files


class Scheduler:
    """One daemon thread running periodic tasks (cleanup, disk check, stats) on real
    (monotonic) time; the store clock only decides what the tasks do. Stopped by
    `shutdown()`, which also interrupts a task's pauses (`wait`)."""

    def __init__(self, name: str = "mqstore-scheduler") -> None:
        self._tasks: List[list] = []  # [next due (monotonic s), interval s, fn, name]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def add(
        self,
        name: str,
        interval_ms: int,
        fn: Callable[[], object],
        first_delay_ms: Optional[int] = None,
    ) -> None:
        delay = interval_ms if first_delay_ms is None else first_delay_ms
        self._tasks.append([time.monotonic() + delay / 1000, interval_ms / 1000, fn, name])

    def start(self) -> None:
        self._thread.start()

    def wait(self, seconds: float) -> bool:
        """Pause inside a task; True when the scheduler is stopping."""
        return self._stop.wait(seconds) if seconds > 0 else self._stop.is_set()

    def _run(self) -> None:
        while not self._stop.is_set():
            now = time.monotonic()
            for task in self._tasks:
                if task[0] <= now and not self._stop.is_set():
                    try:
                        task[2]()
                    except Exception:  # the thread must survive; say what failed
                        log.exception("scheduled task %s failed", task[3])
                    task[0] = max(task[0] + task[1], time.monotonic())
            due = min((task[0] for task in self._tasks), default=now + 1)
            self._stop.wait(max(0.0, due - time.monotonic()))

    def shutdown(self) -> None:
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join()


class RetentionService:
    """Deletes expired CommitLog files and then the ConsumeQueue and index files wholly
    below the new CommitLog minimum, and keeps the store's disk-full mark.

    Policy (RocketMQ 4.9.8): a pass considers CommitLog files when the local hour of
    the store clock is in `delete_when`, or disk use is above
    `disk_max_used_space_ratio` (or cannot be measured), or it was asked for
    (`run(manual=True)`). From the oldest file, never the last one, a file goes when
    `now >= mtime + file_reserved_time` hours, or regardless of age when disk use is
    above `disk_space_clean_forcibly_ratio` (with `clean_file_forcibly_enable`); the
    first file that stays ends the walk. mqstore adds one rule: a file the dispatcher
    has not finished is never deleted (its messages would never reach a queue).
    """

    def __init__(self, store, scheduler: Optional[Scheduler] = None) -> None:
        self.store = store
        self.config = config = store.config
        self.clock = config.clock
        self.scheduler = scheduler
        self._hours = frozenset(parse_delete_when(config.delete_when))
        self._measure = config.disk_usage or partition_used_ratio
        self._lock = threading.Lock()  # one pass at a time
        self._last_commitlog_min = -1
        #: last disk use measured (fraction; negative: unknown)
        self.disk_used_ratio = 0.0
        #: why puts are refused, or None
        self.disk_full_reason: Optional[str] = None
        self.clean_immediately = False
        self.files_deleted = 0
        self.last_result: Optional[CleanupResult] = None

    # -- disk --------------------------------------------------------------------

    def _paths(self) -> List[str]:
        store_path = self.store.path
        commitlog = os.path.join(store_path, "commitlog")
        paths = [commitlog]
        try:
            if os.stat(commitlog).st_dev != os.stat(store_path).st_dev:
                paths.append(store_path)  # queues and index on another partition
        except OSError:
            pass
        return paths

    def check_disk(self) -> float:
        """Measure disk use and update the disk-full mark and the clean-at-once flag
        (RocketMQ's isSpaceFull / isSpaceToDelete). Returns the fraction in use (the
        larger of the CommitLog's and the queues' partitions)."""
        config = self.config
        ratio = max(self._measure(path) for path in self._paths())
        self.disk_used_ratio = ratio
        warning = config.disk_space_warning_level_ratio / 100
        forcibly = config.disk_space_clean_forcibly_ratio / 100
        if ratio > warning:
            reason = (
                f"disk full: {ratio:.1%} of the store's partition is used, more than "
                f"disk_space_warning_level_ratio {config.disk_space_warning_level_ratio}%;"
                " writes resume once cleanup brings it below"
            )
            if self.disk_full_reason is None:
                log.error("%s: %s", self.store.path, reason)
            self._set_disk_full(reason)
            self.clean_immediately = True
        else:
            self.clean_immediately = ratio > forcibly
            if self.disk_full_reason is not None:
                log.warning(
                    "%s: disk use %.1f%%, writes accepted again", self.store.path, ratio * 100
                )
                self._set_disk_full(None)
        return ratio

    def _set_disk_full(self, reason: Optional[str]) -> None:
        if (reason is None) != (self.disk_full_reason is None):
            self.disk_full_reason = reason
            self.store._select_append()
        else:
            self.disk_full_reason = reason

    # -- cleanup -------------------------------------------------------------------

    def is_time_to_delete(self, now_ms: int) -> bool:
        return time.localtime(now_ms / 1000).tm_hour in self._hours

    def run(self, manual: bool = False, force: bool = False) -> CleanupResult:
        """One pass: CommitLog files if a condition holds (see the class), then
        ConsumeQueue and index files below the CommitLog minimum. `force` deletes
        unexpired files too, as above the forcible disk ratio."""
        with self._lock:
            result = self._run(manual, force)
        self.last_result = result
        self.files_deleted += len(result.deleted)
        if result.deleted:
            log.info(
                "%s: cleanup (%s%s) deleted %d CommitLog, %d ConsumeQueue, %d index "
                "files; CommitLog now starts at %d",
                self.store.path,
                result.reason or "retry",
                ", forced" if result.forced else "",
                len(result.commitlog_files),
                len(result.consume_queue_files),
                len(result.index_files),
                result.commitlog_min_offset,
            )
        return result

    def _run(self, manual: bool, force: bool) -> CleanupResult:
        config = self.config
        now = self.clock()
        ratio = self.check_disk()
        result = CleanupResult(disk_used_ratio=ratio)
        space = ratio < 0 or ratio > config.disk_max_used_space_ratio / 100
        if self.is_time_to_delete(now):
            result.reason = "time"
        elif space:
            result.reason = "space"
        elif manual:
            result.reason = "manual"
        result.forced = force or (config.clean_file_forcibly_enable and self.clean_immediately)
        commitlog = self.store.commitlog
        first = commitlog.queue.first_file()
        if result.reason or (first is not None and not first.is_available):
            # (a first file an earlier pass could not finish is retried at every pass,
            # like RocketMQ's redeleteHangedFile)
            self._delete_commitlog_files(now, result)
        result.commitlog_min_offset = minimum = commitlog.min_offset()
        if minimum > self._last_commitlog_min or result.pending_files:
            self._delete_logic_files(minimum, result)
            if not result.pending_files:
                self._last_commitlog_min = minimum
        if result.commitlog_files:
            self.check_disk()  # space came back: accept writes now, not in 10 s
        return result

    def _delete_commitlog_files(self, now: int, result: CleanupResult) -> None:
        config = self.config
        commitlog = self.store.commitlog
        queue = commitlog.queue
        file_size = commitlog.file_size
        reserved_ms = config.file_reserved_time * HOUR_MS
        dispatcher = self.store.dispatcher
        pause = config.delete_commit_log_files_interval / 1000
        for mapped in list(queue.files)[:-1]:  # never the last (current) file
            if len(result.commitlog_files) >= config.delete_file_batch_max:
                break
            if mapped.file_from_offset + file_size > dispatcher.reput_from_offset:
                break  # not fully dispatched yet
            if mapped.is_available:  # (else: a deletion already under way)
                if not result.reason:
                    break  # a pass only retrying a pending first file
                try:
                    mtime_ms = os.stat(mapped.path).st_mtime_ns // 1_000_000
                except OSError:
                    mtime_ms = 0
                if now < mtime_ms + reserved_ms and not result.forced:
                    break  # the first file that stays ends the walk: no holes
            if not mapped.try_destroy(config.destroy_mapped_file_interval_forcibly, now):
                result.pending_files.append(mapped.path)
                break
            with commitlog._lock:  # no file is appended while the list is replaced
                queue.drop_files([mapped])
            result.commitlog_files.append(mapped.path)
            if self.scheduler is not None and self.scheduler.wait(pause):
                break  # closing
            now = self.clock()

    def _delete_logic_files(self, commitlog_min: int, result: CleanupResult) -> None:
        config = self.config
        interval = config.destroy_mapped_file_interval_forcibly
        pause = config.delete_consume_queue_files_interval / 1000
        for queue in self.store._consume_queues_snapshot():
            deleted, held = queue.delete_files_below(commitlog_min, interval, self.clock())
            result.consume_queue_files.extend(deleted)
            if held:
                result.pending_files.append(held)
            if deleted and self.scheduler is not None and self.scheduler.wait(pause):
                return
        index = self.store.index
        if index is not None:
            deleted, held = index.delete_files_below(commitlog_min, interval, self.clock())
            result.index_files.extend(deleted)
            if held:
                result.pending_files.append(held)
