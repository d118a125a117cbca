"""Replay a stored log: read every order event stored in a time window back in
CommitLog order, recompute a report from them, and copy them into a second store
(as a migration or a backfill would).

    python examples/replay_log.py [STORE_DIR]

Without STORE_DIR it first writes a small store to replay. With one (any
RocketMQ-format store, even one a broker is still writing) it opens it read-only:
nothing in it changes. The same is on the command line:
`mqstore cat DIR --topic order-events --since ...` and
`mqstore replay DIR --to-store OTHER_DIR --topic order-events`.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time

from mqstore import Message, MessageStore, Producer
from mqstore.replay import iter_messages

SMALL = dict(mapped_file_size_commitlog=1 << 20, mapped_file_size_consume_queue=20 * 1024,
             max_hash_slot_num=512, max_index_num=2048)


def write_sample(path: str) -> int:
    """A store with 50 order events, of which the last 30 come after a marker time."""
    with MessageStore(path, **SMALL) as store:
        producer = Producer(store, "shop")
        for i in range(50):
            if i == 20:
                time.sleep(0.01)
                marker = int(time.time() * 1000)
                time.sleep(0.01)
            event = {"order": i, "total": 100 + i}
            producer.send(Message("order-events", json.dumps(event).encode(), tags="created"))
        producer.shutdown()
    return marker


def main() -> None:
    if len(sys.argv) > 1:
        path, since = sys.argv[1], None
    else:
        path = os.path.join(tempfile.mkdtemp(), "store")
        since = write_sample(path)
    totals = {}
    for msg in iter_messages(path, topic="order-events", since=since):
        event = json.loads(msg.body)
        totals[event["order"]] = event["total"]
    print(f"replayed {len(totals)} events, revenue {sum(totals.values())}")

    copy = os.path.join(tempfile.mkdtemp(), "copy")
    with MessageStore(copy, **SMALL, schedule_delivery_enable=False) as target:
        for msg in iter_messages(path, topic="order-events", since=since):
            target.put(msg, msg.queue_id)  # a stored record is written as it was
    with MessageStore(copy, **SMALL) as target:
        copied = sum(target.max_offset("order-events", q) for q in range(4))
    print(f"copied {copied} events into {copy}")


if __name__ == "__main__":
    main()
