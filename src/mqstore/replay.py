"""Reading stored messages back in CommitLog order, with filters, and feeding them to
a callable or another store (reprocessing, migration).

    from mqstore.replay import iter_messages
    for msg in iter_messages("/data/store", topic="orders", since="2026-11-23T10:00Z"):
        ...
"""

from __future__ import annotations

import datetime
import importlib
import os
import sys
import time
from typing import Callable, Iterable, Iterator, Optional, Set, Union

from .config import StoreConfig
from .errors import MQStoreError
from .message import MessageExt
from .reader import parse_tags
from .store import MessageStore
from .storedir import detect_config

TimeLike = Union[int, float, str, datetime.datetime, None]


def parse_time(value: TimeLike) -> Optional[int]:
    """Milliseconds since the epoch from an int (ms), an aware or naive (local)
    datetime, or a string: digits are epoch milliseconds, anything else ISO-8601
    (``2026-11-23T10:00:00Z``, ``2026-11-23 10:00+01:00``, ``2026-11-23``; no zone
    means local time). Raises ValueError for anything else."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise ValueError(f"not a time: {value!r}")
    if isinstance(value, (int, float)):
        return int(value)
    if isinstance(value, datetime.datetime):
        return int(value.timestamp() * 1000)
    if not isinstance(value, str):
        raise ValueError(f"not a time: {value!r}")
    text = value.strip()
    if text.lstrip("-").isdigit():
        return int(text)
    iso = text[:-1] + "+00:00" if text.endswith(("Z", "z")) else text
    try:
        moment = datetime.datetime.fromisoformat(iso)
    except ValueError:
        raise ValueError(
            f"time {value!r} is neither epoch milliseconds nor ISO-8601 (like 2026-11-23T10:00:00Z)"
        ) from None
    return int(moment.timestamp() * 1000)


def open_readonly(path: str, config: Optional[StoreConfig] = None, **overrides) -> MessageStore:
    """Open any RocketMQ-format store directory read-only (no lock, nothing written),
    with file sizes detected from its files unless `config` is given."""
    path = os.fspath(path)
    if not os.path.isdir(path):
        raise MQStoreError(f"{path}: no such store directory")
    if not os.path.isdir(os.path.join(path, "commitlog")):
        raise MQStoreError(f"{path}: not a store directory (no commitlog/)")
    if config is None:
        config = detect_config(path, **overrides)
    elif overrides:
        config = config.replace(**overrides)
    return MessageStore.open_readonly(path, config)


def start_offset(
    store: MessageStore,
    topic: Optional[str] = None,
    queue_id: Optional[int] = None,
    from_offset: Optional[int] = None,
    since: Optional[int] = None,
) -> int:
    """Where a CommitLog walk for these filters may start: with a topic and a queue,
    `from_offset` is a queue offset and `since` uses that queue's times; otherwise
    `from_offset` is a CommitLog offset and `since` skips each whole CommitLog file
    whose next file's first record is older than `since`."""
    low = store.min_commitlog_offset()
    if topic is not None and queue_id is not None:
        offset = None
        if from_offset is not None:
            offset = max(from_offset, store.min_offset(topic, queue_id))
        if since is not None:
            by_time = store.offset_by_time(topic, queue_id, since)
            offset = by_time if offset is None else max(offset, by_time)
        if offset is None:
            offset = store.min_offset(topic, queue_id)
        queue = store._consume_queues.get((topic, queue_id))
        unit = queue.unit(offset) if queue is not None else None
        if unit is None:
            return store.max_commitlog_offset()
        return max(low, unit[0])
    start = low if from_offset is None else max(low, from_offset)
    if since is not None:
        files = store.commitlog.queue.files
        for current, following in zip(files, files[1:]):
            if following.file_from_offset <= start:
                continue
            first = store.look_by_offset(following.file_from_offset)
            # records are in store-time order (one writer, a clock that rarely steps
            # back): a file is skipped only when the next one starts before `since`
            if first is None or first.store_timestamp >= since:
                break
            start = max(start, current.file_from_offset + store.commitlog.file_size)
    return start


