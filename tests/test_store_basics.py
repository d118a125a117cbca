"""MessageStore basics: the directory lock (threads of one process and other
processes), bad input (a clear error and nothing written), configuration validation,
closed-store behaviour, bytes-like bodies, and concurrent putters."""

from __future__ import annotations

import array
import os
import stat
import subprocess
import sys
import textwrap
import threading

import pytest

from mqstore import (
    Message,
    MessageStore,
    MQStoreError,
    PutStatus,
    RecordError,
    StoreClosedError,
    StoreConfig,
    StoreLockedError,
)

FS = 64 * 1024


# The default ConsumeQueue and index sizes reserve 6 MB per queue and 420 MB per index
# file on disk (posix_fallocate); tests that open many stores use small ones.
SMALL_LIMITS = dict(mapped_file_size_consume_queue=20 * 1024, max_hash_slot_num=512,
                    max_index_num=2048)


def small(file_size, **overrides):
    """Store settings with `file_size` CommitLog files and small CQ / index files."""
    return dict(mapped_file_size_commitlog=file_size, **SMALL_LIMITS, **overrides)


def snapshot(store_dir):
    cl = os.path.join(store_dir, "commitlog")
    if not os.path.isdir(cl):
        return {}
    return {n: open(os.path.join(cl, n), "rb").read() for n in sorted(os.listdir(cl))}


class NothingWritten:
    """Context: the store's end offset, queue offsets and CommitLog bytes are the
    same after the block (a file the allocator creates ahead of need may appear or
    grow, all zeros)."""

    def __init__(self, store, store_dir):
        self.store = store
        self.store_dir = store_dir

    def __enter__(self):
        self.end = self.store.max_commitlog_offset()
        self.offsets = dict(self.store.commitlog.queue_offsets)
        self.files = snapshot(self.store_dir)
        return self

    def __exit__(self, *exc):
        assert self.store.max_commitlog_offset() == self.end
        assert self.store.commitlog.queue_offsets == self.offsets
        after = snapshot(self.store_dir)
        for name, data in self.files.items():
            assert name in after, f"{name} disappeared"
            if _all_zero(data) and _all_zero(after[name]):
                continue  # created ahead of need by the background allocator
            assert after[name] == data, f"{name} changed"
        for name in set(after) - set(self.files):
            assert _all_zero(after[name]), f"{name} written"
        return False


def _all_zero(data: bytes) -> bool:
    return data.count(0) == len(data)


@pytest.fixture
def store(small_store):
    s = small_store()
    for i in range(5):
        assert s.put(Message("Seed", b"seed %d" % i)).ok
    return s


def run_python(code, *args, timeout=60):
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *map(str, args)],
        capture_output=True, text=True, timeout=timeout,
    )


# ----------------------------------------------------------------------------- lock


LOCK_PROBE = """
    import sys
    from mqstore import MessageStore, StoreLockedError
    try:
        MessageStore(sys.argv[1], mapped_file_size_commitlog=65536,
                     mapped_file_size_consume_queue=20480, max_hash_slot_num=512,
                     max_index_num=2048).close()
    except StoreLockedError as exc:
        print("LOCKED", exc.holder_pid, "|", exc)
    else:
        print("OPENED")
"""


def test_second_store_in_same_process_is_refused(store, store_dir):
    for path in (store_dir, str(store_dir) + "/", str(store_dir) + "/./"):
        with pytest.raises(StoreLockedError) as info:
            MessageStore(path, **small(FS))
        assert str(os.getpid()) in str(info.value)
    link = store_dir.parent / "link"
    link.symlink_to(store_dir)
    with pytest.raises(StoreLockedError):
        MessageStore(link, **small(FS))
    # the refused attempts did not drop the lock held by the first store
    out = run_python(LOCK_PROBE, store_dir)
    assert out.stdout.startswith("LOCKED"), out.stdout + out.stderr
    # and the first store still works
    result = store.put(Message("After", b"still works"))
    assert result.ok
    assert store.look_by_offset(result.commitlog_offset).body == b"still works"


