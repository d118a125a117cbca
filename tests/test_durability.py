"""Durability: a real child process is killed with SIGKILL after acknowledging puts;
every acknowledged message must be there, whole, after reopening. Group commit in
SYNC_FLUSH, and the ASYNC_FLUSH flush service actually flushing.

Real power loss cannot be simulated here: these tests check the process-kill path
and recovery, and that PUT_OK in SYNC_FLUSH is only returned once the flushed
position covers the record."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from mqstore import ASYNC_FLUSH, SYNC_FLUSH, Message, MessageStore, PutStatus

FS = 64 * 1024
TOPIC = "Crash"
ROUNDS = 5


# The default ConsumeQueue and index sizes reserve 6 MB per queue and 420 MB per index
# file on disk (posix_fallocate); tests that open many stores use small ones.
SMALL_LIMITS = dict(mapped_file_size_consume_queue=20 * 1024, max_hash_slot_num=512,
                    max_index_num=2048)


def small(file_size, **overrides):
    """Store settings with `file_size` CommitLog files and small CQ / index files."""
    return dict(mapped_file_size_commitlog=file_size, **SMALL_LIMITS, **overrides)

CHILD = textwrap.dedent(
    """
    import os, random, sys
    from mqstore import Message, MessageStore, PutStatus

    path, flush_type, seed = sys.argv[1], sys.argv[2], int(sys.argv[3])
    file_size, topic = int(sys.argv[4]), sys.argv[5]
    rng = random.Random(seed)
    store = MessageStore(path, mapped_file_size_commitlog=file_size, flush_disk_type=flush_type,
                         mapped_file_size_consume_queue=20480, max_hash_slot_num=512,
                         max_index_num=2048)
    out = sys.stdout
    out.write(f"READY {os.getpid()}\\n")
    out.flush()
    i = 0
    while True:
        queue_id = rng.randrange(4)
        if rng.random() < 0.15:
            bodies = [rng.randbytes(rng.randrange(0, 800)) for _ in range(rng.randint(1, 6))]
            result = store.put_batch([Message(topic, b) for b in bodies], queue_id)
            if result.status is PutStatus.PUT_OK:
                out.write("".join(
                    f"{r.commitlog_offset} {queue_id} {r.queue_offset} {b.hex()}\\n"
                    for r, b in zip(result, bodies)
                ))
            else:
                out.write(f"FAIL {result.status.name}\\n")
        else:
            body = rng.randbytes(rng.randrange(0, 3000))
            result = store.put(Message(topic, body, keys=f"k{seed}-{i}"), queue_id)
            if result.status is PutStatus.PUT_OK:
                out.write(f"{result.commitlog_offset} {queue_id} {result.queue_offset} "
                          f"{body.hex()}\\n")
            else:
                out.write(f"FAIL {result.status.name}\\n")
        out.flush()
        i += 1
    """
)


def run_child_and_kill(script, store_dir, flush_type, seed, acks_wanted):
    """Start the child, read `acks_wanted` acknowledgements, SIGKILL it while it is
    still putting. Returns the acknowledged (offset, queue_id, queue_offset, body)."""
    proc = subprocess.Popen(
        [sys.executable, str(script), str(store_dir), flush_type, str(seed), str(FS), TOPIC],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    watchdog = threading.Timer(60, proc.kill)
    watchdog.start()
    acked = []
    try:
        ready = proc.stdout.readline()
        assert ready.startswith("READY"), ready + proc.stderr.read()
        assert int(ready.split()[1]) == proc.pid
        while len(acked) < acks_wanted:
            line = proc.stdout.readline()
            assert line, "child died: " + proc.stderr.read()
            assert not line.startswith("FAIL"), line
            offset, queue_id, queue_offset, body = line.rstrip("\n").split(" ")
            acked.append((int(offset), int(queue_id), int(queue_offset), bytes.fromhex(body)))
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)
    finally:
        watchdog.cancel()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    return acked


def check_recovered(store, acked, history):
    """Every acknowledged message is intact; the log reads through without error, its
    queue offsets are gap-free per queue, and the next queue offsets continue."""
    for offset, queue_id, queue_offset, body in acked:
        msg = store.look_by_offset(offset)
        assert msg is not None, f"acknowledged message at {offset} lost"
        assert msg.body == body, f"acknowledged message at {offset} damaged"
        assert (msg.topic, msg.queue_id, msg.queue_offset) == (TOPIC, queue_id, queue_offset)
    per_queue = {}
    by_offset = {}
    for msg in store.iter_commitlog():  # raises RecordError on a torn record
        expected = per_queue.get(msg.queue_id, 0)
        assert msg.queue_offset == expected, (msg.queue_id, msg.queue_offset, expected)
        per_queue[msg.queue_id] = expected + 1
        by_offset[msg.commitlog_offset] = msg.body
    for offset, *_rest, body in history:  # acknowledged in any earlier round too
        assert by_offset.get(offset) == body, offset
    last = max(by_offset) if by_offset else -1
    assert store.max_commitlog_offset() > last
    assert {q: n for (t, q), n in store.commitlog.queue_offsets.items() if t == TOPIC} == per_queue
    return per_queue


@pytest.mark.parametrize("flush_type", [SYNC_FLUSH, ASYNC_FLUSH])
def test_kill_9_loses_nothing_acknowledged(tmp_path, flush_type):
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    store_dir = tmp_path / "store"
    seed = int.from_bytes(os.urandom(4), "big")
    rng = random.Random(seed)
    history = []
    for round_no in range(ROUNDS):
        wanted = rng.randint(1, 300)
        acked = run_child_and_kill(script, store_dir, flush_type, seed + round_no, wanted)
        assert len(acked) == wanted
        history.extend(acked)
        assert (store_dir / "lock").exists()
        # the dead child's lock is gone: opening must not raise StoreLockedError
        with MessageStore(store_dir, **small(FS)) as store:
            per_queue = check_recovered(store, acked, history)
            # the recovered store accepts writes where the queues left off
            result = store.put(Message(TOPIC, b"parent"), 0)
            assert result.status is PutStatus.PUT_OK
            assert result.queue_offset == per_queue.get(0, 0)
            history.append((result.commitlog_offset, 0, result.queue_offset, b"parent"))


# ----------------------------------------------------------------------------- group commit


def test_sync_flush_put_ok_only_once_flushed(small_store):
    store = small_store(flush_disk_type=SYNC_FLUSH)
    queue = store.commitlog.queue
    for i in range(100):
        result = store.put(Message("T", bytes(i * 30)))
        assert result.status is PutStatus.PUT_OK
        assert queue.flushed_where >= result.commitlog_offset + result.store_size
    batch = store.put_batch([Message("T", b"x" * 700) for _ in range(20)])
    assert batch.ok
    assert queue.flushed_where >= batch.commitlog_offsets[-1] + batch[-1].store_size


def test_group_commit_shares_flushes(small_store, fast_thread_switching):
    store = small_store(flush_disk_type=SYNC_FLUSH)
    queue = store.commitlog.queue
    threads_n, per_thread = 8, 200
    errors = []
    results = [[] for _ in range(threads_n)]
    barrier = threading.Barrier(threads_n)

    def worker(n):
        try:
            barrier.wait()
            for i in range(per_thread):
                result = store.put(Message("T", b"%d-%d" % (n, i) + bytes(100)), n % 2)
                assert result.status is PutStatus.PUT_OK, result
                end = result.commitlog_offset + result.store_size
                assert queue.flushed_where >= end, "PUT_OK before the flush covered it"
                results[n].append(result)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(threads_n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    total = threads_n * per_thread
    count = store.commitlog.flush_service.flush_count
    assert 1 <= count < total, f"{count} flushes for {total} puts: no group commit"
    assert sum(len(r) for r in results) == total
    for queue_id in (0, 1):
        offsets = sorted(r.queue_offset for rs in results for r in rs if r.queue_id == queue_id)
        assert offsets == list(range(total // 2))


def test_lone_putter_needs_about_one_flush_per_put(small_store):
    store = small_store(flush_disk_type=SYNC_FLUSH)
    before = store.commitlog.flush_service.flush_count
    for i in range(50):
        assert store.put(Message("T", b"m%d" % i)).status is PutStatus.PUT_OK
    count = store.commitlog.flush_service.flush_count - before
    assert 1 <= count <= 50


# ----------------------------------------------------------------------------- async flush


def _wait_for(predicate, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.005)
    return predicate()


def test_async_flush_service_flushes_everything(small_store):
    store = small_store(flush_interval_commitlog=10, flush_commitlog_least_pages=0)
    queue = store.commitlog.queue
    for _ in range(300):  # about 5 files
        assert store.put(Message("T", bytes(1000))).ok
    end = store.max_commitlog_offset()
    assert end > 4 * FS
    assert _wait_for(lambda: queue.flushed_where == store.max_commitlog_offset()), (
        queue.flushed_where, end)
    for mapped in queue.files:
        assert mapped.flushed_position == mapped.wrote_position
    assert store.commitlog.flush_service.flush_count >= 1
    # and again after more puts
    for _ in range(10):
        assert store.put(Message("T", bytes(100))).ok
    assert _wait_for(lambda: queue.flushed_where == store.max_commitlog_offset())


def test_async_flush_waits_for_least_pages(small_store):
    store = small_store(
        flush_interval_commitlog=10,
        flush_commitlog_least_pages=4,
        flush_commitlog_thorough_interval=600_000,
    )
    queue = store.commitlog.queue
    assert store.put(Message("T", bytes(100))).ok
    time.sleep(0.2)
    assert queue.flushed_where == 0, "flushed less than flush_commitlog_least_pages"
    for _ in range(20):  # > 4 pages
        assert store.put(Message("T", bytes(1000))).ok
    assert _wait_for(lambda: queue.flushed_where >= 4 * 4096)


def test_async_put_does_not_wait_for_flush(small_store):
    store = small_store(flush_interval_commitlog=60_000)
    queue = store.commitlog.queue
    for _ in range(50):
        assert store.put(Message("T", bytes(500))).ok
    assert queue.flushed_where < store.max_commitlog_offset()
    assert store.flush() == store.max_commitlog_offset() == queue.flushed_where


# ----------------------------------------------------------------------------- crash artefacts


def test_crash_while_creating_next_file(store_dir):
    """A kill between creating the next CommitLog file and reserving its full length
    (os.open(O_CREAT) then posix_fallocate, in the background allocator) leaves a short
    trailing file that was never written. Reopening must recover, as RocketMQ 5 does
    (it deletes a zero-length last file), not refuse the store."""
    with MessageStore(store_dir, **small(FS)) as store:
        offsets = [store.put(Message(TOPIC, bytes([i]) * 1000)).commitlog_offset
                   for i in range(100)]
        end = store.max_commitlog_offset()
    cl = store_dir / "commitlog"
    names = sorted(os.listdir(cl))
    torn = cl / f"{int(names[-1]) + FS:020d}"
    torn.write_bytes(b"")

    with MessageStore(store_dir, **small(FS)) as store:
        assert store.max_commitlog_offset() == end
        for i, offset in enumerate(offsets):
            assert store.look_by_offset(offset).body == bytes([i]) * 1000
        for _ in range(80):  # into and past the file that was torn
            assert store.put(Message(TOPIC, bytes(1000))).ok
        assert store.max_commitlog_offset() > int(torn.name) + 1000
    for name in os.listdir(cl):
        assert os.path.getsize(cl / name) == FS
