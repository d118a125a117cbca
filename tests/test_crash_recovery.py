"""Crash recovery: real writer processes killed with SIGKILL at random moments, OS
crashes simulated by taking tails away from ConsumeQueues and rewinding the
checkpoint, RocketMQ's own crashed golden store, the checkpoint and abort files,
SYNC_FLUSH dispatching only flushed records, and open_readonly writing nothing.

The kill loops run MQSTORE_CRASH_ROUNDS (default 50) SYNC_FLUSH rounds and
MQSTORE_ASYNC_CRASH_ROUNDS (default 10) ASYNC_FLUSH rounds, each round one kill
point, all in one store directory that keeps growing. MQSTORE_CRASH_SEED replays
a run (the seed is in every failure message).
"""

from __future__ import annotations

import hashlib
import os
import random
import signal
import subprocess
import sys
import threading
import time
import zlib
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import pytest

from crash_writer import QUEUES, STORE_SETTINGS, TAGS, TOPICS
from golden import GOLDEN_CONFIG, case_dir, copy_store, manifest
from mqstore import (
    ASYNC_FLUSH,
    SYNC_FLUSH,
    Message,
    MessageStore,
    PutStatus,
    StoreCorruptedError,
    body_crc,
)
from mqstore.checkpoint import StoreCheckpoint
from mqstore.results import GetStatus

CRASH_ROUNDS = int(os.environ.get("MQSTORE_CRASH_ROUNDS", "50"))
ASYNC_CRASH_ROUNDS = int(os.environ.get("MQSTORE_ASYNC_CRASH_ROUNDS", "10"))
WRITER = Path(__file__).with_name("crash_writer.py")
FAR_FUTURE = 1_900_000_000_000  # 2030: after every golden store time


def crash_seed() -> int:
    value = os.environ.get("MQSTORE_CRASH_SEED")
    return int(value) if value else int.from_bytes(os.urandom(4), "big")


# ----------------------------------------------------------------------------- helpers


def read_whole_queue(store, topic, queue_id, start=0):
    """Every message `get` serves from `start` to the end, in order."""
    messages, offset = [], start
    while True:
        result = store.get(topic, queue_id, offset, 32)
        if result.status is not GetStatus.FOUND:
            assert result.status in (GetStatus.OFFSET_OVERFLOW_ONE,
                                     GetStatus.NO_MESSAGE_IN_QUEUE), (topic, queue_id, result)
            return messages
        messages.extend(result.messages)
        offset = result.next_begin_offset


def tree_state(root) -> Dict[str, Tuple]:
    """Every entry under `root`: files by (size, sha256, mtime_ns), directories by
    (sorted entries, mtime_ns)."""
    state = {}
    root = Path(root)
    for path in [root, *sorted(root.rglob("*"))]:
        stat = path.stat()
        relative = str(path.relative_to(root))
        if path.is_dir():
            state[relative] = ("dir", tuple(sorted(os.listdir(path))), stat.st_mtime_ns)
        else:
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            state[relative] = ("file", stat.st_size, digest, stat.st_mtime_ns)
    return state


def tree_content(root) -> Dict[str, Optional[str]]:
    """Relative path -> sha256 of every file (None for a directory); no times."""
    root = Path(root)
    return {str(p.relative_to(root)): (None if p.is_dir()
                                        else hashlib.sha256(p.read_bytes()).hexdigest())
            for p in sorted(root.rglob("*"))}


class Clock:
    """An injectable store clock the test moves by hand."""

    def __init__(self, now: int) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


# ----------------------------------------------------------------------------- kill -9 loop


@dataclass(frozen=True)
class Ack:
    topic: str
    queue_id: int
    offset: int
    queue_offset: int
    key: str
    tags: Optional[str]
    body: bytes

    @property
    def signature(self):
        return (self.topic, self.queue_id, self.queue_offset, zlib.crc32(self.body),
                len(self.body))


