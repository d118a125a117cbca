"""Facts about a store directory read straight from its files, without opening a
store: file sizes (to build a matching StoreConfig), the abort marker, the lock."""

from __future__ import annotations

import os
from typing import Dict, List, Optional

from .config import StoreConfig
from .index import index_file_size
from .lockfile import _holder_pid

COMMITLOG_DIR = "commitlog"
CONSUMEQUEUE_DIR = "consumequeue"
INDEX_DIR = "index"


def numbered_files(directory: str) -> List[str]:
    """Names of the files in `directory` named by a number (mapped files), sorted
    by that number; [] when the directory is missing."""
    try:
        names = os.listdir(directory)
    except (FileNotFoundError, NotADirectoryError):
        return []
    return sorted(
        (
            n
            for n in names
            if n.isascii() and n.isdigit() and os.path.isfile(os.path.join(directory, n))
        ),
        key=int,
    )


def queue_dirs(store_path: str) -> Dict[tuple, str]:
    """(topic, queue id) -> directory of every ConsumeQueue on disk."""
    root = os.path.join(store_path, CONSUMEQUEUE_DIR)
    found = {}
    try:
        topics = sorted(os.listdir(root))
    except (FileNotFoundError, NotADirectoryError):
        return found
    for topic in topics:
        topic_dir = os.path.join(root, topic)
        if not os.path.isdir(topic_dir):
            continue
        for name in sorted(os.listdir(topic_dir)):
            path = os.path.join(topic_dir, name)
            if name.isascii() and name.isdigit() and os.path.isdir(path):
                found[(topic, int(name))] = path
    return found


def _first_size(paths) -> Optional[int]:
    for path in paths:
        try:
            return os.path.getsize(path)
        except OSError:
            continue
    return None


def detected_sizes(store_path: str) -> Dict[str, int]:
    """The file-size settings the files of `store_path` were written with:
    CommitLog and ConsumeQueue file sizes from the first file found, index slot and
    entry counts from the index file size (assuming RocketMQ's 4 entries per slot)."""
    sizes: Dict[str, int] = {}
    commitlog = os.path.join(store_path, COMMITLOG_DIR)
    size = _first_size(os.path.join(commitlog, n) for n in numbered_files(commitlog))
    if size and size >= 4096:
        sizes["mapped_file_size_commitlog"] = size
    for directory in queue_dirs(store_path).values():
        size = _first_size(os.path.join(directory, n) for n in numbered_files(directory))
        if size and size % 20 == 0:
            sizes["mapped_file_size_consume_queue"] = size
            break
    index = os.path.join(store_path, INDEX_DIR)
    size = _first_size(os.path.join(index, n) for n in numbered_files(index))
    if size and (size - 40) % 84 == 0 and size > 40:
        slots = (size - 40) // 84
        if index_file_size(slots, slots * 4) == size:
            sizes["max_hash_slot_num"] = slots
            sizes["max_index_num"] = slots * 4
    return sizes


def detect_config(store_path: str, **overrides) -> StoreConfig:
    """A StoreConfig whose file sizes match the files in `store_path` (RocketMQ's
    defaults where there is no file to measure); `overrides` win."""
    settings = detected_sizes(store_path)
    settings.update(overrides)
    return StoreConfig(**settings)


def abort_present(store_path: str) -> bool:
    """Whether `<store>/abort` exists: the last writer did not shut down cleanly (or
    one is running now)."""
    return os.path.exists(os.path.join(store_path, "abort"))


def lock_holder(store_path: str) -> Optional[int]:
    """The pid of a live process holding the store's lock (a writer has it open), or
    None when nobody holds it or there is no lock file. Takes no lock itself."""
    path = os.path.join(store_path, "lock")
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        return _holder_pid(fd)
    finally:
        os.close(fd)
