"""Delay levels: delivering messages parked in SCHEDULE_TOPIC_XXXX to their real topic
when due, as RocketMQ 4.x's ScheduleMessageService does.

A message put with delay level n is stored in SCHEDULE_TOPIC_XXXX queue n-1 (the
store's put path does that rewrite); its ConsumeQueue tag code is its delivery time.
One thread walks every level's queue from a saved offset, re-puts each due message to
its REAL_TOPIC / REAL_QID (the stored properties string kept byte for byte, as RocketMQ
does) and advances the level's offset.

Progress is saved to `config/delayOffset.json` (RocketMQ's shape) after every round
that delivered something and at close. A process killed between a delivery and that
save would deliver the message again on restart; to prevent it, `start()` checks the
few messages past each saved offset against the index (a delivered copy carries the
same UNIQ_KEY, born time and body CRC in the real topic) and skips those already
delivered. Messages without UNIQ_KEY (raw `store.put`, never a Producer) or a store
with the index off keep RocketMQ's at-least-once behaviour.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import TYPE_CHECKING, Dict, Optional

from . import configfile
from .errors import MQStoreError
from .message import (
    PROPERTY_DELAY_TIME_LEVEL,
    PROPERTY_REAL_QUEUE_ID,
    PROPERTY_REAL_TOPIC,
    SCHEDULE_TOPIC,
    MessageExt,
)
from .results import PutStatus
from .topics import TRANS_HALF_TOPIC

if TYPE_CHECKING:
    from .store import MessageStore

log = logging.getLogger(__name__)

#: Longest wait between two looks at the level queues (ms): bounds how late a message
#: that arrives in an idle level is noticed (its delay is at least 1 s).
POLL_INTERVAL_MS = 100
#: Messages delivered per level per round, so progress is saved often.
MAX_PER_ROUND = 64


class ScheduleService:
    """Delivers delayed messages of one store. Started and stopped by the store."""

    def __init__(self, store: MessageStore) -> None:
        self.store = store
        self.levels_ms = store.config.delay_levels_ms
        self.path = os.path.join(store.path, "config", "delayOffset.json")
        self._clock = store.config.clock
        self._fsync = store.config.flush_disk_type == "SYNC_FLUSH"
        self._round_lock = threading.Lock()
        self._wake = threading.Condition()
        self._stopping = False
        self._thread: Optional[threading.Thread] = None
        self._offsets: Dict[int, int] = {}
        self._saved: Dict[int, int] = {}
        self._last_save_ms = 0
        #: Messages delivered since open; dropped half messages are not counted.
        self.delivered = 0
        #: Deliveries skipped at start because the index showed them already done.
        self.skipped_as_delivered = 0
        data = configfile.load(self.path)
        table = data.get("offsetTable") if isinstance(data, dict) else None
        if isinstance(table, dict):
            for level, offset in table.items():
                # fastjson reads quoted keys ("1") into the Map<Integer, Long> as well
                level, offset = _as_int(level), _as_int(offset)
                if level is not None and offset is not None and level >= 1:
                    self._offsets[level] = offset
        self._saved = dict(self._offsets)

    # -- lifecycle -----------------------------------------------------------------

    def start(self) -> None:
        """Clamp saved offsets into their queues, skip deliveries a crash left unsaved,
        and start the delivery thread."""
        store = self.store
        for level in range(1, len(self.levels_ms) + 1):
            low = store.min_offset(SCHEDULE_TOPIC, level - 1)
            high = store.max_offset(SCHEDULE_TOPIC, level - 1)
            if level in self._offsets or high > 0:
                offset = self._offsets.get(level, low)
                self._offsets[level] = min(max(offset, low), high)
                self._skip_already_delivered(level)
        if self._offsets != self._saved:
            self.persist()
        self._thread = threading.Thread(target=self._run, name="mqstore-schedule", daemon=True)
        self._thread.start()

    def shutdown(self) -> None:
        """Stop delivering (a round in progress finishes) and save progress."""
        with self._wake:
            self._stopping = True
            self._wake.notify_all()
        if self._thread is not None:
            self._thread.join()
        with self._round_lock:
            self.persist()

    def wake(self) -> None:
        """Look at the level queues now (tests with an injected clock call this)."""
        with self._wake:
            self._wake.notify_all()

    def offsets(self) -> Dict[int, int]:
        """Next queue offset to deliver, per level (1-based)."""
        return dict(self._offsets)

    def pending(self) -> int:
        """Messages stored in SCHEDULE_TOPIC_XXXX and not delivered yet."""
        store = self.store
        return sum(
            max(0, store.max_offset(SCHEDULE_TOPIC, level - 1) - self._offsets.get(level, 0))
            for level in range(1, len(self.levels_ms) + 1)
        )

    # -- delivery --------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._wake:
                if self._stopping:
                    return
            try:
                next_due = self.deliver_due()
            except MQStoreError as exc:  # the store is closing or full: retry later
                log.warning("delay delivery paused: %s", exc)
                next_due = None
            except Exception:
                log.exception("delay delivery failed; retrying")
                next_due = None
            now = self._clock()
            wait_ms = POLL_INTERVAL_MS
            if next_due is not None:
                wait_ms = max(0, min(wait_ms, next_due - now))
            if now - self._last_save_ms >= self.store.config.flush_delay_offset_interval:
                with self._round_lock:
                    self.persist()
            with self._wake:
                if self._stopping:
                    return
                if wait_ms > 0:
                    self._wake.wait(wait_ms / 1000)

    def deliver_due(self, now: Optional[int] = None) -> Optional[int]:
        """Deliver every message due at `now` (default: the store clock). Returns the
        earliest delivery time still pending (ms), or None when no level waits."""
        with self._round_lock:
            if now is None:
                now = self._clock()
            store = self.store
            next_due = None
            delivered_any = False
            for level, delay in enumerate(self.levels_ms, start=1):
                queue_id = level - 1
                offset = self._offsets.get(level)
                high = store.max_offset(SCHEDULE_TOPIC, queue_id)
                if offset is None:
                    if high == 0:
                        continue
                    offset = store.min_offset(SCHEDULE_TOPIC, queue_id)
                queue = store._consume_queues.get((SCHEDULE_TOPIC, queue_id))
                done = 0
                while offset < high and queue is not None and done < MAX_PER_ROUND:
                    unit = queue.unit(offset)
                    if unit is None:  # below the queue's minimum after cleanup
                        offset = max(offset + 1, queue.min_offset())
                        continue
                    deliver_at = unit[2]
                    if deliver_at > now + delay:
                        deliver_at = now  # stored by a clock far ahead: due now (RocketMQ)
                    if deliver_at > now:
                        next_due = deliver_at if next_due is None else min(next_due, deliver_at)
                        break
                    if not self._deliver(unit[0], level, offset):
                        next_due = now + POLL_INTERVAL_MS
                        break
                    offset += 1
                    done += 1
                    delivered_any = True
                if done == MAX_PER_ROUND:
                    next_due = now
                if offset != self._offsets.get(level):
                    self._offsets[level] = offset
            if delivered_any:
                self.persist()
            return next_due

    def _deliver(self, commitlog_offset: int, level: int, queue_offset: int) -> bool:
        """Re-put one parked message to its real topic; False to retry it later."""
        store = self.store
        try:
            message = store.commitlog.get_message(commitlog_offset)
        except MQStoreError as exc:
            log.error("delay level %d offset %d: unreadable record skipped: %s",
                      level, queue_offset, exc)
            return True
        if message is None:
            log.error("delay level %d offset %d: no record at %d; skipped",
                      level, queue_offset, commitlog_offset)
            return True
        properties = message.properties
        topic = properties.get(PROPERTY_REAL_TOPIC)
        queue_id = properties.get(PROPERTY_REAL_QUEUE_ID)
        if not topic or queue_id is None or not queue_id.isdigit():
            log.error("delay level %d offset %d: no REAL_TOPIC/REAL_QID; skipped",
                      level, queue_offset)
            return True
        if topic == TRANS_HALF_TOPIC:
            return True  # RocketMQ drops a delayed half message
        result = store._repost(message, topic, int(queue_id), wait=False)
        if result.status not in (PutStatus.PUT_OK, PutStatus.FLUSH_DISK_TIMEOUT):
            log.warning("delay delivery of %s to %s failed (%s); will retry",
                        message.msg_id, topic, result.status.value)
            return False
        self.delivered += 1
        return True

    # -- progress --------------------------------------------------------------------

    def persist(self) -> None:
        """Save per-level progress to config/delayOffset.json if it changed."""
        self._last_save_ms = self._clock()
        if self._offsets == self._saved or self.store.readonly:
            return
        snapshot = dict(sorted(self._offsets.items()))
        configfile.save(self.path, {"offsetTable": snapshot}, fsync=self._fsync)
        self._saved = snapshot

    def _skip_already_delivered(self, level: int) -> None:
        store = self.store
        queue = store._consume_queues.get((SCHEDULE_TOPIC, level - 1))
        if queue is None or store.index is None:
            return
        offset = self._offsets[level]
        while offset < queue.max_offset():
            unit = queue.unit(offset)
            if unit is None or not self._was_delivered(unit[0]):
                break
            offset += 1
            self.skipped_as_delivered += 1
        if offset != self._offsets[level]:
            log.info("delay level %d: %d messages were delivered before the last save",
                     level, offset - self._offsets[level])
            self._offsets[level] = offset

    def _was_delivered(self, commitlog_offset: int) -> bool:
        store = self.store
        try:
            parked = store.commitlog.get_message(commitlog_offset)
        except MQStoreError:
            return False
        if parked is None or not parked.uniq_key:
            return False
        topic = parked.properties.get(PROPERTY_REAL_TOPIC)
        if not topic:
            return False
        for copy in store.query_by_key(topic, parked.uniq_key, begin=parked.store_timestamp):
            if _is_delivery_of(copy, parked):
                return True
        return False


def _as_int(value) -> Optional[int]:
    """An int from the JSON config: an int, or a decimal string (not a bool)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    return None


def _is_delivery_of(copy: MessageExt, parked: MessageExt) -> bool:
    return (
        copy.commitlog_offset > parked.commitlog_offset
        and PROPERTY_DELAY_TIME_LEVEL in copy.properties
        and copy.born_timestamp == parked.born_timestamp
        and copy.body_crc == parked.body_crc
    )
