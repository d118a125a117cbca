"""Topic configuration: create / list / delete, persistence in RocketMQ's topics.json
shape, auto-creation on first send, and the naming / queue count / perm rules."""

from __future__ import annotations

import json

import pytest

from mqstore import Message, configfile
from mqstore.client.producer import Producer
from mqstore.errors import MQClientError
from mqstore.topics import (
    PERM_READ,
    PERM_READ_WRITE,
    SYSTEM_TOPICS,
    TopicConfig,
)


def _json_topics(store_dir):
    return configfile.load(str(store_dir / "config" / "topics.json"))


def test_create_list_and_config(small_store, store_dir):
    store = small_store()
    created = store.create_topic("Orders", queue_nums=3)
    assert created == TopicConfig("Orders", 3, 3, PERM_READ_WRITE)
    store.create_topic("Audit", queue_nums=1, perm=PERM_READ, order=True)
    assert [c.topic_name for c in store.topic_configs()] == ["Audit", "Orders"]
    assert store.topic_config("Orders").write_queue_nums == 3
    assert store.topic_config("Audit").order is True
    assert store.topic_config("Missing") is None


def test_topics_json_shape_and_reopen(small_store, store_dir):
    store = small_store()
    store.create_topic("Orders", queue_nums=3)
    store.create_topic("Audit", queue_nums=1, perm=PERM_READ, order=True)
    text = (store_dir / "config" / "topics.json").read_text()
    assert "\t" in text  # fastjson PrettyFormat
    data = json.loads(text)  # string keys only: plain JSON
    assert data["dataVersion"]["counter"] == 2
    assert data["topicConfigTable"]["Orders"] == {
        "order": False,
        "perm": 6,
        "readQueueNums": 3,
        "topicFilterType": "SINGLE_TAG",
        "topicName": "Orders",
        "topicSysFlag": 0,
        "writeQueueNums": 3,
    }
    assert data["topicConfigTable"]["Audit"]["order"] is True
    assert data["topicConfigTable"]["Audit"]["perm"] == 4
    store.close()
    store = small_store()
    assert store.topic_config("Orders") == TopicConfig("Orders", 3, 3, 6)
    assert store.topic_config("Audit") == TopicConfig("Audit", 1, 1, 4, order=True)
    store.create_topic("Third", 2)
    assert _json_topics(store_dir)["dataVersion"]["counter"] == 3


def test_delete_topic(small_store, store_dir):
    store = small_store()
    store.create_topic("Doomed", queue_nums=2)
    producer = Producer(store, "pg")
    for i in range(4):
        producer.send(Message("Doomed", b"x%d" % i))
    assert store.wait_for_message("Doomed", 1, 1, 5)
    assert store.delete_topic("Doomed") is True
    assert store.topic_config("Doomed") is None
    assert "Doomed" not in store.topics()
    assert not (store_dir / "consumequeue" / "Doomed").exists()
    assert "Doomed" not in _json_topics(store_dir)["topicConfigTable"]
    assert store.delete_topic("Doomed") is False
    store.close()
    store = small_store()
    assert store.topic_config("Doomed") is None


def test_auto_create_on_first_send(small_store, store_dir):
    store = small_store(default_topic_queue_nums=3)
    producer = Producer(store, "pg")
    result = producer.send(Message("Fresh", b"hello"))
    assert store.topic_config("Fresh") == TopicConfig("Fresh", 3, 3, PERM_READ_WRITE)
    assert len(producer.queues("Fresh")) == 3
    assert result.message_queue.topic == "Fresh"
    assert "Fresh" in _json_topics(store_dir)["topicConfigTable"]


def test_auto_create_off_refuses(small_store):
    store = small_store(auto_create_topic_enable=False)
    producer = Producer(store, "pg")
    before = store.max_commitlog_offset()
    with pytest.raises(MQClientError, match="does not exist"):
        producer.send(Message("Nope", b"x"))
    assert store.topic_config("Nope") is None
    assert store.max_commitlog_offset() == before
    store.create_topic("Nope", 2)
    assert producer.send(Message("Nope", b"x")).message_queue.queue_id in (0, 1)


@pytest.mark.parametrize("name", sorted(SYSTEM_TOPICS) + ["rmq_sys_anything"])
def test_system_topics_refused(small_store, name):
    store = small_store()
    with pytest.raises(ValueError, match="system topic"):
        store.create_topic(name)
    with pytest.raises(ValueError, match="system topic"):
        store.delete_topic(name)
    assert store.topic_config(name) is None


@pytest.mark.parametrize("name", ["", "  ", "a b", "topic/1", "t" * 128, "中文", "a.b"])
def test_illegal_names_refused(small_store, name):
    store = small_store()
    with pytest.raises(ValueError):
        store.create_topic(name)
    assert store.topic_configs() == []


def test_max_length_name_ok(small_store):
    store = small_store()
    store.create_topic("t" * 127, 1)
    assert store.topic_config("t" * 127) is not None


@pytest.mark.parametrize("queue_nums", [0, -1, 1025])
def test_queue_nums_range(small_store, queue_nums):
    store = small_store()
    with pytest.raises(ValueError, match="queue_nums"):
        store.create_topic("T", queue_nums)
    assert store.topic_config("T") is None


@pytest.mark.parametrize("queue_nums", [1.0, "4", None, True])
def test_queue_nums_type(small_store, queue_nums):
    store = small_store()
    with pytest.raises(TypeError):
        store.create_topic("T", queue_nums)


@pytest.mark.parametrize("perm", [-1, 16, "6", 6.0])
def test_bad_perm(small_store, perm):
    store = small_store()
    with pytest.raises(ValueError, match="perm"):
        store.create_topic("T", 2, perm=perm)


def test_non_writable_topic_refuses_sends(small_store):
    store = small_store()
    store.create_topic("ReadOnly", 2, perm=PERM_READ)
    producer = Producer(store, "pg")
    before = store.max_commitlog_offset()
    with pytest.raises(MQClientError, match="not writable"):
        producer.send(Message("ReadOnly", b"x"))
    with pytest.raises(MQClientError, match="not writable"):
        producer.send_orderly(Message("ReadOnly", b"x"), "k")
    with pytest.raises(MQClientError, match="not writable"):
        producer.send_batch([Message("ReadOnly", b"x")])
    assert store.max_commitlog_offset() == before
    # Made writable again: the producer sees the change without being recreated.
    store.create_topic("ReadOnly", 2, perm=PERM_READ_WRITE)
    assert producer.send(Message("ReadOnly", b"x")).send_status.value == "SEND_OK"


def test_queue_count_change_seen_by_producer(small_store):
    store = small_store()
    store.create_topic("Grow", 1)
    producer = Producer(store, "pg")
    assert {producer.send(Message("Grow", b"x")).message_queue.queue_id for _ in range(3)} == {0}
    store.create_topic("Grow", 4)
    ids = {producer.send(Message("Grow", b"x")).message_queue.queue_id for _ in range(8)}
    assert ids == {0, 1, 2, 3}
