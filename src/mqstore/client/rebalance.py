"""Consumer groups inside one process: who is in each group, and which queues each
member consumes (RocketMQ's AllocateMessageQueueAveragely)."""

from __future__ import annotations

import logging
import threading
import weakref
from typing import TYPE_CHECKING, Dict, List, Sequence, TypeVar

from ..topics import RETRY_GROUP_TOPIC_PREFIX

if TYPE_CHECKING:
    from ..store import MessageStore

log = logging.getLogger(__name__)

T = TypeVar("T")


def allocate_averagely(queues: Sequence[T], members: Sequence[str], me: str) -> List[T]:
    """The queues `me` gets when `queues` are shared among `members` (sorted ids):
    contiguous, as even as possible, the first members taking one more."""
    if me not in members or not queues:
        return []
    index = members.index(me)
    count, size = len(queues), len(members)
    mod = count % size
    if count <= size:
        average = 1
    elif mod > 0 and index < mod:
        average = count // size + 1
    else:
        average = count // size
    start = index * average if mod > 0 and index < mod else index * average + mod
    return [queues[(start + i) % count] for i in range(max(0, min(average, count - start)))]


def topic_queue_ids(store: MessageStore, topic: str) -> List[int]:
    """Readable queue ids of a topic: from its config, else the queues it has."""
    config = store.topic_config(topic)
    if config is not None:
        return list(range(config.read_queue_nums)) if config.readable else []
    if topic.startswith(RETRY_GROUP_TOPIC_PREFIX):
        return [0]
    return list(store.topics().get(topic, []))


class GroupRegistry:
    """The live clustering consumers of each group of one store."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._members: Dict[str, list] = {}

    def members(self, group: str) -> list:
        with self._lock:
            return list(self._members.get(group, ()))

    def member_ids(self, group: str) -> List[str]:
        with self._lock:
            return sorted(m.client_id for m in self._members.get(group, ()))

    def join(self, consumer) -> None:
        with self._lock:
            members = self._members.setdefault(consumer.group, [])
            for other in members:
                if other.subscription_signature() != consumer.subscription_signature():
                    log.warning(
                        "group %s: consumer %s subscribes to %s but %s to %s; RocketMQ "
                        "shares the queues of each topic among all members, so some "
                        "queues may go unconsumed. Give one group one subscription.",
                        consumer.group, consumer.client_id, consumer.subscription_signature(),
                        other.client_id, other.subscription_signature(),
                    )
                    break
            members.append(consumer)
        self.rebalance(consumer.group)

    def leave(self, consumer) -> None:
        with self._lock:
            members = self._members.get(consumer.group, [])
            if consumer in members:
                members.remove(consumer)
        self.rebalance(consumer.group)

    def rebalance(self, group: str) -> None:
        """Every member recomputes its queues now."""
        for member in self.members(group):
            member._rebalance()


_registries: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_registries_lock = threading.Lock()


def registry_of(store: MessageStore) -> GroupRegistry:
    with _registries_lock:
        registry = _registries.get(store)
        if registry is None:
            registry = _registries[store] = GroupRegistry()
        return registry
