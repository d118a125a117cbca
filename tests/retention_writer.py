"""Child process of tests/test_cleanup.py: puts messages from 2 threads while the
store's own scheduler deletes CommitLog files every 20 ms, until it is killed.

Usage: ``python retention_writer.py STORE_DIR``

Prints ``READY`` once open, then ``ACK <queue_id> <commitlog_offset> <queue_offset>``
for every PUT_OK (one os.write per line, so lines never interleave).
"""

from __future__ import annotations

import os
import sys
import threading

from mqstore import Message, MessageStore, PutStatus

#: settings the parent reopens with: every file but the current one expires at once
#: and any hour is a delete hour; small files so that many roll and go
SETTINGS = dict(
    mapped_file_size_commitlog=64 * 1024,
    mapped_file_size_consume_queue=100 * 20,
    max_hash_slot_num=512,
    max_index_num=2048,
    file_reserved_time=0,
    delete_when=";".join(f"{hour:02d}" for hour in range(24)),
    clean_resource_interval=20,
    delete_commit_log_files_interval=0,
    delete_consume_queue_files_interval=0,
)
TOPIC = "Retained"
QUEUES = 3
_lock = threading.Lock()


def body_for(queue_id: int, queue_offset_hint: int, thread_no: int) -> bytes:
    return f"{thread_no}:{queue_id}:{queue_offset_hint}:".encode().ljust(300, b"r")


def emit(text: str) -> None:
    data = text.encode()
    with _lock:
        while data:
            data = data[os.write(1, data) :]


def writer(store: MessageStore, thread_no: int) -> None:
    i = 0
    while True:
        queue_id = i % QUEUES
        result = store.put(Message(TOPIC, body_for(queue_id, i, thread_no), keys=f"k{i}"), queue_id)
        if result.status is PutStatus.PUT_OK:
            emit(f"ACK {queue_id} {result.commitlog_offset} {result.queue_offset}\n")
        i += 1


def main() -> None:
    store = MessageStore(sys.argv[1], **SETTINGS)
    emit("READY\n")
    for n in range(2):
        threading.Thread(target=writer, args=(store, n), daemon=True).start()
    threading.Event().wait()


if __name__ == "__main__":
    main()