def test_second_process_is_refused_with_holder_pid(store, store_dir):
    out = run_python(LOCK_PROBE, store_dir)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("LOCKED"), out.stdout + out.stderr
    holder, message = out.stdout[len("LOCKED"):].split("|", 1)
    assert int(holder) == os.getpid()
    assert str(os.getpid()) in message
    assert str(store_dir.resolve()) in message or str(store_dir) in message
    result = store.put(Message("After", b"first store keeps working"))
    assert result.ok
    assert store.look_by_offset(result.commitlog_offset).body == b"first store keeps working"
    assert (store_dir / "lock").read_bytes()[:4] == b"lock"


def test_lock_is_released_at_close(store, store_dir):
    end = store.max_commitlog_offset()
    store.close()
    out = run_python(LOCK_PROBE, store_dir)
    assert out.stdout.strip() == "OPENED", out.stdout + out.stderr
    with MessageStore(store_dir, **small(FS)) as again:
        assert again.max_commitlog_offset() == end
        assert again.put(Message("Seed", b"again")).queue_offset == 5
    with MessageStore(store_dir, **small(FS)) as again:
        assert again.put(Message("Seed", b"again")).queue_offset == 6


def test_store_in_other_process_blocks_this_one(store_dir, tmp_path):
    code = """
        import sys, time
        from mqstore import Message, MessageStore
        with MessageStore(sys.argv[1], mapped_file_size_commitlog=65536,
                     mapped_file_size_consume_queue=20480, max_hash_slot_num=512,
                     max_index_num=2048) as s:
            s.put(Message("Child", b"x"))
            print("HOLDING", flush=True)
            sys.stdin.readline()
        print("CLOSED", flush=True)
    """
    proc = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code), str(store_dir)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert proc.stdout.readline().strip() == "HOLDING", proc.stderr.read()
        with pytest.raises(StoreLockedError) as info:
            MessageStore(store_dir, **small(FS))
        assert info.value.holder_pid == proc.pid
        assert str(proc.pid) in str(info.value)
        proc.stdin.write("\n")
        proc.stdin.flush()
        assert proc.stdout.readline().strip() == "CLOSED"
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    with MessageStore(store_dir, **small(FS)) as s:
        assert [m.body for m in s.iter_commitlog()] == [b"x"]


# ----------------------------------------------------------------------------- bad input


def test_body_not_bytes_like(store, store_dir):
    for bad in ("text", 123, None, ["list"]):
        with pytest.raises(TypeError):
            Message("T", bad)
    with NothingWritten(store, store_dir):
        for bad in ("text", 123, None):
            msg = Message("T", b"ok")
            msg.body = bad
            with pytest.raises(TypeError):
                store.put(msg)
            with pytest.raises(TypeError):
                store.put_batch([Message("T", b"fine"), msg])


@pytest.mark.parametrize("bad", [b"raw bytes", "a string", None, 42, {"topic": "T"}])
def test_put_of_non_message(store, store_dir, bad):
    with NothingWritten(store, store_dir), pytest.raises(TypeError) as info:
        store.put(bad)
    assert "Message" in str(info.value)


@pytest.mark.parametrize("queue_id, exc", [
    ("0", TypeError), (1.0, TypeError), (None, TypeError), (True, TypeError),
    (-1, ValueError), (-(2**40), ValueError), (2**31, ValueError),
])
def test_bad_queue_id(store, store_dir, queue_id, exc):
    with NothingWritten(store, store_dir):
        with pytest.raises(exc) as info:
            store.put(Message("T", b"x"), queue_id)
        assert "queue_id" in str(info.value)
        with pytest.raises(exc):
            store.put_batch([Message("T", b"x")], queue_id)


def test_largest_queue_id_is_accepted(store):
    result = store.put(Message("T", b"x"), 2**31 - 1)
    assert result.ok and result.queue_id == 2**31 - 1
    assert store.look_by_offset(result.commitlog_offset).queue_id == 2**31 - 1


@pytest.mark.parametrize("topic, words", [
    ("a b", ["a b"]),
    ("a/b", ["a/b"]),
    ("t\n", ["topic"]),
    ("tópico", ["topic"]),
    ("", ["empty"]),
    ("x" * 128, ["128", "127"]),
    ("y" * 300, ["300", "127"]),
])
def test_illegal_topic(store, store_dir, topic, words):
    with NothingWritten(store, store_dir):
        result = store.put(Message(topic, b"x"))
        assert result.status is PutStatus.MESSAGE_ILLEGAL
        assert not result.ok and result.msg_id is None
        for word in words:
            assert word in result.error, result.error
        batch = store.put_batch([Message(topic, b"x")])
        assert batch.status is PutStatus.MESSAGE_ILLEGAL and len(batch) == 0
        assert batch.error


