"""A service with a background consumer: requests are queued durably and handled by a
push consumer's threads, with retries for failures.

    python examples/background_consumer.py [STORE_DIR]

Run it twice with the same STORE_DIR: the second run picks up where the first stopped
(offsets are committed in the store), and handles only the new jobs.
"""

from __future__ import annotations

import sys
import tempfile
import threading

from mqstore import (
    CONSUME_SUCCESS,
    RECONSUME_LATER,
    ConsumeFromWhere,
    Message,
    MessageStore,
    Producer,
    PushConsumer,
)

JOBS = 20


def main(path: str) -> None:
    # Small files for an example; the defaults are RocketMQ's (1 GiB CommitLog files).
    store = MessageStore(
        path,
        mapped_file_size_commitlog=4 << 20,
        mapped_file_size_consume_queue=60_000,
        max_hash_slot_num=4096,
        max_index_num=16384,
        message_delay_level="1s",  # retries come back after 1 s (default: 10 s, 30 s, ...)
    )
    store.create_topic("thumbnails", queue_nums=4)
    done = threading.Event()
    handled = set()
    lock = threading.Lock()
    failed_once = set()

    def handle(msgs, context):
        for msg in msgs:
            job = msg.keys[0]
            # Simulate a flaky dependency: every 7th job fails on its first attempt.
            if int(job.split("-")[1]) % 7 == 0 and job not in failed_once:
                failed_once.add(job)
                return RECONSUME_LATER
            with lock:
                handled.add(job)
                if len(handled) == JOBS:
                    done.set()
        return CONSUME_SUCCESS

    consumer = PushConsumer(store, "thumbnailer", consume_from_where=ConsumeFromWhere.FIRST_OFFSET)
    consumer.subscribe("thumbnails", "resize")
    consumer.register(handle)
    consumer.start()

    producer = Producer(store, "web")
    first = store.max_offset("thumbnails", 0)  # nonzero when run again on the same store
    for i in range(JOBS):
        producer.send(Message("thumbnails", b"image bytes", tags="resize", keys=f"job-{i}"))

    finished = done.wait(timeout=20)
    consumer.shutdown()
    producer.shutdown()
    store.close()
    print(f"handled {len(handled)} of {JOBS} jobs, {len(failed_once)} after a retry"
          f"{' (store was not empty)' if first else ''}")
    if not finished:
        raise SystemExit("timed out")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp())
