"""Consumer offsets across close/reopen and across a SIGKILL of a consuming process."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from mqstore import Message
from mqstore.client import CONSUME_SUCCESS, ConsumeFromWhere, Producer, PushConsumer
from mqstore.offsets import ConsumerOffsetManager

CHILD = Path(__file__).with_name("consumer_crash_child.py")
FIRST = ConsumeFromWhere.FIRST_OFFSET


def wait_until(predicate, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()


def consume_all(store, group, expected_count, **options):
    got = []

    def listener(msgs, context):
        got.extend(msgs)
        return CONSUME_SUCCESS

    consumer = PushConsumer(store, group, consume_from_where=FIRST, **options)
    consumer.subscribe("T")
    consumer.register(listener)
    consumer.start()
    wait_until(lambda: len(got) >= expected_count)
    time.sleep(0.2)
    consumer.shutdown()
    return got


def test_offsets_survive_close_and_reopen(small_store, store_dir):
    store = small_store()
    store.create_topic("T", 2)
    producer = Producer(store, "pg")
    first = {producer.send(Message("T", b"a%d" % i)).msg_id for i in range(20)}
    got = consume_all(store, "gc", 20)
    assert {m.uniq_key for m in got} == first
    store.close()
    text = (store_dir / "config" / "consumerOffset.json").read_text()
    assert re.search(r'"T@gc"\s*:\s*\{\s*0\s*:\s*10\s*,\s*1\s*:\s*10\s*\}', text), text
    assert ConsumerOffsetManager(str(store_dir)).queues_of("gc", "T") == {0: 10, 1: 10}
    store = small_store()
    producer = Producer(store, "pg")
    second = {producer.send(Message("T", b"b%d" % i)).msg_id for i in range(6)}
    got = consume_all(store, "gc", 6)
    assert sorted(m.uniq_key for m in got) == sorted(second)


def test_offsets_survive_kill_9(small_store, store_dir):
    store = small_store()
    store.create_topic("T", 4)
    producer = Producer(store, "pg")
    sent = {}
    for i in range(400):
        result = producer.send(Message("T", b"m%d" % i))
        sent[(result.message_queue.queue_id, result.queue_offset)] = result.msg_id
    store.close()

    proc = subprocess.Popen([sys.executable, str(CHILD), str(store_dir)],
                            stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
    acked = {}
    try:
        assert proc.stdout.readline() == b"READY\n"
        while len(acked) < 150:
            line = proc.stdout.readline()
            assert line, "child died"
            _, queue_id, offset, key = line.split()
            acked[(int(queue_id), int(offset))] = key.decode()
        os.kill(proc.pid, signal.SIGKILL)
        rest, _ = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    for line in rest.splitlines():  # complete lines written before the kill
        parts = line.split()
        if len(parts) == 4 and parts[0] == b"ACK":
            acked[(int(parts[1]), int(parts[2]))] = parts[3].decode()
    assert len(acked) < len(sent)  # killed mid-stream
    for where, key in acked.items():
        assert sent[where] == key

    committed = ConsumerOffsetManager(str(store_dir)).queues_of("gk", "T")
    for queue_id, offset in committed.items():
        # never past what was consumed: everything before the offset was acknowledged
        assert all((queue_id, o) in acked for o in range(offset)), (queue_id, offset)
    assert sum(committed.values()) > 0

    store = small_store()
    got = consume_all(store, "gk", len(sent) - sum(committed.values()))
    redelivered = {}
    for m in got:
        redelivered.setdefault(m.queue_id, []).append(m.queue_offset)
    for queue_id in range(4):
        offsets = sorted(redelivered.get(queue_id, []))
        # redelivery starts exactly at the last persisted offset
        start = committed.get(queue_id, 0)
        assert offsets == list(range(start, 100)), queue_id
    assert set(acked.values()) | {m.uniq_key for m in got} == set(sent.values())
