"""pytest plugin for code that uses mqstore (loaded automatically once mqstore is
installed, through the ``pytest11`` entry point). See docs/testing.md.

Fixtures:

- ``mq_store``: a TestStore (a MessageStore) in the test's tmp_path, with small files,
  closed after the test;
- ``mq_store_factory``: ``mq_store_factory(name="store", **overrides)`` opens more
  stores, or stores with other settings;
- ``mq_store_options``: the StoreConfig settings every store of a test starts from;
  override this fixture in a conftest.py to change them for a whole directory;
- ``mq_producer``: a Producer on ``mq_store``;
- ``mq_consumer``: a push consumer on ``mq_store`` that collects what it receives:
  ``mq_consumer.subscribe("Orders")``, then ``mq_consumer.wait_for(3)``.

``store.settle()`` waits until what was put is visible to `get` and
`query_by_key` (dispatch is asynchronous, as in RocketMQ).

``store.reopen()`` closes the store and opens the same directory again, in place: the
object the code under test holds becomes the reopened store.

``--mqstore-keep`` keeps the store directories of failed tests (moved out of
tmp_path, so they survive pytest's cleanup) and prints where they are, for
``mqstore cat DIR`` / ``mqstore verify DIR``.
"""

from __future__ import annotations

import os
import re
import shutil
import threading
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import pytest

from .config import StoreConfig
from .store import MessageStore

#: Small file sizes: the RocketMQ defaults reserve 1 GiB per CommitLog file, 6 MB per
#: ConsumeQueue file and ~420 MB per index file on disk.
SMALL_STORE_OPTIONS: Dict[str, Any] = {
    "mapped_file_size_commitlog": 64 * 1024,
    "mapped_file_size_consume_queue": 20 * 1024,
    "max_hash_slot_num": 512,
    "max_index_num": 2048,
}

_KEEP_OPTION = "--mqstore-keep"
_report_key = pytest.StashKey[Dict[str, pytest.TestReport]]()
_kept_key = pytest.StashKey[List[Tuple[str, str]]]()