def test_longest_and_special_topics_are_accepted(store):
    for topic in ("z" * 127, "%RETRY%group", "a|b", "A-b_9"):
        result = store.put(Message(topic, b"x"))
        assert result.ok, (topic, result)
        assert store.look_by_offset(result.commitlog_offset).topic == topic


def test_body_size_limit(small_store, store_dir):
    store = small_store(max_message_size=1000)
    assert store.put(Message("T", bytes(1000))).ok
    with NothingWritten(store, store_dir):
        for body in (bytes(1001), bytearray(5000), memoryview(bytes(1001))):
            result = store.put(Message("T", body))
            assert result.status is PutStatus.MESSAGE_ILLEGAL
            assert "max_message_size" in result.error and "1000" in result.error


def test_record_larger_than_a_file_is_illegal(store, store_dir):
    with NothingWritten(store, store_dir):
        result = store.put(Message("T", bytes(FS)))  # < 4 MiB but > one file
        assert result.status is PutStatus.MESSAGE_ILLEGAL
        assert result.error


def test_properties_size_limit(store, store_dir):
    # exactly 32767 bytes: "k" \x01 value
    ok = store.put(Message("T", b"x", properties={"k": "v" * 32765}))
    assert ok.status is PutStatus.PUT_OK
    assert store.look_by_offset(ok.commitlog_offset).get_property("k") == "v" * 32765
    with NothingWritten(store, store_dir):
        for props in ({"k": "v" * 32766}, {"k": "é" * 16383}, {"a": "1", "b": "x" * 40000}):
            result = store.put(Message("T", b"x", properties=props))
            assert result.status is PutStatus.PROPERTIES_SIZE_EXCEEDED, props.keys()
            assert "32767" in result.error
        # within the limit as given, over it once the delay rewrite adds REAL_TOPIC/REAL_QID
        result = store.put(Message("T", b"x", properties={"k": "v" * 32740}, delay_level=1))
        assert result.status is PutStatus.PROPERTIES_SIZE_EXCEEDED


def test_rejected_put_consumes_no_queue_offset(store):
    assert store.put(Message("Q", b"0")).queue_offset == 0
    assert store.put(Message("Q", b"x", properties={"k": "v" * 40000})).status is (
        PutStatus.PROPERTIES_SIZE_EXCEEDED)
    assert store.put(Message("Q", bytes(5 * 1024 * 1024))).status is PutStatus.MESSAGE_ILLEGAL
    assert store.put(Message("Q", b"1")).queue_offset == 1


def test_store_path_is_a_file(tmp_path):
    path = tmp_path / "plain-file"
    path.write_bytes(b"not a store")
    with pytest.raises(MQStoreError) as info:
        MessageStore(path, **small(FS))
    assert str(path) in str(info.value)
    assert path.read_bytes() == b"not a store"
    with pytest.raises(MQStoreError):
        MessageStore(path / "below", **small(FS))


def test_unwritable_store_directory(tmp_path):
    path = tmp_path / "ro"
    path.mkdir()
    (path / "commitlog").mkdir()
    os.chmod(path, stat.S_IRUSR | stat.S_IXUSR)
    try:
        if os.access(path, os.W_OK):
            pytest.skip("running with privileges that ignore directory permissions (root)")
        with pytest.raises(MQStoreError) as info:
            MessageStore(path, **small(FS))
        assert str(path) in str(info.value)
    finally:
        os.chmod(path, stat.S_IRWXU)


BAD_CONFIG = [
    ("flush_disk_type", "X"),
    ("flush_disk_type", "sync_flush"),
    ("disk_max_used_space_ratio", 5),
    ("disk_max_used_space_ratio", 96),
    ("delete_when", "25"),
    ("delete_when", "04;xx"),
    ("file_reserved_time", -1),
    ("message_delay_level", "1ms"),
    ("message_delay_level", ""),
    ("mapped_file_size_commitlog", 4095),
    ("mapped_file_size_commitlog", 2**31),
    ("mapped_file_size_commitlog", 0),
    ("max_message_size", 0),
    ("flush_interval_commitlog", -1),
    ("flush_commitlog_least_pages", -1),
    ("sync_flush_timeout", 0),
    ("store_host", "nohost"),
    ("born_host", "1.2.3.4:99999"),
]


