"""Child process of tests/test_schedule.py: opens a store with delay levels "1s 2s 3s",
sends delayed messages through a Producer (level 1, a few ms apart, so their
deliveries are spread out) and then idles while the schedule thread delivers them,
until it is killed.

Usage: ``python delay_writer.py STORE_DIR COUNT [freeze]``; with ``freeze`` the
schedule service never saves `delayOffset.json` (as if every kill came between a
delivery and its save), so only the start-up de-duplication prevents redelivery.

Protocol: ``READY <pid>``, then ``ACK <uniq_key> <real queue id>`` after each send
returned, then ``SENT`` once all were sent, then ``DELIVERED <n>`` lines as the
schedule service reports progress.
"""

from __future__ import annotations

import os
import sys
import time

from mqstore import Message, MessageStore
from mqstore.client.producer import Producer

STORE_SETTINGS = dict(
    mapped_file_size_commitlog=64 * 1024,
    mapped_file_size_consume_queue=20 * 1024,
    max_hash_slot_num=512,
    max_index_num=2048,
    message_delay_level="1s 2s 3s",
)
TOPIC = "DelayCrash"


def emit(text: str) -> None:
    data = text.encode()
    while data:
        data = data[os.write(1, data):]


def main() -> None:
    path, count = sys.argv[1], int(sys.argv[2])
    freeze = sys.argv[3:] == ["freeze"]
    store = MessageStore(path, **STORE_SETTINGS)
    if freeze:
        store.schedule.persist = lambda: None
    store.create_topic(TOPIC, 2)
    producer = Producer(store, "delay_crash_pg")
    emit(f"READY {os.getpid()}\n")
    for i in range(count):
        result = producer.send(Message(TOPIC, b"body-%d" % i, delay_level=1), queue=i % 2)
        emit(f"ACK {result.msg_id} {i % 2}\n")
        time.sleep(0.01)
    emit("SENT\n")
    last = -1
    while True:
        delivered = store.schedule.delivered
        if delivered != last:
            emit(f"DELIVERED {delivered}\n")
            last = delivered
        time.sleep(0.005)


if __name__ == "__main__":
    main()