class TestStore(MessageStore):
    """A MessageStore that can restart itself (`reopen()`) and wait for dispatch
    (`settle()`)."""

    __test__ = False  # not a test class, whatever pytest's naming rules say

    def settle(self, timeout: float = 5.0) -> None:
        """Wait until everything written is dispatched: in the ConsumeQueues (so `get`
        sees it) and in the index (so `query_by_key` does). Dispatch runs on its own
        thread, as RocketMQ's does, so a read right after `put` may not see the
        message yet. Raises TimeoutError after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while self.dispatcher is not None and self.dispatcher.behind() > 0:
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"{self.path}: {self.dispatcher.behind()} bytes still undispatched "
                    f"after {timeout} s"
                )
            time.sleep(0.001)

    def reopen(self, **overrides) -> TestStore:
        """Close this store (cleanly: checkpoint written, abort file removed) and open
        the same directory again, with `overrides` applied to its config. This object
        becomes the reopened store, and is also returned."""
        self.close()
        config = self.config.replace(**overrides) if overrides else self.config
        MessageStore.__init__(self, self.path, config)
        return self


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("mqstore")
    group.addoption(
        _KEEP_OPTION,
        action="store_true",
        default=False,
        help="keep the mqstore directories of failed tests and print where they are",
    )
    group.addoption(
        "--mqstore-keep-dir",
        default=None,
        metavar="DIR",
        help="where --mqstore-keep puts them (default: <basetemp>/mqstore-kept)",
    )


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    item.stash.setdefault(_report_key, {})[report.when] = report


def _failed(node: pytest.Item) -> bool:
    reports = node.stash.get(_report_key, {})
    return any(r.failed for r in reports.values())


class _StoreFactory:
    """Opens TestStores under one base directory and closes them at teardown."""

    def __init__(self, base: Path, options: Dict[str, Any]) -> None:
        self.base = base
        self.options = options
        self.stores: List[TestStore] = []

    def __call__(
        self, name: str = "store", config: Optional[StoreConfig] = None, **overrides
    ) -> TestStore:
        path = self.base / name
        if config is None:
            settings = dict(self.options)
            settings.update(overrides)
            store = TestStore(path, StoreConfig(**settings))
        else:
            store = TestStore(path, config, **overrides)
        self.stores.append(store)
        return store

    def close_all(self) -> None:
        for store in self.stores:
            store.close()


@pytest.fixture
def mq_store_options() -> Dict[str, Any]:
    """StoreConfig settings for the stores of a test (small files by default)."""
    return dict(SMALL_STORE_OPTIONS)


@pytest.fixture
def mq_store_factory(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    tmp_path_factory: pytest.TempPathFactory,
    mq_store_options: Dict[str, Any],
) -> Iterator[Callable[..., TestStore]]:
    """``factory(name="store", config=None, **overrides)``: a new TestStore in
    ``tmp_path/mqstore/<name>`` (the same name again opens the same directory, once
    the earlier store is closed). All are closed after the test."""
    factory = _StoreFactory(tmp_path / "mqstore", mq_store_options)
    yield factory
    factory.close_all()
    config = request.config
    if config.getoption(_KEEP_OPTION) and _failed(request.node) and factory.base.is_dir():
        _keep(request, factory.base, tmp_path_factory.getbasetemp())


@pytest.fixture
def mq_store(mq_store_factory: Callable[..., TestStore]) -> TestStore:
    """A TestStore (a MessageStore with `reopen()`) in tmp_path, small files, closed
    after the test."""
    return mq_store_factory()


class MessageCollector:
    """A push consumer that collects what it receives: `subscribe(topic, expr)`
    starts it (group ``mq_test_consumer``, from the first offset); `messages` is
    every message received, in arrival order; `wait_for(n)` blocks until n arrived."""

    __test__ = False

    def __init__(self, store: MessageStore, group: str = "mq_test_consumer") -> None:
        from .client import ConsumeFromWhere, PushConsumer

        self.messages: list = []
        self._arrived = threading.Condition()
        self.consumer = PushConsumer(store, group,
                                     consume_from_where=ConsumeFromWhere.FIRST_OFFSET)
        self.consumer.register(self._collect)

    def _collect(self, msgs, context):
        from .client import CONSUME_SUCCESS

        with self._arrived:
            self.messages.extend(msgs)
            self._arrived.notify_all()
        return CONSUME_SUCCESS

    def subscribe(self, topic: str, expression: str = "*") -> MessageCollector:
        """Receive `topic` (filtered by a tag expression or MessageSelector)."""
        self.consumer.subscribe(topic, expression)
        self.consumer.start()
        return self

    def wait_for(self, count: int, timeout: float = 5.0) -> list:
        """The first `count` messages received; TimeoutError if fewer arrive within
        `timeout` seconds."""
        with self._arrived:
            if not self._arrived.wait_for(lambda: len(self.messages) >= count, timeout):
                raise TimeoutError(
                    f"received {len(self.messages)} of {count} messages in {timeout} s"
                )
            return self.messages[:count]

    @property
    def bodies(self) -> list:
        return [m.body for m in self.messages]

    def shutdown(self) -> None:
        self.consumer.shutdown()


@pytest.fixture
def mq_producer(mq_store: TestStore):
    """A Producer (group ``mq_test_producer``) on `mq_store`, shut down after the test."""
    from .client import Producer

    producer = Producer(mq_store, "mq_test_producer")
    yield producer
    producer.shutdown()


@pytest.fixture
def mq_consumer(mq_store: TestStore) -> Iterator[MessageCollector]:
    """A MessageCollector on `mq_store`: ``mq_consumer.subscribe("T")``, then
    ``mq_consumer.wait_for(3)``. Stopped after the test (and by `mq_store.reopen()`,
    which closes the store it reads)."""
    collector = MessageCollector(mq_store)
    yield collector
    collector.shutdown()


def _keep(request: pytest.FixtureRequest, base: Path, basetemp: Path) -> None:
    config = request.config
    root = config.getoption("--mqstore-keep-dir") or basetemp / "mqstore-kept"
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.nodeid)[-120:]
    target = Path(root) / name
    if target.exists():
        shutil.rmtree(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(os.fspath(base), os.fspath(target))
    config.stash.setdefault(_kept_key, []).append((request.node.nodeid, os.fspath(target)))
    for entry in sorted(os.listdir(target)):
        request.node.add_report_section(
            "teardown", "mqstore", f"kept store directory: {target / entry}"
        )


def pytest_terminal_summary(terminalreporter, exitstatus, config: pytest.Config) -> None:
    kept = config.stash.get(_kept_key, [])
    if not kept:
        return
    terminalreporter.section("mqstore: kept store directories of failed tests")
    for nodeid, path in kept:
        terminalreporter.write_line(f"{nodeid}: {path}")
    terminalreporter.write_line("inspect with: mqstore cat DIR / mqstore verify DIR")
