"""Child process of tests/test_crash_recovery.py: opens a store and puts messages from
4 threads until it is killed, acknowledging every PUT_OK on stdout.

Usage: ``python crash_writer.py STORE_DIR FLUSH_DISK_TYPE SEED``

Protocol (one line each, written with one os.write under a lock, so lines from the
threads never interleave):

- ``READY <pid>`` once the store is open (the abort file exists from then on);
- ``ACK <topic> <queue_id> <commitlog_offset> <queue_offset> <key> <tags> <body hex>``
  for every message, written only after its put (or its batch) returned PUT_OK; `tags`
  is ``-`` when the message has none;
- ``FAIL <thread> <status or exception>`` when a put did not return PUT_OK.

The parent SIGKILLs this process at a random moment; a line cut off by the kill has
no newline and is not an acknowledgement.
"""

from __future__ import annotations

import os
import random
import sys
import threading

from mqstore import Message, MessageStore, PutStatus

#: the store settings the parent reopens with: 64 KiB CommitLog files (they roll
#: every ~100 messages), 100-unit ConsumeQueue files, small index files.
STORE_SETTINGS = dict(
    mapped_file_size_commitlog=64 * 1024,
    mapped_file_size_consume_queue=100 * 20,
    max_hash_slot_num=512,
    max_index_num=2048,
)
TOPICS = ("CrashA", "CrashB", "Crash_C")
QUEUES = 4
TAGS = (None, "TagA", "TagB")
THREADS = 4

_out_lock = threading.Lock()


def emit(text: str) -> None:
    data = text.encode()
    with _out_lock:
        while data:
            data = data[os.write(1, data):]


def ack_line(topic, queue_id, result, key, tags, body) -> str:
    return (f"ACK {topic} {queue_id} {result.commitlog_offset} {result.queue_offset} "
            f"{key} {tags or '-'} {body.hex()}\n")


def writer(store: MessageStore, seed: int, thread_no: int) -> None:
    rng = random.Random(seed * 1000 + thread_no)
    i = 0
    try:
        while True:
            topic = rng.choice(TOPICS)
            queue_id = rng.randrange(QUEUES)
            if rng.random() < 0.2:
                count = rng.randint(1, 4)
                keys = [f"k{seed}-{thread_no}-{i + n}" for n in range(count)]
                bodies = [rng.randbytes(rng.randrange(0, 600)) for _ in range(count)]
                tags = [rng.choice(TAGS) for _ in range(count)]
                i += count
                msgs = [Message(topic, b, tags=t, keys=k) for b, t, k in zip(bodies, tags, keys)]
                result = store.put_batch(msgs, queue_id)
                if result.status is not PutStatus.PUT_OK:
                    emit(f"FAIL {thread_no} {result.status.name} {result.error}\n")
                    continue
                emit("".join(ack_line(topic, queue_id, r, k, t, b)
                             for r, k, t, b in zip(result, keys, tags, bodies)))
            else:
                key = f"k{seed}-{thread_no}-{i}"
                body = rng.randbytes(rng.randrange(0, 1500))
                tags = rng.choice(TAGS)
                i += 1
                result = store.put(Message(topic, body, tags=tags, keys=key), queue_id)
                if result.status is not PutStatus.PUT_OK:
                    emit(f"FAIL {thread_no} {result.status.name} {result.error}\n")
                    continue
                emit(ack_line(topic, queue_id, result, key, tags, body))
    except BaseException as exc:  # a broken pipe after the parent gave up, mostly
        try:
            emit(f"FAIL {thread_no} {type(exc).__name__}: {exc}\n".replace("\n", " ") + "\n")
        finally:
            os._exit(3)


def main() -> None:
    path, flush_type, seed = sys.argv[1], sys.argv[2], int(sys.argv[3])
    store = MessageStore(path, flush_disk_type=flush_type, **STORE_SETTINGS)
    emit(f"READY {os.getpid()}\n")
    threads = [threading.Thread(target=writer, args=(store, seed, n), daemon=True)
               for n in range(THREADS)]
    for thread in threads:
        thread.start()
    threading.Event().wait()  # until the SIGKILL


if __name__ == "__main__":
    main()