@pytest.mark.parametrize("field, value", BAD_CONFIG)
def test_invalid_config_value_names_the_field(tmp_path, field, value):
    with pytest.raises(ValueError) as info:
        StoreConfig(**{field: value})
    assert field in str(info.value)
    path = tmp_path / "never"
    with pytest.raises(ValueError) as info:
        MessageStore(path, **{field: value})
    assert field in str(info.value)
    assert not path.exists(), "a store with an invalid config touched the disk"
    with pytest.raises(ValueError) as info:
        MessageStore(path, StoreConfig(), **{field: value})
    assert field in str(info.value)


def test_unknown_config_field(tmp_path):
    with pytest.raises(TypeError):
        MessageStore(tmp_path / "s", no_such_setting=1)
    with pytest.raises(TypeError):
        MessageStore(tmp_path / "s", config={"mapped_file_size_commitlog": FS})


def test_closed_store(store, store_dir):
    result = store.put(Message("T", b"before close"))
    assert result.ok
    store.close()
    assert store.closed
    store.close()  # idempotent
    with pytest.raises(StoreClosedError):
        store.put(Message("T", b"x"))
    with pytest.raises(StoreClosedError):
        store.put_batch([Message("T", b"x")])
    with pytest.raises(StoreClosedError):
        store.look_by_offset(result.commitlog_offset)
    with pytest.raises(StoreClosedError):
        store.iter_commitlog()
    with pytest.raises(StoreClosedError):
        store.flush()
    assert issubclass(StoreClosedError, MQStoreError)
    with MessageStore(store_dir, **small(FS)) as again:
        assert again.look_by_offset(result.commitlog_offset).body == b"before close"
        assert again.max_commitlog_offset() == result.commitlog_offset + result.store_size
    assert again.closed


def test_close_from_two_threads(store):
    errors = []

    def closer():
        try:
            store.close()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=closer) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors and store.closed


def test_look_by_offset_arguments(store):
    result = store.put(Message("T", b"\xff" * 200))
    end = store.max_commitlog_offset()
    with pytest.raises(ValueError):
        store.look_by_offset(-1)
    with pytest.raises(TypeError):
        store.look_by_offset("0")
    assert store.look_by_offset(end) is None
    assert store.look_by_offset(end + 10 * FS) is None
    with pytest.raises(RecordError):
        store.look_by_offset(result.commitlog_offset + 100)  # inside the 0xff body


# ----------------------------------------------------------------------------- bodies


def _one_record_store(path, body):
    clock = lambda: 1_700_000_000_000  # noqa: E731
    with MessageStore(path, **small(4096), clock=clock,
                      preallocate_mapped_file=False) as store:
        result = store.put(Message("Body", body, tags="t", born_timestamp=1_600_000_000_000))
        assert result.ok
        single = store.look_by_offset(result.commitlog_offset)
        batch = store.put_batch([Message("Body", body, born_timestamp=1_600_000_000_000)])
        assert batch.ok
        batched = store.look_by_offset(batch.commitlog_offsets[0])
    with open(os.path.join(path, "commitlog", "0" * 20), "rb") as f:
        return f.read(), single, batched


def test_bytearray_and_memoryview_bodies_are_stored_like_bytes(tmp_path):
    data = bytes(range(256)) * 3
    big = bytearray(b"PREFIX" + data + b"SUFFIX")
    bodies = {
        "bytes": data,
        "bytearray": bytearray(data),
        "memoryview": memoryview(data),
        "memoryview-bytearray": memoryview(bytearray(data)),
        "memoryview-slice": memoryview(big)[6:-6],
        "readonly-memoryview": memoryview(bytearray(data)).toreadonly(),
    }
    raw = {}
    for name, body in bodies.items():
        raw[name], single, batched = _one_record_store(tmp_path / name, body)
        assert single.body == data == batched.body, name
        assert single.body_crc == batched.body_crc
    reference = raw["bytes"]
    assert reference.count(0) < len(reference)
    for name, content in raw.items():
        assert content == reference, f"{name} body stored differently from bytes"


