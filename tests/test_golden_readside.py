"""Reading the golden RocketMQ 4.9.8 stores through MessageStore: every message by
queue, by offset, by msg id and by key; and rebuilding their ConsumeQueues and index
from the CommitLog alone."""

from __future__ import annotations

import hashlib
import shutil
from collections import defaultdict

import pytest

from golden import CASES, GOLDEN_CONFIG, case_dir, copy_store, manifest, summary
from mqstore import MessageStore
from mqstore.results import GetStatus

FAR_FUTURE = 1_900_000_000_000  # 2030: after every golden store time


def open_copy(case, tmp_path, drop=()):
    path = copy_store(case, tmp_path)
    for name in drop:
        shutil.rmtree(path / name)
    return MessageStore(path, clock=lambda: FAR_FUTURE, **GOLDEN_CONFIG)


def queued_rows(case):
    by_queue = defaultdict(list)
    for row in manifest(case):
        if row["inConsumeQueue"]:
            by_queue[(row["topic"], row["queueId"])].append(row)
    return by_queue


def read_whole_queue(store, topic, queue_id):
    messages, offset = [], store.min_offset(topic, queue_id)
    while True:
        result = store.get(topic, queue_id, offset, 32)
        if result.status is not GetStatus.FOUND:
            assert result.status is GetStatus.OFFSET_OVERFLOW_ONE, result
            return messages
        messages.extend(result.messages)
        offset = result.next_begin_offset


def assert_same_message(message, row):
    assert message.commitlog_offset == row["commitLogOffset"]
    assert message.topic == row["topic"] and message.queue_id == row["queueId"]
    assert message.queue_offset == row["queueOffset"]
    assert message.msg_id == row["msgId"]
    assert hashlib.sha256(message.body).hexdigest() == row["bodySha256"]
    assert dict(message.properties) == row["properties"]


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("rebuilt", [False, True], ids=["golden-queues", "rebuilt-queues"])
def test_get_returns_every_queue_in_order(case, rebuilt, tmp_path):
    drop = ("consumequeue", "index") if rebuilt else ()
    with open_copy(case, tmp_path, drop) as store:
        expected = queued_rows(case)
        assert set(store.topics()) == {topic for topic, _ in expected}
        for (topic, queue_id), rows in expected.items():
            assert store.max_offset(topic, queue_id) == len(rows)
            messages = read_whole_queue(store, topic, queue_id)
            assert len(messages) == len(rows), (topic, queue_id)
            for message, row in zip(messages, rows):
                assert_same_message(message, row)
        if case == "basic":
            for queue in summary(case)["queues"]:
                assert store.min_offset(queue["topic"], queue["queueId"]) == queue["minOffset"]
                assert store.max_offset(queue["topic"], queue["queueId"]) == queue["maxOffset"]


@pytest.mark.parametrize("case", CASES)
def test_look_by_offset_and_msg_id(case, tmp_path):
    with open_copy(case, tmp_path) as store:
        for row in manifest(case):
            assert_same_message(store.look_by_offset(row["commitLogOffset"]), row)
            assert_same_message(store.look_by_msg_id(row["msgId"]), row)


def key_queries(case):
    """(topic, key) -> commitlog offsets of the manifest rows carrying that key."""
    queries = defaultdict(set)
    for row in manifest(case):
        keys = (row["keys"] or "").split(" ")
        for key in [k for k in keys if k] + ([row["uniqKey"]] if row["uniqKey"] else []):
            queries[(row["topic"], key)].add(row["commitLogOffset"])
    return queries


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("rebuilt", [False, True], ids=["golden-index", "rebuilt-index"])
def test_query_by_key_finds_every_key(case, rebuilt, tmp_path):
    drop = ("consumequeue", "index") if rebuilt else ()
    with open_copy(case, tmp_path, drop) as store:
        queries = key_queries(case)
        assert len(queries) > 100
        for (topic, key), offsets in queries.items():
            found = store.query_by_key(topic, key, max_msgs=64)
            assert [m.commitlog_offset for m in found] == sorted(offsets), (topic, key)


@pytest.mark.parametrize("case", CASES)
def test_rebuilt_consume_queues_are_byte_identical(case, tmp_path):
    with open_copy(case, tmp_path, drop=("consumequeue", "index")) as store:
        store_path = store.path
    golden_root = case_dir(case) / "store" / "consumequeue"
    golden_files = sorted(p.relative_to(golden_root) for p in golden_root.rglob("*") if p.is_file())
    ours_root = tmp_path / case / "consumequeue"
    ours = sorted(p.relative_to(ours_root) for p in ours_root.rglob("*") if p.is_file())
    assert ours == golden_files
    for relative in golden_files:
        assert (ours_root / relative).read_bytes() == (golden_root / relative).read_bytes(), (
            relative
        )
    assert store_path


@pytest.mark.parametrize("case", CASES)
def test_rebuilt_index_matches_golden_index_answers(case, tmp_path):
    golden = open_copy(case, tmp_path / "golden")
    rebuilt = open_copy(case, tmp_path / "rebuilt", drop=("consumequeue", "index"))
    with golden, rebuilt:
        for topic, key in key_queries(case):
            for begin, end in ((0, FAR_FUTURE),):
                theirs = golden.index.iter_offsets(topic, key, begin, end)
                ours = rebuilt.index.iter_offsets(topic, key, begin, end)
                assert sorted(ours) == sorted(theirs), (topic, key)