class ChildRun:
    """One crash_writer child: its acknowledgements, read by a thread as they come."""

    def __init__(self, store_dir, flush_type, seed, stderr_path) -> None:
        with open(stderr_path, "wb") as stderr:  # the child keeps its own descriptor
            self.proc = subprocess.Popen(
                [sys.executable, str(WRITER), str(store_dir), flush_type, str(seed)],
                stdout=subprocess.PIPE, stderr=stderr, stdin=subprocess.DEVNULL,
            )
        self.stderr_path = stderr_path
        self.acks: List[Ack] = []
        self.failures: List[str] = []
        self.torn_line = b""
        self.ready = threading.Event()
        self.pid = None
        self._wanted = None
        self.enough = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            if not line.endswith(b"\n"):
                self.torn_line = line  # cut off by the kill: not an acknowledgement
                break
            kind, _, rest = line.decode().rstrip("\n").partition(" ")
            if kind == "READY":
                self.pid = int(rest)
                self.ready.set()
            elif kind == "ACK":
                topic, queue_id, offset, queue_offset, key, tags, body = rest.split(" ")
                self.acks.append(Ack(topic, int(queue_id), int(offset), int(queue_offset),
                                     key, None if tags == "-" else tags, bytes.fromhex(body)))
                if self._wanted is not None and len(self.acks) >= self._wanted:
                    self.enough.set()
            else:
                self.failures.append(line.decode())
        self.ready.set()
        self.enough.set()

    def kill_after(self, rng) -> str:
        """SIGKILL at a random moment after the store is open: 20-400 ms later, or
        after a random number of acknowledgements. Returns how it was chosen."""
        if not self.ready.wait(60):
            raise AssertionError("writer never became ready")
        if self.pid is None:
            raise AssertionError("writer died before it was ready: " + self.stderr())
        assert self.pid == self.proc.pid
        if rng.random() < 0.5:
            delay = rng.uniform(0.02, 0.4)
            time.sleep(delay)
            how = f"{delay * 1000:.0f} ms after READY"
        else:
            wanted = rng.randint(1, 400)
            self._wanted = wanted
            if len(self.acks) >= wanted:
                self.enough.set()
            self.enough.wait(20)
            how = f"after {wanted} acks"
        os.kill(self.proc.pid, signal.SIGKILL)
        return how

    def finish(self) -> None:
        try:
            self.proc.wait(30)
            self._reader.join(30)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            self.proc.stdout.close()

    def stderr(self) -> str:
        return Path(self.stderr_path).read_text(errors="replace")[-3000:]