def test_multibyte_memoryview_body(store):
    values = array.array("i", [1, -2, 3, 2**31 - 1])
    result = store.put(Message("T", memoryview(values)))
    assert result.ok
    assert store.look_by_offset(result.commitlog_offset).body == values.tobytes()


def test_body_is_copied_at_put(store):
    body = bytearray(b"original")
    result = store.put(Message("T", body))
    body[:] = b"mutated!"
    assert store.look_by_offset(result.commitlog_offset).body == b"original"


def test_non_contiguous_memoryview_body(store, store_dir):
    """Either stored as its bytes, or refused with a TypeError/ValueError naming the
    body (the contract's error kinds), writing nothing: whether the view is given to
    Message() or assigned to `body` afterwards."""
    view = memoryview(b"abcdefgh")[::2]

    def given_to_constructor():
        return Message("T", view)

    def assigned_later():
        msg = Message("T", b"placeholder")
        msg.body = view
        return msg

    for make in (given_to_constructor, assigned_later):
        for batch in (False, True):
            end = store.max_commitlog_offset()
            try:
                msg = make()
                result = store.put_batch([msg]) if batch else store.put(msg)
            except (TypeError, ValueError, MQStoreError):
                assert store.max_commitlog_offset() == end
                continue
            assert result.ok
            offset = result.commitlog_offsets[0] if batch else result.commitlog_offset
            assert store.look_by_offset(offset).body == b"aceg"


def test_empty_body(store):
    result = store.put(Message("T", b""))
    assert result.ok
    msg = store.look_by_offset(result.commitlog_offset)
    assert msg.body == b"" and msg.body_crc == 0


# ----------------------------------------------------------------------------- concurrency


def test_concurrent_putters(small_store, store_dir, fast_thread_switching):
    store = small_store()
    threads_n, per_thread = 8, 2000
    results = [[] for _ in range(threads_n)]
    errors = []
    barrier = threading.Barrier(threads_n)

    def worker(n):
        try:
            barrier.wait()
            own = []
            for i in range(per_thread):
                if i % 2:
                    key = ("Shared", 0)
                else:
                    key = ("Own", n)
                body = b"%d:%d:" % (n, i) + bytes(i % 50)
                result = store.put(Message(key[0], body), key[1])
                own.append((key, body, result))
            results[n] = own
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(threads_n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors

    everything = [item for own in results for item in own]
    assert len(everything) == threads_n * per_thread
    assert all(r.status is PutStatus.PUT_OK for _, _, r in everything)
    per_queue = {}
    for key, _, r in everything:
        per_queue.setdefault(key, []).append(r.queue_offset)
    assert set(per_queue) == {("Shared", 0)} | {("Own", n) for n in range(threads_n)}
    for key, offsets in per_queue.items():
        assert sorted(offsets) == list(range(len(offsets))), key
    assert len(per_queue[("Shared", 0)]) == threads_n * per_thread // 2
    # every thread's own puts got increasing queue offsets in its own order
    for own in results:
        shared = [r.queue_offset for k, _, r in own if k == ("Shared", 0)]
        assert shared == sorted(shared)

    by_offset = {r.commitlog_offset: (key, body, r) for key, body, r in everything}
    assert len(by_offset) == len(everything)
    previous_end = 0
    for offset in sorted(by_offset):
        key, body, r = by_offset[offset]
        assert offset >= previous_end, "records overlap"
        previous_end = offset + r.store_size
        msg = store.look_by_offset(offset)
        assert (msg.topic, msg.queue_id, msg.body, msg.queue_offset) == (
            key[0], key[1], body, r.queue_offset)

    # CommitLog order is queue-offset order for every queue; store time never goes back
    last = {}
    last_time = 0
    count = 0
    for msg in store.iter_commitlog():
        key = (msg.topic, msg.queue_id)
        assert msg.queue_offset == last.get(key, -1) + 1
        last[key] = msg.queue_offset
        assert msg.store_timestamp >= last_time
        last_time = msg.store_timestamp
        count += 1
    assert count == len(everything)

    expected = {key: len(offsets) for key, offsets in per_queue.items()}
    assert store.commitlog.queue_offsets == expected
    store.close()
    reopened = small_store()
    assert reopened.commitlog.queue_offsets == expected
