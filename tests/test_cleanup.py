"""Retention (issue 7): expiry cleanup at the configured hour, forced deletion by disk
use, the current file kept, ConsumeQueue and index files following the CommitLog
minimum, held files, concurrent readers, reopening (clean and after kill -9), the
disk-full refusal on an injected ratio and on a real 8 MiB tmpfs."""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from mqstore import Message, MessageStore, PutStatus, StoreConfig
from mqstore.results import GetStatus

HOUR_MS = 3_600_000
ALL_HOURS = ";".join(f"{hour:02d}" for hour in range(24))
WRITER = Path(__file__).with_name("retention_writer.py")
TOPIC = "Ret"


class Clock:
    """An injectable store clock (ms) the test moves by hand."""

    def __init__(self, now_ms: int) -> None:
        self.now = now_ms

    def __call__(self) -> int:
        return self.now


class Disk:
    """An injectable disk-usage function: every path reports `ratio`."""

    def __init__(self, ratio: float = 0.10) -> None:
        self.ratio = ratio

    def __call__(self, path: str) -> float:
        return self.ratio


def local_hour(ms: int) -> int:
    return time.localtime(ms / 1000).tm_hour


def body(queue_id: int, index: int) -> bytes:
    return f"{queue_id}:{index}:".encode().ljust(400, b".")


def fill(store, messages: int, queues: int = 2):
    """Put `messages` (400-byte bodies, ~150 per 64 KiB file) round-robin over queues;
    returns {queue_id: [(queue_offset, commitlog_offset, body)]}."""
    put = {q: [] for q in range(queues)}
    for i in range(messages):
        queue_id = i % queues
        data = body(queue_id, i)
        result = store.put(Message(TOPIC, data, keys=f"key{i}"), queue_id)
        assert result.status is PutStatus.PUT_OK, result
        put[queue_id].append((result.queue_offset, result.commitlog_offset, data))
    wait_dispatched(store)
    return put