def iter_messages(
    path,
    topic: Union[str, Iterable[str], None] = None,
    since: TimeLike = None,
    until: TimeLike = None,
    *,
    queue_id: Optional[int] = None,
    from_offset: Optional[int] = None,
    tags: Optional[str] = None,
    key: Optional[str] = None,
    config: Optional[StoreConfig] = None,
) -> Iterator[MessageExt]:
    """The messages of the store at `path` in CommitLog order, read-only, filtered:
    `topic` (one or several), `queue_id`, store time in [`since`, `until`] (ms, ISO
    string or datetime), `tags` ("a || b"), `key` (a KEYS entry or the UNIQ_KEY), and
    `from_offset` (a queue offset with one topic and a queue id, else a CommitLog
    offset). The store is closed when the generator finishes or is closed.
    Raises MQStoreError when `path` is not a store, ValueError for a bad filter,
    RecordError on reaching a damaged record."""
    topics: Optional[Set[str]]
    if topic is None:
        topics = None
    elif isinstance(topic, str):
        topics = {topic}
    else:
        topics = set(topic)
    since_ms, until_ms = parse_time(since), parse_time(until)
    tag_filter = parse_tags(tags)
    wanted_tags = tag_filter[1] if tag_filter else None
    store = open_readonly(path, config)
    try:
        single = next(iter(topics)) if topics and len(topics) == 1 else None
        offset = start_offset(store, single, queue_id, from_offset, since_ms)
        last_file_start = None
        for msg in store.iter_commitlog(offset):
            if topics is not None and msg.topic not in topics:
                continue
            if queue_id is not None and msg.queue_id != queue_id:
                continue
            stamp = msg.store_timestamp
            if since_ms is not None and stamp < since_ms:
                continue
            if until_ms is not None and stamp > until_ms:
                # past `until`: stop at the next file boundary (times are ordered
                # by file, nearly by record)
                file_start = msg.commitlog_offset - msg.commitlog_offset % (
                    store.commitlog.file_size
                )
                if last_file_start is not None and file_start > last_file_start:
                    break
                last_file_start = file_start
                continue
            if wanted_tags is not None and msg.tags not in wanted_tags:
                continue
            if key is not None and key not in msg.keys and msg.uniq_key != key:
                continue
            yield msg
    finally:
        store.close()


def load_callable(spec: str) -> Callable[[MessageExt], object]:
    """The function named by ``python:module:function`` (or ``module:function``);
    the current directory is importable. Raises ValueError when it cannot be found."""
    text = spec[len("python:") :] if spec.startswith("python:") else spec
    module_name, sep, attr = text.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"--to {spec!r}: expected python:module:function")
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"--to {spec!r}: cannot import {module_name}: {exc}") from None
    target = module
    for part in attr.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise ValueError(f"--to {spec!r}: {module_name} has no {attr}") from None
    if not callable(target):
        raise ValueError(f"--to {spec!r}: {attr} is not callable")
    return target


class RateLimiter:
    """Spaces calls to at most `rate` per second (no limit when rate is None)."""

    def __init__(self, rate: Optional[float]) -> None:
        self.interval = 1.0 / rate if rate else 0.0
        self.started = time.monotonic()
        self.count = 0

    def wait(self) -> None:
        if not self.interval:
            return
        due = self.started + self.count * self.interval
        self.count += 1
        delay = due - time.monotonic()
        if delay > 0:
            time.sleep(delay)


def replay(
    messages: Iterable[MessageExt],
    sink: Callable[[MessageExt], object],
    rate: Optional[float] = None,
    on_message: Optional[Callable[[MessageExt], None]] = None,
) -> int:
    """Hand every message to `sink`, at most `rate` per second; returns how many."""
    limiter = RateLimiter(rate)
    count = 0
    for msg in messages:
        limiter.wait()
        sink(msg)
        count += 1
        if on_message is not None:
            on_message(msg)
    return count


def store_sink(target: MessageStore) -> Callable[[MessageExt], object]:
    """A sink that puts each message into `target` as it was stored (same topic,
    queue id, properties, hosts and timestamps; new offsets and store time).
    Raises MQStoreError when a put fails."""

    def put(msg: MessageExt) -> None:
        result = target.put(msg, msg.queue_id)
        if result.commitlog_offset < 0:
            raise MQStoreError(
                f"put of CommitLog offset {msg.commitlog_offset} into {target.path} failed: "
                f"{result.status.name} {getattr(result, 'error', '') or ''}".rstrip()
            )

    return put
