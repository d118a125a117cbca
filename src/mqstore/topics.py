"""Topic configuration: queue counts and permissions per topic, kept in
`config/topics.json` in RocketMQ's shape, and the naming rules topics must follow."""

from __future__ import annotations

import os
import re
import threading
from dataclasses import dataclass
from typing import Dict, List, Optional

from . import configfile

TOPIC_PATTERN = re.compile(r"[%|a-zA-Z0-9_-]+")
MAX_TOPIC_LENGTH = 127

PERM_PRIORITY = 8
PERM_READ = 4
PERM_WRITE = 2
PERM_INHERIT = 1
PERM_READ_WRITE = PERM_READ | PERM_WRITE

SCHEDULE_TOPIC = "SCHEDULE_TOPIC_XXXX"
TRANS_HALF_TOPIC = "RMQ_SYS_TRANS_HALF_TOPIC"
TRANS_OP_HALF_TOPIC = "RMQ_SYS_TRANS_OP_HALF_TOPIC"
TRANS_CHECK_MAX_TIME_TOPIC = "TRANS_CHECK_MAX_TIME_TOPIC"
RETRY_GROUP_TOPIC_PREFIX = "%RETRY%"
DLQ_GROUP_TOPIC_PREFIX = "%DLQ%"

#: Topics a producer may not send to (RocketMQ's client Validators).
NOT_ALLOWED_SEND_TOPICS = frozenset(
    {
        SCHEDULE_TOPIC,
        TRANS_HALF_TOPIC,
        TRANS_OP_HALF_TOPIC,
        TRANS_CHECK_MAX_TIME_TOPIC,
        "SELF_TEST_TOPIC",
        "OFFSET_MOVED_EVENT",
    }
)
#: Topics users may not create or delete (RocketMQ's TopicValidator system topics).
SYSTEM_TOPICS = NOT_ALLOWED_SEND_TOPICS | {"TBW102", "BenchmarkTest", "RMQ_SYS_TRACE_TOPIC"}


def topic_error(topic) -> Optional[str]:
    """Why `topic` is not a legal topic name (RocketMQ's rules), or None when it is."""
    if not isinstance(topic, str):
        return f"topic must be a str, got {type(topic).__name__}"
    if not topic.strip():
        return "topic is blank"
    if len(topic) > MAX_TOPIC_LENGTH:
        return f"topic is {len(topic)} characters, more than {MAX_TOPIC_LENGTH}"
    if not TOPIC_PATTERN.fullmatch(topic):
        return f"topic {topic!r} has characters outside [%|a-zA-Z0-9_-]"
    return None


def is_system_topic(topic: str) -> bool:
    return topic in SYSTEM_TOPICS or topic.startswith("rmq_sys_")


@dataclass(frozen=True)
class TopicConfig:
    """One topic's settings, as RocketMQ's TopicConfig."""

    topic_name: str
    read_queue_nums: int = 4
    write_queue_nums: int = 4
    perm: int = PERM_READ_WRITE
    topic_filter_type: str = "SINGLE_TAG"
    topic_sys_flag: int = 0
    order: bool = False

    @property
    def readable(self) -> bool:
        return bool(self.perm & PERM_READ)

    @property
    def writable(self) -> bool:
        return bool(self.perm & PERM_WRITE)

    def _to_json(self) -> dict:
        return {
            "order": self.order,
            "perm": self.perm,
            "readQueueNums": self.read_queue_nums,
            "topicFilterType": self.topic_filter_type,
            "topicName": self.topic_name,
            "topicSysFlag": self.topic_sys_flag,
            "writeQueueNums": self.write_queue_nums,
        }

    @classmethod
    def _from_json(cls, name: str, data: dict) -> TopicConfig:
        return cls(
            topic_name=str(data.get("topicName", name)),
            read_queue_nums=int(data.get("readQueueNums", 4)),
            write_queue_nums=int(data.get("writeQueueNums", 4)),
            perm=int(data.get("perm", PERM_READ_WRITE)),
            topic_filter_type=str(data.get("topicFilterType", "SINGLE_TAG")),
            topic_sys_flag=int(data.get("topicSysFlag", 0)),
            order=bool(data.get("order", False)),
        )


def check_queue_nums(queue_nums) -> int:
    if type(queue_nums) is not int:
        raise TypeError(f"queue_nums must be an int, got {type(queue_nums).__name__}")
    if not 1 <= queue_nums <= 1024:
        raise ValueError(f"queue_nums must be 1..1024, got {queue_nums}")
    return queue_nums


class TopicManager:
    """The topic table of one store, persisted to `config/topics.json` on every change
    (tmp file + `.bak` + rename, as RocketMQ 4.x). Thread-safe."""

    def __init__(self, store_path: str, readonly: bool = False, clock=None) -> None:
        self.path = os.path.join(store_path, "config", "topics.json")
        self.readonly = readonly
        self._clock = clock
        self._lock = threading.Lock()
        self._topics: Dict[str, TopicConfig] = {}
        #: Bumped on every change, so consumers notice new topics without polling.
        self.version = 0
        self._data_version = {"counter": 0, "timestamp": 0}
        data = configfile.load(self.path)
        if isinstance(data, dict):
            table = data.get("topicConfigTable") or {}
            for name, entry in table.items():
                if isinstance(entry, dict):
                    self._topics[str(name)] = TopicConfig._from_json(str(name), entry)
            version = data.get("dataVersion")
            if isinstance(version, dict):
                self._data_version = {
                    "counter": int(version.get("counter", 0)),
                    "timestamp": int(version.get("timestamp", 0)),
                }

    def get(self, topic: str) -> Optional[TopicConfig]:
        return self._topics.get(topic)

    def all(self) -> List[TopicConfig]:
        return [self._topics[name] for name in sorted(self._topics)]

    def put(self, config: TopicConfig) -> TopicConfig:
        """Add or replace a topic's config and persist the table."""
        with self._lock:
            self._topics[config.topic_name] = config
            self._persist()
        return config

    def ensure(self, topic: str, queue_nums: int, perm: int = PERM_READ_WRITE) -> TopicConfig:
        """The topic's config, creating it with `queue_nums` queues when missing."""
        existing = self._topics.get(topic)
        if existing is not None:
            return existing
        with self._lock:
            existing = self._topics.get(topic)
            if existing is not None:
                return existing
            config = self._topics[topic] = TopicConfig(topic, queue_nums, queue_nums, perm)
            self._persist()
            return config

    def remove(self, topic: str) -> Optional[TopicConfig]:
        with self._lock:
            config = self._topics.pop(topic, None)
            if config is not None:
                self._persist()
            return config

    def _persist(self) -> None:
        self.version += 1
        if self.readonly:
            return
        self._data_version = {
            "counter": self._data_version["counter"] + 1,
            "timestamp": self._clock() if self._clock else 0,
        }
        configfile.save(
            self.path,
            {
                "dataVersion": dict(self._data_version),
                "topicConfigTable": {
                    name: config._to_json() for name, config in self._topics.items()
                },
            },
        )