def wait_dispatched(store, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while store.dispatcher.behind() > 0:
        assert time.monotonic() < deadline, "dispatcher did not catch up"
        time.sleep(0.002)


def commitlog_files(store) -> list:
    """Names of the store's CommitLog files (not the next one, pre-allocated)."""
    return [os.path.basename(mapped.path) for mapped in store.commitlog.queue.files]


@pytest.fixture
def retention_store(small_store):
    """A store whose scheduler never runs cleanup by itself (the tests call it), with
    an injected clock and disk, no pauses between deletions and 2000-byte CQ files."""

    def make(path=None, clock=None, disk=None, **overrides):
        overrides.setdefault("clean_resource_interval", 3_600_000)
        overrides.setdefault("delete_commit_log_files_interval", 0)
        overrides.setdefault("delete_consume_queue_files_interval", 0)
        overrides.setdefault("mapped_file_size_consume_queue", 100 * 20)
        store = small_store(
            path,
            clock=clock or Clock(time.time_ns() // 1_000_000),
            disk_usage=disk or Disk(),
            **overrides,
        )
        return store

    return make


# ----------------------------------------------------------------------------- config


@pytest.mark.parametrize(
    "field, value",
    [
        ("delete_when", "25"),
        ("delete_when", "04;x"),
        ("delete_when", ""),
        ("delete_when", 4),
        ("disk_max_used_space_ratio", 9),
        ("disk_max_used_space_ratio", 96),
        ("file_reserved_time", -1),
        ("disk_space_warning_level_ratio", 34),
        ("disk_space_warning_level_ratio", 91),
        ("disk_space_clean_forcibly_ratio", 29),
        ("disk_space_clean_forcibly_ratio", 86),
        ("clean_resource_interval", 0),
        ("delete_file_batch_max", 0),
        ("delete_commit_log_files_interval", -1),
        ("delete_consume_queue_files_interval", -1),
        ("destroy_mapped_file_interval_forcibly", -1),
        ("stats_log_interval", -5),
        ("disk_usage", "not callable"),
    ],
)
def test_invalid_retention_settings_name_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        StoreConfig(**{field: value})


def test_retention_defaults_are_rocketmq_s():
    config = StoreConfig()
    assert (
        config.file_reserved_time,
        config.delete_when,
        config.disk_max_used_space_ratio,
        config.disk_space_warning_level_ratio,
        config.disk_space_clean_forcibly_ratio,
        config.clean_resource_interval,
        config.delete_file_batch_max,
        config.delete_commit_log_files_interval,
        config.destroy_mapped_file_interval_forcibly,
    ) == (72, "04", 75, 90, 85, 10_000, 10, 100, 120_000)
    StoreConfig(delete_when="01;13", disk_space_warning_level_ratio=35)  # valid edges


# ----------------------------------------------------------------------------- policy


def test_expired_files_go_only_at_a_delete_hour(retention_store, store_dir):
    clock = Clock(time.time_ns() // 1_000_000)
    start = clock.now
    store = retention_store(
        clock=clock, file_reserved_time=1, delete_when=f"{local_hour(start + 3 * HOUR_MS):02d}"
    )
    fill(store, 900)
    before = commitlog_files(store)
    assert len(before) >= 5
    clock.now = start + 2 * HOUR_MS  # expired, but not the delete hour
    result = store._retention.run()
    assert result.reason == "" and result.deleted == []
    assert commitlog_files(store) == before
    clock.now = start + 3 * HOUR_MS  # expired and the delete hour
    result = store._retention.run()
    assert result.reason == "time" and not result.forced
    assert [os.path.basename(p) for p in result.commitlog_files] == before[:-1]
    assert commitlog_files(store) == before[-1:]


def test_unexpired_files_stay_at_the_delete_hour(retention_store, store_dir):
    clock = Clock(time.time_ns() // 1_000_000)
    store = retention_store(
        clock=clock, file_reserved_time=72, delete_when=f"{local_hour(clock.now):02d}"
    )
    fill(store, 600)
    before = commitlog_files(store)
    result = store._retention.run()
    assert result.reason == "time" and result.commitlog_files == []
    clock.now += 71 * HOUR_MS + 59 * 60_000  # a minute short of 72 hours (any hour)
    assert store.delete_expired_files().commitlog_files == []
    clock.now += 2 * 60_000
    assert len(store.delete_expired_files().commitlog_files) == len(before) - 1


def test_disk_ratio_makes_cleanup_run_and_then_forces_it(retention_store, store_dir):
    clock = Clock(time.time_ns() // 1_000_000)
    disk = Disk(0.10)
    # never a delete hour: the hour after the current one is the only one listed
    store = retention_store(
        clock=clock,
        disk=disk,
        file_reserved_time=1,
        delete_when=f"{local_hour(clock.now + HOUR_MS):02d}",
        delete_file_batch_max=3,
    )
    fill(store, 1200)
    before = commitlog_files(store)
    assert len(before) >= 8
    disk.ratio = 0.80  # above disk_max_used_space_ratio (75): cleanup runs ...
    result = store._retention.run()
    assert result.reason == "space" and not result.forced
    assert result.commitlog_files == []  # ... but nothing has expired
    disk.ratio = 0.86  # above disk_space_clean_forcibly_ratio (85): unexpired files go
    result = store._retention.run()
    assert result.forced and len(result.commitlog_files) == 3  # delete_file_batch_max
    assert commitlog_files(store) == before[3:]
    assert store.disk_full is None  # 86% is not full (90)
    with_forcing_off = retention_store(
        path=store_dir.parent / "other", clock=clock, disk=disk, clean_file_forcibly_enable=False
    )
    fill(with_forcing_off, 400)
    assert with_forcing_off._retention.run().commitlog_files == []


def test_the_current_file_is_never_deleted(retention_store, store_dir):
    store = retention_store(file_reserved_time=0)
    assert store.delete_expired_files(force=True).commitlog_files == []  # no file yet
    put = fill(store, 1000)
    for _ in range(3):
        store.delete_expired_files(force=True)
    files = commitlog_files(store)
    assert len(files) == 1
    last = max(clo for entries in put.values() for _, clo, _ in entries)
    assert int(files[0]) <= last < int(files[0]) + 64 * 1024
    assert store.look_by_offset(last).body == body(999 % 2, 999)
    assert store.delete_expired_files(force=True).commitlog_files == []
    assert store.put(Message(TOPIC, b"after"), 0).status is PutStatus.PUT_OK


def expected_min(entries, commitlog_min):
    return min(qo for qo, clo, _ in entries if clo >= commitlog_min)


def check_queues_after_cleanup(store, put):
    """Min offsets follow the CommitLog minimum; below them OFFSET_TOO_SMALL; from
    them on every message is there with the right body."""
    commitlog_min = store.min_commitlog_offset()
    for queue_id, entries in put.items():
        minimum = expected_min(entries, commitlog_min)
        assert store.min_offset(TOPIC, queue_id) == minimum
        below = store.get(TOPIC, queue_id, 0)
        assert below.status is GetStatus.OFFSET_TOO_SMALL
        assert below.next_begin_offset == minimum and below.min_offset == minimum
        got, offset = [], minimum
        while True:
            result = store.get(TOPIC, queue_id, offset)
            if result.status is not GetStatus.FOUND:
                assert result.status is GetStatus.OFFSET_OVERFLOW_ONE, result
                break
            got.extend(result.messages)
            offset = result.next_begin_offset
        assert [m.body for m in got] == [b for qo, _, b in entries if qo >= minimum]


def test_queue_min_offsets_and_files_follow_the_commitlog(retention_store, store_dir):
    store = retention_store(file_reserved_time=0, max_index_num=500, delete_file_batch_max=100)
    put = fill(store, 1500)  # 750 per queue: 8 ConsumeQueue files each
    cq_dir = store_dir / "consumequeue" / TOPIC / "0"
    cq_before = sorted(os.listdir(cq_dir))
    index_before = sorted(os.listdir(store_dir / "index"))
    assert len(index_before) >= 3
    before = commitlog_files(store)
    result = store.delete_expired_files(force=True)
    assert [os.path.basename(p) for p in result.commitlog_files] == before[:-1]
    commitlog_min = store.min_commitlog_offset()
    assert commitlog_min == int(commitlog_files(store)[0])
    check_queues_after_cleanup(store, put)
    # ConsumeQueue files whose last unit is below the CommitLog minimum are gone, the
    # first one left still reaches it
    cq_after = sorted(os.listdir(cq_dir))
    assert len(cq_after) < len(cq_before)
    assert all(
        str(cq_dir / name) in result.consume_queue_files for name in set(cq_before) - set(cq_after)
    )
    minimum0 = store.min_offset(TOPIC, 0)
    assert int(cq_after[0]) <= minimum0 * 20 < int(cq_after[0]) + 2000
    # index files wholly below the minimum went, never the last one
    index_after = sorted(os.listdir(store_dir / "index"))
    assert index_after and index_after[-1] == index_before[-1]
    assert [os.path.basename(p) for p in result.index_files] == index_before[
        : len(index_before) - len(index_after)
    ]


def test_deleted_messages_are_not_found_by_key_or_id(retention_store):
    store = retention_store(file_reserved_time=0)
    put = fill(store, 900)
    gone_offset = put[0][0][1]
    kept_offset = put[1][-1][1]
    gone_id = store.look_by_offset(gone_offset).msg_id
    kept = store.look_by_offset(kept_offset)
    assert store.query_by_key(TOPIC, "key0")
    store.delete_expired_files(force=True)
    assert gone_offset < store.min_commitlog_offset() <= kept_offset
    assert store.query_by_key(TOPIC, "key0") == []
    assert store.look_by_msg_id(gone_id) is None
    assert store.look_by_offset(gone_offset) is None
    assert store.look_by_msg_id(kept.msg_id).body == kept.body
    assert [m.body for m in store.query_by_key(TOPIC, "key899")] == [kept.body]


def test_reopen_after_cleanup_keeps_min_offsets(retention_store, store_dir):
    store = retention_store(file_reserved_time=0)
    put = fill(store, 1200)
    store.delete_expired_files(force=True)
    minimums = {q: store.min_offset(TOPIC, q) for q in put}
    commitlog_min = store.min_commitlog_offset()
    store.close()
    store = retention_store(file_reserved_time=0)
    assert store.recovery.stop_reason == "" or not store.recovery.abnormal
    assert store.min_commitlog_offset() == commitlog_min
    assert {q: store.min_offset(TOPIC, q) for q in put} == minimums
    check_queues_after_cleanup(store, put)
    result = store.put(Message(TOPIC, b"next"), 0)
    assert result.queue_offset == len(put[0])


def test_reopen_after_kill_during_cleanup_recovers(tmp_path):
    """A writer whose scheduler deletes files every 20 ms is SIGKILLed; the reopened
    store (abnormal recovery) serves every acknowledged message still above the
    CommitLog minimum, and each queue's min offset is the first of them."""
    sys.path.insert(0, str(WRITER.parent))
    from retention_writer import QUEUES, SETTINGS
    from retention_writer import TOPIC as WTOPIC

    store_dir = tmp_path / "killed"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    child = subprocess.Popen(
        [sys.executable, str(WRITER), str(store_dir)], stdout=subprocess.PIPE, env=env
    )
    assert child.stdout.readline() == b"READY\n"
    time.sleep(1.0 + random.random())
    child.send_signal(signal.SIGKILL)
    output = child.stdout.read()
    child.wait()
    acks = {}
    for line in output.split(b"\n")[:-1]:  # a line cut by the kill is no ack
        _, queue_id, clo, qo = line.split()
        acks.setdefault(int(queue_id), []).append((int(qo), int(clo)))
    assert sum(map(len, acks.values())) > 500
    assert (store_dir / "abort").exists()
    store = MessageStore(store_dir, **dict(SETTINGS, clean_resource_interval=3_600_000))
    try:
        assert store.recovery.abnormal
        commitlog_min = store.min_commitlog_offset()
        assert commitlog_min > 0, "the writer's cleanup deleted nothing"
        for queue_id in range(QUEUES):
            kept = sorted((qo, clo) for qo, clo in acks[queue_id] if clo >= commitlog_min)
            assert kept, queue_id
            minimum = store.min_offset(WTOPIC, queue_id)
            # (the first message above the minimum may have been stored but killed
            # before its ACK line: the minimum is at or before the first acked one)
            assert 0 < minimum <= kept[0][0]
            first = store.get(WTOPIC, queue_id, minimum, 1)
            assert first.status is GetStatus.FOUND
            assert first.messages[0].commitlog_offset >= commitlog_min
            before_min = store.consume_queue(WTOPIC, queue_id).unit(minimum - 1)
            assert before_min is None or before_min[0] < commitlog_min  # None: file deleted
            below = store.get(WTOPIC, queue_id, minimum - 1)
            assert below.status is GetStatus.OFFSET_TOO_SMALL
            assert below.next_begin_offset == minimum
            offsets = {}
            offset = minimum
            while True:
                result = store.get(WTOPIC, queue_id, offset)
                if result.status is not GetStatus.FOUND:
                    break
                for message in result.messages:
                    offsets[message.queue_offset] = message.commitlog_offset
                offset = result.next_begin_offset
            for qo, clo in kept:
                assert offsets.get(qo) == clo, (queue_id, qo)
    finally:
        store.close()


def test_held_file_is_deleted_only_after_the_forcible_interval(retention_store, store_dir):
    clock = Clock(time.time_ns() // 1_000_000)
    store = retention_store(
        clock=clock, file_reserved_time=0, destroy_mapped_file_interval_forcibly=120_000
    )
    fill(store, 600)
    queue = store.commitlog.queue
    first = queue.files[0]
    assert first.hold()  # a reader in the middle of reading it
    expected = first.read(0, 64)
    result = store.delete_expired_files(force=True)
    assert result.commitlog_files == [] and result.pending_files == [first.path]
    assert os.path.exists(first.path) and queue.files[0] is first
    assert store.min_commitlog_offset() == queue.files[1].file_from_offset  # unreadable
    assert not first.hold()  # no new reader gets it
    clock.now += 119_999
    assert store.delete_expired_files(force=True).commitlog_files == []
    assert os.path.exists(first.path)
    clock.now += 1
    result = store.delete_expired_files(force=True)
    assert result.commitlog_files[0] == first.path
    assert not os.path.exists(first.path) and first not in queue.files
    assert first.read(0, 64) == expected  # the holder's mapping is still valid
    first.release()
    assert first.is_closed


def test_file_released_before_the_interval_goes_at_the_next_pass(retention_store):
    clock = Clock(time.time_ns() // 1_000_000)
    not_now = f"{local_hour(clock.now + 2 * HOUR_MS):02d}"
    store = retention_store(clock=clock, file_reserved_time=0, delete_when=not_now)
    fill(store, 600)
    first = store.commitlog.queue.files[0]
    assert first.hold()
    assert store.delete_expired_files(force=True).pending_files == [first.path]
    first.release()
    assert first.is_closed  # the last holder unmapped it
    # a scheduled pass outside the delete hour retries only the pending first file,
    # though the files after it have expired too
    clock.now += 60_000
    result = store._retention.run()
    assert result.reason == "" and result.commitlog_files == [first.path]
    assert not os.path.exists(first.path)
    assert store._retention.run().commitlog_files == []  # the others wait for the hour


def test_concurrent_readers_during_cleanup(retention_store, fast_thread_switching):
    store = retention_store(file_reserved_time=0)
    put = fill(store, 600)
    stop = threading.Event()
    errors = []
    seen = [0]
    ok_statuses = {
        GetStatus.FOUND,
        GetStatus.OFFSET_TOO_SMALL,
        GetStatus.OFFSET_FOUND_NULL,
        GetStatus.MESSAGE_WAS_REMOVING,
        GetStatus.OFFSET_OVERFLOW_ONE,
        GetStatus.NO_MATCHED_MESSAGE,
    }

    def reader(seed):
        rng = random.Random(seed)
        try:
            while not stop.is_set():
                queue_id = rng.randrange(2)
                top = store.max_offset(TOPIC, queue_id)
                offset = rng.choice(
                    [0, store.min_offset(TOPIC, queue_id), rng.randrange(max(top, 1))]
                )
                result = store.get(TOPIC, queue_id, offset, 8)
                assert result.status in ok_statuses, result
                for message in result.messages:
                    assert message.body.startswith(f"{queue_id}:".encode()), message
                    seen[0] += 1
                store.query_by_key(TOPIC, f"key{rng.randrange(600)}")
                store.look_by_offset(rng.choice(put[0])[1])
        except Exception as exc:  # reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=reader, args=(n,)) for n in range(3)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 2.5
    i = 600
    while time.monotonic() < deadline:
        for _ in range(150):
            assert store.put(Message(TOPIC, body(i % 2, i), keys=f"key{i}"), i % 2).ok
            i += 1
        store.delete_expired_files(force=True)
    stop.set()
    for thread in threads:
        thread.join()
    assert not errors, errors[0]
    assert seen[0] > 0
    assert store.min_commitlog_offset() > 0


def test_scheduler_cleans_by_itself_and_close_stops_it(small_store, store_dir):
    store = small_store(
        file_reserved_time=0,
        delete_when=ALL_HOURS,
        clean_resource_interval=30,
        delete_commit_log_files_interval=0,
        disk_usage=Disk(),
    )
    fill(store, 900)
    deadline = time.monotonic() + 5
    while store.stats().files_deleted == 0:
        assert time.monotonic() < deadline, "the scheduler deleted nothing"
        time.sleep(0.01)
    assert store.min_commitlog_offset() > 0
    thread = store._scheduler._thread
    started = time.monotonic()
    store.close()
    assert time.monotonic() - started < 2 and not thread.is_alive()


# ----------------------------------------------------------------------------- disk full


def test_disk_full_refuses_puts_until_space_returns(retention_store):
    disk = Disk(0.10)
    store = retention_store(disk=disk, file_reserved_time=0)
    fill(store, 300)
    disk.ratio = 0.91
    store._retention.check_disk()  # what the scheduler does every 10 s
    assert "disk full" in store.disk_full
    result = store.put(Message(TOPIC, b"refused"), 0)
    assert result.status is PutStatus.SERVICE_NOT_AVAILABLE and "disk full" in result.error
    batch = store.put_batch([Message(TOPIC, b"a"), Message(TOPIC, b"b")], 1)
    assert batch.status is PutStatus.SERVICE_NOT_AVAILABLE and "90%" in batch.error
    assert store.max_offset(TOPIC, 0) == 150  # nothing was written
    assert store.stats().put_refused_disk_full == 2
    disk.ratio = 0.50
    store.delete_expired_files()  # a pass re-measures the disk
    assert store.disk_full is None
    assert store.put(Message(TOPIC, b"accepted"), 0).queue_offset == 150


def test_disk_full_is_noticed_at_a_file_roll(retention_store):
    disk = Disk(0.10)
    store = retention_store(disk=disk)
    store.put(Message(TOPIC, b"x" * 400), 0)
    disk.ratio = 0.95  # no scheduler check will run within this test
    statuses = [store.put(Message(TOPIC, b"x" * 400), 0).status for _ in range(400)]
    first_refused = statuses.index(PutStatus.SERVICE_NOT_AVAILABLE)
    assert 100 < first_refused < 200  # ~150 records fill the first 64 KiB file
    assert set(statuses[first_refused:]) == {PutStatus.SERVICE_NOT_AVAILABLE}


def _mount_tmpfs(path: Path, size: str) -> str:
    """Mount a tmpfs of `size` at `path`; '' on success, else why not."""
    if not sys.platform.startswith("linux"):
        return "tmpfs mounts need Linux"
    if os.geteuid() != 0:
        return "mounting a tmpfs needs root"
    path.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
        capture_output=True,
        text=True,
    )
    return "" if done.returncode == 0 else f"mount failed: {done.stderr.strip()}"


@pytest.fixture
def tiny_fs(tmp_path):
    """An 8 MiB tmpfs mounted for the test (skipped where mounting is not allowed)."""
    mount_point = tmp_path / "tiny"
    why = _mount_tmpfs(mount_point, "8m")
    if why:
        pytest.skip(f"no small file system for the disk-full test: {why}")
    yield mount_point
    subprocess.run(["umount", "-l", str(mount_point)], check=False)


def test_filling_a_real_small_disk(tiny_fs, small_store):
    """On an 8 MiB tmpfs with the real disk measurement: puts are refused with
    SERVICE_NOT_AVAILABLE once more than 90% is used (before the disk is really full),
    every acknowledged message survives a reopen, and writing resumes after cleanup."""
    store_dir = tiny_fs / "store"
    settings = dict(
        mapped_file_size_consume_queue=100 * 20,
        clean_resource_interval=3_600_000,
        delete_commit_log_files_interval=0,
        delete_consume_queue_files_interval=0,
        file_reserved_time=0,
        preallocate_mapped_file=False,
    )
    store = small_store(store_dir, **settings)
    acked = []
    refused = None
    for i in range(20_000):
        data = body(i % 2, i)
        result = store.put(Message(TOPIC, data, keys=f"key{i}"), i % 2)
        if result.status is not PutStatus.PUT_OK:
            refused = result
            break
        acked.append((i % 2, result.queue_offset, data))
    assert refused is not None, "8 MiB never filled up"
    assert refused.status is PutStatus.SERVICE_NOT_AVAILABLE, refused
    assert "disk full" in refused.error
    usage = shutil.disk_usage(tiny_fs)
    assert usage.used / usage.total > 0.85
    assert store.put_batch([Message(TOPIC, b"b")], 0).status is PutStatus.SERVICE_NOT_AVAILABLE
    store.close()
    store = small_store(store_dir, **settings)  # nothing acknowledged is lost
    for queue_id, queue_offset, data in acked[-300:]:
        got = store.get(TOPIC, queue_id, queue_offset, 1)
        assert got.status is GetStatus.FOUND and got.messages[0].body == data
    assert store.max_offset(TOPIC, 0) + store.max_offset(TOPIC, 1) == len(acked)
    assert store.disk_full  # measured at open: still full
    result = store.delete_expired_files(force=True)
    assert len(result.commitlog_files) == 10  # delete_file_batch_max
    for _ in range(5):  # 10 files are 640 KiB, 8% of the disk: maybe not enough yet
        if store.disk_full is None:  # re-measured after deleting
            break
        store.delete_expired_files(force=True)
    assert store.disk_full is None
    after = store.put(Message(TOPIC, b"resumed"), 0)
    assert after.status is PutStatus.PUT_OK
    wait_dispatched(store)
    assert store.get(TOPIC, 0, after.queue_offset).messages[0].body == b"resumed"
    store.close()


def test_enospc_creating_a_file_leaves_no_torn_record(tiny_fs, small_store):
    """With the disk-full mark blinded (usage reported as 10%), the put that needs a
    new CommitLog file on a really full disk gets CREATE_MAPPED_FILE_FAILED; every
    earlier acknowledged message reads back after a reopen and nothing is torn."""
    store_dir = tiny_fs / "store"
    settings = dict(
        mapped_file_size_consume_queue=100 * 20,
        disk_usage=Disk(0.10),
        preallocate_mapped_file=False,
        clean_resource_interval=3_600_000,
    )
    store = small_store(store_dir, **settings)
    store.put(Message(TOPIC, b"first"), 0)
    wait_dispatched(store)
    filler = tiny_fs / "filler"
    with open(filler, "wb") as fh:  # take all but ~40 KiB: no room for a 64 KiB file
        free = shutil.disk_usage(tiny_fs).free
        fh.write(b"\0" * max(0, free - 40 * 1024))
    acked = [b"first"]
    failed = None
    for i in range(400):
        result = store.put(Message(TOPIC, body(0, i)), 0)
        if result.status is not PutStatus.PUT_OK:
            failed = result
            break
        acked.append(body(0, i))
    assert failed is not None and failed.status is PutStatus.CREATE_MAPPED_FILE_FAILED, failed
    os.unlink(filler)  # frees space for ConsumeQueue/index files at close and reopen
    store.close()
    store = small_store(store_dir, **settings)
    assert store.recovery.bytes_truncated == 0
    got = []
    offset = 0
    while True:
        result = store.get(TOPIC, 0, offset)
        if result.status is not GetStatus.FOUND:
            break
        got.extend(m.body for m in result.messages)
        offset = result.next_begin_offset
    assert got == acked
    assert store.put(Message(TOPIC, b"later"), 0).ok


def test_read_only_follower_lets_go_of_deleted_files(retention_store, store_dir):
    writer = retention_store(file_reserved_time=0)
    put = fill(writer, 1200)
    writer.flush()
    reader = MessageStore.open_readonly(
        store_dir,
        mapped_file_size_commitlog=64 * 1024,
        mapped_file_size_consume_queue=2000,
        max_hash_slot_num=512,
        max_index_num=2048,
    )
    try:
        old_files = list(reader.commitlog.queue.files)
        old_cq = list(reader.consume_queue(TOPIC, 0).queue.files)
        assert reader.min_offset(TOPIC, 0) == 0
        writer.delete_expired_files(force=True)
        reader.refresh()
        assert reader.min_commitlog_offset() == writer.min_commitlog_offset() > 0
        for queue_id in put:
            assert reader.min_offset(TOPIC, queue_id) == writer.min_offset(TOPIC, queue_id)
            assert reader.get(TOPIC, queue_id, 0).status is GetStatus.OFFSET_TOO_SMALL
        # the mappings of deleted files are gone, so the file system can free them
        assert all(m.is_closed for m in old_files[:-1])
        assert old_cq[0].is_closed
        assert reader.query_by_key(TOPIC, "key0") == []
        assert reader.query_by_key(TOPIC, "key1199")
    finally:
        reader.close()


def test_consumer_behind_the_deleted_files_moves_on_to_what_is_left(retention_store):
    """A group whose committed offset points into deleted files: `get` answers
    OFFSET_TOO_SMALL, and the push consumer moves to the queue's new minimum and
    consumes everything that is left, nothing twice."""
    from mqstore.client import CONSUME_SUCCESS, ConsumeFromWhere, PushConsumer

    store = retention_store(file_reserved_time=0, delete_file_batch_max=100)
    put = fill(store, 600)
    store.consumer_offsets.commit("laggard", TOPIC, 0, 0)
    store.consumer_offsets.commit("laggard", TOPIC, 1, 0)
    assert store.delete_expired_files(force=True).commitlog_files
    minimum = {q: store.min_offset(TOPIC, q) for q in (0, 1)}
    assert all(m > 0 for m in minimum.values())
    assert store.get(TOPIC, 0, 0).status is GetStatus.OFFSET_TOO_SMALL
    expected = {data for q in (0, 1) for offset, _, data in put[q] if offset >= minimum[q]}
    seen = []
    lock = threading.Lock()

    def listener(msgs, context):
        with lock:
            seen.extend(m.body for m in msgs)
        return CONSUME_SUCCESS

    consumer = PushConsumer(store, "laggard", consume_from_where=ConsumeFromWhere.FIRST_OFFSET)
    consumer.subscribe(TOPIC)
    consumer.register(listener)
    consumer.start()
    try:
        deadline = time.monotonic() + 10
        while len(seen) < len(expected) and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        consumer.shutdown()
    assert len(seen) == len(set(seen)) == len(expected)
    assert set(seen) == expected
    assert store.consumer_offsets.query("laggard", TOPIC, 0) == store.max_offset(TOPIC, 0)
