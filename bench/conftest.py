"""Fixtures for the storage-core benchmarks (``pytest bench/ --benchmark-only``): stores
on the real disk with 1 GiB CommitLog files, whose pages the timed rounds will write
are touched beforehand with the allocator and dispatcher idle; deleted afterwards.

The default ``pytest`` run never collects this directory (pyproject's testpaths is
["tests"]). Store files go under $MQSTORE_BENCH_DIR, default this directory; never
use a tmpfs, whose numbers would not be a disk's.
"""

from __future__ import annotations

import os
import shutil
import tempfile

import pytest

# pytest's default (prepend) import mode puts this directory on sys.path.
from bench_append import FILE_SIZE, TOPIC, make_messages, touch, wait_until_idle
from mqstore import Message, MessageStore

HERE = os.path.dirname(os.path.abspath(__file__))


@pytest.fixture(scope="session")
def bench_dir():
    """A temporary directory on the real disk for the whole session."""
    path = tempfile.mkdtemp(prefix=".mqstore-bench-", dir=os.environ.get("MQSTORE_BENCH_DIR", HERE))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def ready_store(bench_dir):
    """Factory: ``ready_store(touch_bytes, **overrides)`` opens a new store with 1 GiB
    CommitLog files, puts one message (creating the first file), touches the next
    `touch_bytes` bytes of it and waits for the allocator and the dispatcher to go idle.
    Every store is closed and deleted at teardown."""
    opened = []

    def make(touch_bytes: int, **overrides) -> MessageStore:
        if touch_bytes > FILE_SIZE - (1 << 20):
            raise ValueError(f"{touch_bytes} bytes do not fit in one CommitLog file")
        path = tempfile.mkdtemp(prefix="store-", dir=bench_dir)
        store = MessageStore(path, mapped_file_size_commitlog=FILE_SIZE, **overrides)
        opened.append((store, path))
        store.put(Message(TOPIC, b"first"))
        current = store.commitlog.queue.last_file()
        touch(current, current.wrote_position, touch_bytes)
        wait_until_idle(store)
        return store

    yield make
    for store, path in opened:
        store.close()
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def messages():
    """Factory: ``messages(body_size, count)``, distinct Messages with random bodies."""
    return make_messages
