"""Small shared fixtures: a store directory and a factory for stores with small
CommitLog files (64 KiB), closed at teardown."""

from __future__ import annotations

import pytest

from mqstore import MessageStore

SMALL_FILE_SIZE = 64 * 1024
# The default ConsumeQueue and index sizes reserve 6 MB per queue and 420 MB per index
# file on disk (posix_fallocate): hundreds of test stores would fill the disk.
SMALL_LIMITS = {
    "mapped_file_size_consume_queue": 20 * 1024,
    "max_hash_slot_num": 512,
    "max_index_num": 2048,
}


@pytest.fixture
def store_dir(tmp_path):
    """A not-yet-existing store directory inside the test's tmp_path."""
    return tmp_path / "store"


@pytest.fixture
def small_store(store_dir):
    """Factory: ``small_store(path=None, **overrides)`` opens a MessageStore (default
    path `store_dir`, default `mapped_file_size_commitlog` 64 KiB, small ConsumeQueue
    and index files). Every store it opened is closed at teardown (close() is
    idempotent)."""
    opened = []

    def make(path=None, **overrides):
        overrides.setdefault("mapped_file_size_commitlog", SMALL_FILE_SIZE)
        for name, value in SMALL_LIMITS.items():
            overrides.setdefault(name, value)
        store = MessageStore(store_dir if path is None else path, **overrides)
        opened.append(store)
        return store

    yield make
    for store in opened:
        store.close()


@pytest.fixture
def fast_thread_switching():
    """Make the interpreter switch threads far more often than its 5 ms default, so
    concurrency tests interleave threads finely instead of running them in turns."""
    import sys

    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)
    yield
    sys.setswitchinterval(old)