def check_after_kill(store, acks: List[Ack], history: Dict[int, tuple], where: str):
    """What a reopen after a SIGKILL must show; returns the next queue offsets."""
    report = store.recovery
    assert report.abnormal, f"{where}: the abort file was not seen: {report}"
    # every acknowledged message of this round, by offset
    for ack in acks:
        msg = store.look_by_offset(ack.offset)
        assert msg is not None, f"{where}: acknowledged message at {ack.offset} lost ({report})"
        assert msg.body == ack.body, f"{where}: acknowledged message at {ack.offset} damaged"
        assert (msg.topic, msg.queue_id, msg.queue_offset) == (
            ack.topic, ack.queue_id, ack.queue_offset), where
        assert msg.keys == [ack.key] and msg.tags == ack.tags, where
    # the whole log: CRC-valid records only, gap-free queue offsets per queue
    records: Dict[int, tuple] = {}
    per_queue: Dict[Tuple[str, int], List[int]] = defaultdict(list)
    for msg in store.iter_commitlog():
        assert msg.body_crc == body_crc(msg.body), (
            f"{where}: torn record at {msg.commitlog_offset} survived recovery")
        key = (msg.topic, msg.queue_id)
        assert msg.queue_offset == len(per_queue[key]), (
            f"{where}: {key} queue offset {msg.queue_offset} at {msg.commitlog_offset}, "
            f"expected {len(per_queue[key])}")
        per_queue[key].append(msg.commitlog_offset)
        records[msg.commitlog_offset] = (msg.topic, msg.queue_id, msg.queue_offset,
                                         zlib.crc32(msg.body), len(msg.body))
    assert store.max_commitlog_offset() == report.end_offset
    missing = [offset for offset, sig in history.items() if records.get(offset) != sig]
    assert not missing, f"{where}: acknowledged earlier, now lost or changed: {missing[:10]}"
    # every queue, through get: exactly the log's records of that queue, in order
    assert set(store.topics()) <= set(TOPICS)
    served = {(t, q) for t, qs in store.topics().items() for q in qs}
    assert served == set(per_queue), where
    for (topic, queue_id), offsets in per_queue.items():
        assert store.min_offset(topic, queue_id) == 0
        assert store.max_offset(topic, queue_id) == len(offsets), (where, topic, queue_id)
        messages = read_whole_queue(store, topic, queue_id)
        assert [m.queue_offset for m in messages] == list(range(len(offsets))), where
        assert [m.commitlog_offset for m in messages] == offsets, (where, topic, queue_id)
    # the index was rebuilt for what this run wrote
    for ack in acks[:: max(1, len(acks) // 20)]:
        found = store.query_by_key(ack.topic, ack.key)
        assert ack.offset in [m.commitlog_offset for m in found], (where, ack.key)
    return {key: len(offsets) for key, offsets in per_queue.items()}


def open_after_kill(store_dir, where):
    """Open the store a killed writer left behind; any failure fails the test."""
    try:
        return MessageStore(store_dir, **STORE_SETTINGS)
    except StoreCorruptedError as exc:
        raise AssertionError(f"{where}: the store does not open: {exc}") from exc


def kill_rounds(tmp_path, flush_type, rounds):
    store_dir = tmp_path / "store"
    seed = crash_seed()
    rng = random.Random(seed)
    history: Dict[int, tuple] = {}
    acked_total = rounds_with_acks = 0
    for round_no in range(rounds):
        child = ChildRun(store_dir, flush_type, seed * 1000 + round_no,
                         tmp_path / f"child-{round_no}.err")
        try:
            how = child.kill_after(rng)
        finally:
            child.finish()
        where = (f"{flush_type} round {round_no} (MQSTORE_CRASH_SEED={seed}, killed {how}, "
                 f"{len(child.acks)} acks)")
        assert child.proc.returncode == -signal.SIGKILL, (
            f"{where}: writer exited with {child.proc.returncode}: {child.stderr()}")
        assert not child.failures, f"{where}: {child.failures[:5]} {child.stderr()}"
        acked_total += len(child.acks)
        rounds_with_acks += bool(child.acks)

        with open_after_kill(store_dir, where) as store:
            next_offsets = check_after_kill(store, child.acks, history, where)
            history.update((ack.offset, ack.signature) for ack in child.acks)
            # keep writing into the recovered store, where its queues left off
            mine = []
            for n in range(4):
                topic, queue_id = rng.choice(TOPICS), rng.randrange(QUEUES)
                body = rng.randbytes(rng.randrange(0, 300))
                key = f"parent-{round_no}-{n}"
                result = store.put(Message(topic, body, keys=key, tags=rng.choice(TAGS)),
                                   queue_id)
                assert result.status is PutStatus.PUT_OK, where
                assert result.queue_offset == next_offsets.get((topic, queue_id), 0), where
                next_offsets[(topic, queue_id)] = result.queue_offset + 1
                mine.append(Ack(topic, queue_id, result.commitlog_offset, result.queue_offset,
                                key, None, body))
            history.update((ack.offset, ack.signature) for ack in mine)
            end = store.max_commitlog_offset()
        assert not (store_dir / "abort").exists(), where

        with MessageStore(store_dir, **STORE_SETTINGS) as store:
            report = store.recovery
            assert not report.abnormal, f"{where}: clean close, yet abnormal: {report}"
            assert report.end_offset == end and report.bytes_truncated == 0, (where, report)
            assert report.records_dispatched == 0, (where, report)
            for ack in mine:
                msg = store.look_by_offset(ack.offset)
                assert msg is not None and msg.body == ack.body, where
                got = store.get(ack.topic, ack.queue_id, ack.queue_offset, 1)
                assert got.messages and got.messages[0].commitlog_offset == ack.offset, where
    # the kills landed while the writers were busy, not only before they began
    assert rounds_with_acks >= rounds * 0.8, (rounds_with_acks, rounds, seed)
    assert acked_total > rounds, (acked_total, seed)
    return history


def test_sigkill_rounds_sync_flush(tmp_path):
    """MQSTORE_CRASH_ROUNDS kill points: 4 writer threads (single puts and batches over
    3 topics x 4 queues, keys and tags, 64 KiB CommitLog files that roll) are killed
    with SIGKILL at a random moment; the reopened store has every acknowledged message
    whole, by offset, by queue and by key, no torn record, and keeps going."""
    history = kill_rounds(tmp_path, SYNC_FLUSH, CRASH_ROUNDS)  # asserts every round
    assert len(history) > CRASH_ROUNDS  # acknowledged messages checked after the kills


def test_sigkill_rounds_async_flush(tmp_path):
    """ASYNC_FLUSH: the page cache outlives the process, so a kill loses nothing
    acknowledged either."""
    history = kill_rounds(tmp_path, ASYNC_FLUSH, ASYNC_CRASH_ROUNDS)  # asserts every round
    assert len(history) > ASYNC_CRASH_ROUNDS


def _index_file_name(store_dir) -> str:
    return max(os.listdir(Path(store_dir) / "index"))


@pytest.mark.parametrize("size", [0, 4096])
def test_half_created_index_file_after_kill(small_store, store_dir, size):
    """What a SIGKILL inside MappedFile._create_reserved leaves for an index file (the
    dispatcher creates one when the previous fills up, or at the first message). The
    store must open, drop the empty file and rebuild what it lacks."""
    store = small_store()
    for i in range(30):
        assert store.put(Message("Ix", b"m%d" % i, keys=f"ix-{i}")).ok
    store.close()
    newer = str(int(_index_file_name(store_dir)) + 1000)
    (store_dir / "index" / newer).write_bytes(bytes(size))
    (store_dir / "abort").touch()
    with small_store() as reopened:
        assert reopened.recovery.abnormal
        assert reopened.query_by_key("Ix", "ix-29")[0].body == b"m29"
        assert reopened.put(Message("Ix", b"new", keys="ix-new")).ok
        deadline = time.monotonic() + 5
        while reopened.dispatcher.behind() and time.monotonic() < deadline:
            time.sleep(0.005)  # the index is written by the dispatcher thread
        assert reopened.query_by_key("Ix", "ix-new")[0].body == b"new"


@pytest.mark.parametrize("size", [0, 600])
def test_half_created_consume_queue_file_after_kill(tmp_path, size):
    """The same kill point for a ConsumeQueue file (created by the dispatcher when the
    previous one fills): the empty file is dropped and the queue rebuilt."""
    path = tmp_path / "store"
    settings = dict(OS_CRASH_SETTINGS, max_index_num=2048, max_hash_slot_num=512)
    with MessageStore(path, **settings) as store:
        for i in range(60):  # exactly two full 30-unit files
            assert store.put(Message("Cq", b"m%d" % i)).ok
    directory = path / "consumequeue" / "Cq" / "0"
    assert sorted(os.listdir(directory)) == ["00000000000000000000", "00000000000000000600"]
    (directory / "00000000000000001200").write_bytes(bytes(size))
    (path / "abort").touch()
    with MessageStore(path, **settings) as store:
        assert store.recovery.abnormal
        assert store.max_offset("Cq", 0) == 60
        assert [m.body for m in read_whole_queue(store, "Cq", 0)] == [
            b"m%d" % i for i in range(60)]
        assert store.put(Message("Cq", b"m60")).queue_offset == 60
    with MessageStore(path, **settings) as store:
        assert store.get("Cq", 0, 60).messages[0].body == b"m60"


# ----------------------------------------------------------------------------- OS crash


OS_CRASH_SETTINGS = dict(
    mapped_file_size_commitlog=64 * 1024,
    mapped_file_size_consume_queue=30 * 20,  # 30 units a file, as in the golden stores
    max_hash_slot_num=64,
    max_index_num=128,  # index files fill up every 127 keys
)
T0 = 1_750_000_000_000
STEP_MS = 50


def write_os_crash_store(path, count=900):
    """`count` messages over 2 topics x 3 queues, each with a unique key, stored
    STEP_MS apart; closed cleanly. Returns the messages in put order (dicts)."""
    clock = Clock(T0)
    rng = random.Random(20251123)
    written = []
    with MessageStore(path, clock=clock, **OS_CRASH_SETTINGS) as store:
        for i in range(count):
            clock.now += STEP_MS
            topic, queue_id = ("OsA" if i % 2 else "OsB"), rng.randrange(3)
            if i == count - 1:
                topic, queue_id = "OsB", 2  # the last message: in the queue losing nothing
            body = bytes(rng.randrange(1, 256) for _ in range(rng.randrange(10, 200)))
            key = f"os-{i}"
            result = store.put(Message(topic, body, keys=key, tags=f"t{i % 3}"), queue_id)
            assert result.ok
            written.append(dict(topic=topic, queue_id=queue_id, offset=result.commitlog_offset,
                                queue_offset=result.queue_offset, key=key, body=body,
                                time=result.store_timestamp))
    return written


def cq_units(store_path, topic, queue_id) -> List[Tuple[Path, int]]:
    """(file, position) of every written (non-zero) unit of a queue, in order."""
    directory = Path(store_path) / "consumequeue" / topic / str(queue_id)
    units = []
    for path in sorted(directory.iterdir()):
        data = path.read_bytes()
        for position in range(0, len(data), 20):
            if any(data[position:position + 20]):
                units.append((path, position))
    return units


def zero_last_units(store_path, topic, queue_id, n) -> None:
    """What an OS crash leaves of a ConsumeQueue flushed n units less far: zeros."""
    for path, position in cq_units(store_path, topic, queue_id)[-n:] if n else []:
        with open(path, "r+b") as fh:
            fh.seek(position)
            fh.write(bytes(20))


#: units each queue loses in the simulated crash (OsB/2, holding the last message, none)
LOSSES = {("OsA", 0): 5, ("OsA", 1): 47, ("OsA", 2): 1, ("OsB", 0): 30, ("OsB", 1): 12,
          ("OsB", 2): 0}


def simulate_os_crash(path, written, checkpoint_index, with_abort=True):
    for (topic, queue_id), n in LOSSES.items():
        zero_last_units(path, topic, queue_id, n)
    if with_abort:
        (Path(path) / "abort").touch()
    checkpoint = StoreCheckpoint(str(Path(path) / "checkpoint"))
    checkpoint.physic_msg_timestamp = written[checkpoint_index]["time"]
    checkpoint.logics_msg_timestamp = written[checkpoint_index]["time"]
    checkpoint.flush()


def per_queue(written):
    queues = defaultdict(list)
    for row in written:
        queues[(row["topic"], row["queue_id"])].append(row)
    return queues


def test_os_crash_abnormal_recovery_refills_queues_and_index(tmp_path):
    """ConsumeQueues that lost different tails, an old checkpoint and the abort file:
    recovery re-dispatches from the checkpoint's CommitLog file and every queue and key
    is whole again."""
    path = tmp_path / "store"
    written = write_os_crash_store(path)
    files = sorted((path / "commitlog").iterdir())
    assert len(files) >= 3
    first_of_file = {}
    for row in written:
        first_of_file.setdefault(row["offset"] // (64 * 1024), row)
    # a checkpoint 10 s (200 messages) into the second file: recovery starts there
    target = first_of_file[1]
    checkpoint_index = written.index(target) + 3000 // STEP_MS + 200
    assert written[checkpoint_index]["offset"] // (64 * 1024) == 1
    lost_first = min(queue[-n]["offset"] for key, queue in per_queue(written).items()
                     for n in [LOSSES[key]] if n)
    assert lost_first > written[checkpoint_index]["offset"]
    simulate_os_crash(path, written, checkpoint_index)
    for (topic, queue_id), n in LOSSES.items():  # the damage is really there
        assert len(cq_units(path, topic, queue_id)) == len(
            per_queue(written)[(topic, queue_id)]) - n

    with MessageStore(path, **OS_CRASH_SETTINGS) as store:
        report = store.recovery
        assert report.abnormal
        assert report.start_offset == 64 * 1024, report
        assert report.records_dispatched == sum(1 for r in written if r["offset"] >= 64 * 1024)
        assert report.index_files_dropped, report
        last = store.look_by_offset(written[-1]["offset"])
        assert report.end_offset == store.max_commitlog_offset() == (
            last.commitlog_offset + last.store_size)
        assert sum(1 for _ in store.iter_commitlog()) == len(written)
        for (topic, queue_id), rows in per_queue(written).items():
            assert store.max_offset(topic, queue_id) == len(rows), (topic, queue_id)
            messages = read_whole_queue(store, topic, queue_id)
            assert [m.commitlog_offset for m in messages] == [r["offset"] for r in rows]
            assert [m.body for m in messages] == [r["body"] for r in rows]
        for row in written:
            found = store.query_by_key(row["topic"], row["key"])
            assert [m.commitlog_offset for m in found] == [row["offset"]], row["key"]
        # and the store goes on where each queue ends
        result = store.put(Message("OsA", b"after", keys="after"), 1)
        assert result.queue_offset == len(per_queue(written)[("OsA", 1)])
    with MessageStore(path, **OS_CRASH_SETTINGS) as store:
        assert not store.recovery.abnormal
        assert store.query_by_key("OsA", "after")[0].body == b"after"


def test_os_crash_without_abort_file_does_not_refill_queues(tmp_path):
    """The same damage found by a normal recovery (no abort file: nothing says a crash
    happened): re-dispatch starts at the highest ConsumeQueue end, which the undamaged
    queue holding the last message puts at the end of the log. So nothing is
    re-dispatched and the queues that lost units stay short, as durability.md says:
    their messages are in the CommitLog (look_by_offset, iter_commitlog) but not
    served by get."""
    path = tmp_path / "store"
    written = write_os_crash_store(path)
    simulate_os_crash(path, written, 100, with_abort=False)
    with MessageStore(path, **OS_CRASH_SETTINGS) as store:
        report = store.recovery
        assert not report.abnormal
        assert report.records_dispatched == 0, report
        last = store.look_by_offset(written[-1]["offset"])
        assert report.end_offset == last.commitlog_offset + last.store_size
        for (topic, queue_id), rows in per_queue(written).items():
            kept = len(rows) - LOSSES[(topic, queue_id)]
            assert store.max_offset(topic, queue_id) == kept, (topic, queue_id)
            messages = read_whole_queue(store, topic, queue_id)
            assert [m.commitlog_offset for m in messages] == [r["offset"] for r in rows[:kept]]
        for row in written:
            assert store.look_by_offset(row["offset"]).body == row["body"]
        assert sum(1 for _ in store.iter_commitlog()) == len(written)


# ----------------------------------------------------------------------------- golden crash


def test_golden_crash_store_recovers(tmp_path):
    """RocketMQ 4.9.8's crashed store (abort present, checkpoint all zeros, a
    pre-allocated empty third file): recovered from the first file, served whole."""
    path = copy_store("crash", tmp_path)
    rows = manifest("crash")
    empty = path / "commitlog" / "00000000000000131072"
    assert empty.exists() and not any(empty.read_bytes())
    config = GOLDEN_CONFIG  # delivery off: the two long-due delayed messages stay parked
    with MessageStore(path, clock=lambda: FAR_FUTURE, **config) as store:
        report = store.recovery
        assert report.abnormal
        assert report.start_offset == 0
        assert report.end_offset == 93431 == store.max_commitlog_offset()
        assert report.bytes_truncated == 0
        assert [os.path.basename(p) for p in report.files_deleted] == ["00000000000000131072"]
        assert not empty.exists()
        assert (path / "abort").exists()
        for row in rows:
            msg = store.look_by_offset(row["commitLogOffset"])
            assert msg is not None and msg.msg_id == row["msgId"]
            assert hashlib.sha256(msg.body).hexdigest() == row["bodySha256"]
        queues = defaultdict(list)
        for row in rows:
            if row["inConsumeQueue"]:
                queues[(row["topic"], row["queueId"])].append(row)
        for (topic, queue_id), queue_rows in queues.items():
            messages = read_whole_queue(store, topic, queue_id)
            assert [m.commitlog_offset for m in messages] == [
                r["commitLogOffset"] for r in queue_rows], (topic, queue_id)
            assert [m.queue_offset for m in messages] == [r["queueOffset"] for r in queue_rows]
        lookups = 0
        for row in rows:
            keys = [k for k in (row["keys"] or "").split(" ") if k]
            for key in keys + ([row["uniqKey"]] if row["uniqKey"] else []):
                found = store.query_by_key(row["topic"], key, max_msgs=64)
                assert row["commitLogOffset"] in [m.commitlog_offset for m in found], key
                lookups += 1
        assert lookups == 480  # as the golden README's Java reader counted
    assert not (path / "abort").exists()
    assert os.path.getsize(path / "checkpoint") == 4096
    checkpoint = StoreCheckpoint(str(path / "checkpoint"), readonly=True)
    assert checkpoint.physic_msg_timestamp > 0 and checkpoint.logics_msg_timestamp > 0
    assert checkpoint.logics_msg_timestamp == rows[-1]["storeTimestamp"]
    assert checkpoint.physic_msg_timestamp <= checkpoint.logics_msg_timestamp
    # and it opens cleanly afterwards
    with MessageStore(path, clock=lambda: FAR_FUTURE, **config) as store:
        assert not store.recovery.abnormal
        assert store.max_commitlog_offset() == 93431


# ----------------------------------------------------------------------------- checkpoint, abort


def test_abort_file_while_open_and_checkpoint_after_close(small_store, store_dir):
    clock = Clock(T0)
    store = small_store(clock=clock)
    assert (store_dir / "abort").exists()
    last = None
    for i in range(50):
        clock.now += 7
        last = store.put(Message("Ck", b"x" * i, keys=f"c{i}"), i % 2)
        assert last.ok
    clock.now += 1000  # closing later does not move the checkpoint past the last message
    assert (store_dir / "abort").exists()
    store.close()
    assert not (store_dir / "abort").exists()
    assert os.path.getsize(store_dir / "checkpoint") == 4096
    data = (store_dir / "checkpoint").read_bytes()
    assert not any(data[24:])
    checkpoint = StoreCheckpoint(str(store_dir / "checkpoint"), readonly=True)
    assert last.store_timestamp == T0 + 50 * 7
    assert checkpoint.physic_msg_timestamp == last.store_timestamp
    assert checkpoint.logics_msg_timestamp == last.store_timestamp
    assert checkpoint.index_msg_timestamp == 0  # no index file filled up
    reopened = small_store(clock=clock)
    assert not reopened.recovery.abnormal
    assert (store_dir / "abort").exists()
    reopened.close()
    assert not (store_dir / "abort").exists()


@pytest.mark.parametrize("size", [0, 24, 4095, 4097, 8192])
def test_checkpoint_of_wrong_size_is_refused(small_store, store_dir, size):
    store = small_store()
    for i in range(20):
        assert store.put(Message("Ck", b"m%d" % i)).ok
    store.close()
    checkpoint = store_dir / "checkpoint"
    checkpoint.write_bytes(bytes(range(256)) * (size // 256) + bytes(size % 256))
    before = tree_content(store_dir)
    with pytest.raises(StoreCorruptedError) as info:
        small_store()
    assert info.value.path == str(checkpoint)
    assert str(checkpoint) in str(info.value)
    assert tree_content(store_dir) == before, "a refused open changed the store"
    assert not (store_dir / "abort").exists()
    with pytest.raises(StoreCorruptedError):
        MessageStore.open_readonly(store_dir)
    # the failed open released the lock: with a good checkpoint the store opens
    checkpoint.unlink()
    assert small_store().look_by_offset(0).body == b"m0"


# ----------------------------------------------------------------------------- SYNC_FLUSH dispatch


def _wait_for(predicate, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.002)
    return predicate()


def test_sync_flush_dispatches_only_flushed_records(small_store, monkeypatch):
    """SYNC_FLUSH promises that a record a consumer sees is on disk. A WAIT=false put
    returns before its flush, so until a flush covers it the record may still vanish
    in an OS crash: then recovery cuts it off and its queue offset goes to another
    message. A consumer that had already processed it (and committed its offset)
    would have acted on a message that no longer exists. So the dispatcher stops at
    the flushed position: the record is not served by get until it is flushed."""
    store = small_store(flush_disk_type=SYNC_FLUSH)
    assert store.put(Message("Sf", b"flushed")).ok
    assert _wait_for(lambda: store.max_offset("Sf", 0) == 1)
    commitlog = store.commitlog
    monkeypatch.setattr(commitlog, "flush", lambda: commitlog.queue.flushed_where)
    result = store.put(Message("Sf", b"not flushed", properties={"WAIT": "false"}))
    assert result.ok and result.queue_offset == 1
    end = result.commitlog_offset + result.store_size
    assert store.max_commitlog_offset() == end
    assert store.look_by_offset(result.commitlog_offset).body == b"not flushed"
    deadline = time.monotonic() + 0.15
    while time.monotonic() < deadline:
        assert store.dispatcher.dispatch_limit() < end
        assert store.max_offset("Sf", 0) == 1
        got = store.get("Sf", 0, 1)
        assert got.status is GetStatus.OFFSET_OVERFLOW_ONE and not got.messages
        time.sleep(0.005)
    assert not store.wait_for_message("Sf", 0, 1, 0.05)
    monkeypatch.undo()  # the background group-commit flush (every 10 ms) takes it now
    assert _wait_for(lambda: store.max_offset("Sf", 0) == 2, 2.0)
    assert store.commitlog.queue.flushed_where >= end
    assert store.get("Sf", 0, 1).messages[0].body == b"not flushed"


def test_sync_flush_store_flush_releases_held_records(small_store, monkeypatch):
    """Same, with the background flush thread stopped for good: store.flush() is what
    makes the record visible."""
    store = small_store(flush_disk_type=SYNC_FLUSH)
    commitlog = store.commitlog
    commitlog.flush_service.shutdown()  # no background flushes any more
    result = store.put(Message("Sf", b"waiting", properties={"WAIT": "false"}))
    assert result.ok
    time.sleep(0.1)
    assert store.max_offset("Sf", 0) == 0
    assert store.dispatcher.behind() == 0  # nothing flushed is left to dispatch
    store.flush()
    assert _wait_for(lambda: store.max_offset("Sf", 0) == 1, 2.0)
    assert store.get("Sf", 0, 0).messages[0].body == b"waiting"


def test_async_flush_dispatches_unflushed_records(small_store, monkeypatch):
    """The contrast: ASYNC_FLUSH promises nothing across an OS crash and dispatches up to
    the written end (RocketMQ 4), flushed or not."""
    store = small_store(flush_interval_commitlog=60_000,
                        flush_commitlog_thorough_interval=600_000)
    result = store.put(Message("Af", b"unflushed"))
    assert store.commitlog.queue.flushed_where <= result.commitlog_offset
    assert _wait_for(lambda: store.max_offset("Af", 0) == 1, 2.0)
    assert store.commitlog.queue.flushed_where <= result.commitlog_offset


# ----------------------------------------------------------------------------- read-only


def fill_store(path, count=400):
    """A small store of `count` keyed messages over 2 topics; closed. Returns them."""
    written = []
    rng = random.Random(7)
    with MessageStore(path, mapped_file_size_commitlog=64 * 1024,
                      mapped_file_size_consume_queue=600, max_hash_slot_num=64,
                      max_index_num=256) as store:
        for i in range(count):
            topic = "RoA" if i % 3 else "RoB"
            body = rng.randbytes(rng.randrange(1, 400))
            result = store.put(Message(topic, body, keys=f"ro-{i}", tags="t"), i % 2)
            assert result.ok
            written.append((topic, i % 2, result.commitlog_offset, result.queue_offset,
                            f"ro-{i}", body))
    return written


def read_everything(store, written, served_by_get=True):
    for topic, queue_id, offset, queue_offset, key, body in written:
        assert store.look_by_offset(offset).body == body
        if served_by_get:
            got = store.get(topic, queue_id, queue_offset, 1)
            assert got.messages and got.messages[0].commitlog_offset == offset
        assert store.query_by_key(topic, key)
    assert sum(1 for _ in store.iter_commitlog()) >= len(written)
    for topic, queues in store.topics().items():
        for queue_id in queues:
            read_whole_queue(store, topic, queue_id)
    store.refresh()


@pytest.mark.parametrize("crashed", [False, True], ids=["clean", "crashed-torn-tail"])
def test_open_readonly_writes_nothing(tmp_path, crashed):
    path = tmp_path / "store"
    written = fill_store(path)
    os.unlink(path / "lock")
    if crashed:
        # a crash left the abort file, a torn last record and a stale unit behind it
        (path / "abort").touch()
        last = sorted((path / "commitlog").iterdir())[-1]
        offset = written[-1][2] - int(last.name)
        with open(last, "r+b") as fh:
            fh.seek(offset + 100)
            fh.write(b"\xff" * 8)
        torn_at = written[-1][2]
        written = written[:-1]
    time.sleep(0.01)  # so that any write would show in a later mtime
    before = tree_state(path)
    store = MessageStore.open_readonly(path, max_hash_slot_num=64, max_index_num=256,
                                       mapped_file_size_commitlog=64 * 1024,
                                       mapped_file_size_consume_queue=600)
    try:
        assert store.recovery.abnormal is crashed
        if crashed:  # the torn record is out of view, and only out of view
            assert store.max_commitlog_offset() == torn_at
        read_everything(store, written)
    finally:
        store.close()
    assert tree_state(path) == before
    assert not (path / "lock").exists()
    assert (path / "abort").exists() is crashed


@pytest.mark.parametrize("case", ["basic", "crash"])
def test_open_readonly_serves_golden_store_in_place(case):
    """Straight on the read-only golden directory (no copy): nothing can be written,
    deleted or locked there, and every manifest message is served."""
    path = case_dir(case) / "store"
    before = tree_state(path)
    rows = manifest(case)
    store = MessageStore.open_readonly(path, clock=lambda: FAR_FUTURE, **GOLDEN_CONFIG)
    try:
        assert store.recovery.abnormal is (case == "crash")
        for row in rows:
            msg = store.look_by_offset(row["commitLogOffset"])
            assert msg is not None and msg.msg_id == row["msgId"]
            assert hashlib.sha256(msg.body).hexdigest() == row["bodySha256"]
        queues = defaultdict(list)
        for row in rows:
            if row["inConsumeQueue"]:
                queues[(row["topic"], row["queueId"])].append(row)
        for (topic, queue_id), queue_rows in queues.items():
            start = store.min_offset(topic, queue_id)
            messages = read_whole_queue(store, topic, queue_id, start)
            assert [m.commitlog_offset for m in messages] == [
                r["commitLogOffset"] for r in queue_rows if r["queueOffset"] >= start]
        if case == "crash":
            assert store.max_commitlog_offset() == 93431
    finally:
        store.close()
    assert tree_state(path) == before
