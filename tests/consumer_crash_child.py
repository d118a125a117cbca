"""Child process of tests/test_consumer_crash.py: consumes topic "T" of a store with a
PushConsumer (group "gk", offsets persisted every 50 ms) until it is killed.

Usage: ``python consumer_crash_child.py STORE_DIR``

Protocol on stdout (one os.write per line): ``READY`` once consuming, then
``ACK <queue_id> <queue_offset> <uniq_key>`` after each message the listener accepted.
"""

from __future__ import annotations

import os
import sys
import threading
import time

from mqstore import MessageStore
from mqstore.client import CONSUME_SUCCESS, ConsumeFromWhere, PushConsumer

STORE_SETTINGS = dict(
    mapped_file_size_commitlog=64 * 1024,
    mapped_file_size_consume_queue=20 * 1024,
    max_hash_slot_num=512,
    max_index_num=2048,
)

_lock = threading.Lock()


def emit(text: str) -> None:
    data = text.encode()
    with _lock:
        while data:
            data = data[os.write(1, data):]


def main() -> None:
    store = MessageStore(sys.argv[1], **STORE_SETTINGS)
    consumer = PushConsumer(store, "gk", consume_from_where=ConsumeFromWhere.FIRST_OFFSET,
                            persist_consumer_offset_interval=50, pull_batch_size=8)

    def listener(msgs, context):
        time.sleep(0.003)  # pace consumption so the parent kills it mid-stream
        for m in msgs:
            emit(f"ACK {m.queue_id} {m.queue_offset} {m.uniq_key}\n")
        return CONSUME_SUCCESS

    consumer.subscribe("T")
    consumer.register(listener)
    consumer.start()
    emit("READY\n")
    while True:
        time.sleep(1)


if __name__ == "__main__":
    main()
