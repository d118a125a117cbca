"""MappedFile and MappedFileQueue: naming, exact sizes, space reservation, load-time
validation, lookup at boundaries, truncation, head deletion, flush gating and the
hold/release lifetime of a mapping."""

from __future__ import annotations

import os
import threading

import pytest

from mqstore import Message, MessageStore, MQStoreError, PutStatus, StoreCorruptedError
from mqstore.mappedfile import (
    OS_PAGE_SIZE,
    MappedFile,
    MappedFileQueue,
    file_name,
)

SIZE = 4096


# The default ConsumeQueue and index sizes reserve 6 MB per queue and 420 MB per index
# file on disk (posix_fallocate); tests that open many stores use small ones.
SMALL_LIMITS = dict(mapped_file_size_consume_queue=20 * 1024, max_hash_slot_num=512,
                    max_index_num=2048)


def small(file_size, **overrides):
    """Store settings with `file_size` CommitLog files and small CQ / index files."""
    return dict(mapped_file_size_commitlog=file_size, **SMALL_LIMITS, **overrides)


def make_queue(directory, count, size=SIZE, start=0):
    queue = MappedFileQueue(str(directory), size)
    queue.next_file(start)
    for _ in range(count - 1):
        queue.next_file()
    return queue


def fill_pattern(path, seed):
    """Write a recognisable pattern over a whole file through the file API."""
    size = os.path.getsize(path)
    data = bytes((seed + i) % 251 for i in range(size))
    with open(path, "r+b") as f:
        f.write(data)
    return data


def names(directory):
    return sorted(os.listdir(directory))


# ----------------------------------------------------------------------------- naming


def test_file_name_is_twenty_digit_offset():
    assert file_name(0) == "00000000000000000000"
    assert file_name(1073741824) == "00000000001073741824"
    assert file_name(6000000) == "00000000000006000000"
    assert len(file_name(2**63 - 1)) == 20


def test_queue_files_are_named_by_offset_and_exact_size(tmp_path):
    queue = make_queue(tmp_path, 3)
    try:
        assert names(tmp_path) == [file_name(0), file_name(SIZE), file_name(2 * SIZE)]
        for name in names(tmp_path):
            assert os.path.getsize(tmp_path / name) == SIZE
        assert [m.file_from_offset for m in queue.files] == [0, SIZE, 2 * SIZE]
    finally:
        queue.shutdown()


def test_first_file_start_is_rounded_down_to_a_file_boundary(tmp_path):
    queue = MappedFileQueue(str(tmp_path), SIZE)
    try:
        first = queue.next_file(3 * SIZE + 123)
        assert first.file_from_offset == 3 * SIZE
        assert names(tmp_path) == [file_name(3 * SIZE)]
        assert queue.min_offset() == 3 * SIZE
        assert queue.max_offset() == 3 * SIZE  # nothing written yet
        assert queue.flushed_where == 3 * SIZE
    finally:
        queue.shutdown()


@pytest.mark.parametrize("size", [SIZE, 1024 * 1024])
def test_new_file_blocks_are_reserved(tmp_path, size):
    """posix_fallocate: every block is allocated at creation, not a sparse file."""
    mapped = MappedFile(str(tmp_path / file_name(0)), size, create=True)
    try:
        st = os.stat(mapped.path)
        assert st.st_size == size
        assert st.st_blocks * 512 >= size, "file is sparse: space was not reserved"
    finally:
        mapped.destroy()


def test_store_commitlog_files_are_reserved_and_exact(small_store, store_dir):
    store = small_store()
    for _ in range(300):
        assert store.put(Message("T", bytes(500))).status is PutStatus.PUT_OK
    cl = store_dir / "commitlog"
    end = store.max_commitlog_offset()
    # files in use (the allocator may be creating the next one right now)
    files = [n for n in names(cl) if int(n) < end]
    assert len(files) >= 3
    for name in files:
        st = os.stat(cl / name)
        assert st.st_size == 64 * 1024
        assert st.st_blocks * 512 >= 64 * 1024, name
        assert int(name) % (64 * 1024) == 0


def test_create_refuses_existing_file(tmp_path):
    path = tmp_path / file_name(0)
    path.write_bytes(b"x" * SIZE)
    with pytest.raises(MQStoreError) as info:
        MappedFile(str(path), SIZE, create=True)
    assert str(path) in str(info.value)
    assert path.read_bytes() == b"x" * SIZE  # untouched


# ----------------------------------------------------------------------------- load


BAD_NAMES = [
    "abc",
    "0" * 19,
    "0" * 21,
    "0000000000000000000a",
    "00000000000000000000.tmp",
    ".hidden",
]


@pytest.mark.parametrize("bad", BAD_NAMES)
def test_load_rejects_foreign_name(tmp_path, bad):
    make_queue(tmp_path, 2).shutdown()
    (tmp_path / bad).write_bytes(bytes(SIZE))
    queue = MappedFileQueue(str(tmp_path), SIZE)
    with pytest.raises(StoreCorruptedError) as info:
        queue.load()
    assert bad in str(info.value)
    assert info.value.path == str(tmp_path / bad)
    assert queue.files == []
    # nothing was deleted
    assert bad in names(tmp_path) and file_name(0) in names(tmp_path)


@pytest.mark.parametrize("length", [0, 1, SIZE - 1, SIZE + 1, 2 * SIZE])
def test_load_rejects_wrong_length(tmp_path, length):
    make_queue(tmp_path, 3).shutdown()
    victim = tmp_path / file_name(SIZE)
    os.truncate(victim, length)
    queue = MappedFileQueue(str(tmp_path), SIZE)
    with pytest.raises(StoreCorruptedError) as info:
        queue.load()
    assert file_name(SIZE) in str(info.value)
    assert str(length) in str(info.value)
    assert info.value.path == str(victim)
    assert queue.files == []
    assert os.path.getsize(victim) == length  # not "repaired"


def test_load_rejects_gap_and_misaligned_offset(tmp_path):
    make_queue(tmp_path, 3).shutdown()
    os.unlink(tmp_path / file_name(SIZE))
    with pytest.raises(StoreCorruptedError) as info:
        MappedFileQueue(str(tmp_path), SIZE).load()
    assert file_name(2 * SIZE) in str(info.value)

    other = tmp_path / "b"
    other.mkdir()
    (other / file_name(100)).write_bytes(bytes(SIZE))
    with pytest.raises(StoreCorruptedError) as info:
        MappedFileQueue(str(other), SIZE).load()
    assert file_name(100) in str(info.value)


def test_load_rejects_directory_inside_log(tmp_path):
    make_queue(tmp_path, 1).shutdown()
    (tmp_path / file_name(SIZE)).mkdir()
    with pytest.raises(StoreCorruptedError) as info:
        MappedFileQueue(str(tmp_path), SIZE).load()
    assert file_name(SIZE) in str(info.value)


def test_load_marks_every_file_full(tmp_path):
    make_queue(tmp_path, 3).shutdown()
    queue = MappedFileQueue(str(tmp_path), SIZE)
    queue.load()
    try:
        assert [m.file_from_offset for m in queue.files] == [0, SIZE, 2 * SIZE]
        for mapped in queue.files:
            assert mapped.wrote_position == mapped.committed_position == SIZE
            assert mapped.flushed_position == SIZE
        assert queue.max_offset() == 3 * SIZE
    finally:
        queue.shutdown()


def test_load_of_missing_directory_is_empty(tmp_path):
    queue = MappedFileQueue(str(tmp_path / "nope"), SIZE)
    queue.load()
    assert queue.files == [] and queue.max_offset() == 0 and queue.min_offset() == 0
    assert queue.find_by_offset(0) is None


def _written_store(store_dir):
    with MessageStore(store_dir, **small(SIZE)) as store:
        for _ in range(20):
            assert store.put(Message("T", bytes(1000))).ok
    return store_dir / "commitlog"


@pytest.mark.parametrize("bad", ["abc", "0" * 19, "00000000000000000000.bak"])
def test_store_open_rejects_foreign_file(store_dir, bad):
    cl = _written_store(store_dir)
    before = {n: (cl / n).read_bytes() for n in names(cl)}
    (cl / bad).write_bytes(bytes(SIZE))
    with pytest.raises(StoreCorruptedError) as info:
        MessageStore(store_dir, **small(SIZE))
    assert bad in str(info.value)
    # nothing changed, and the lock was released: after removing the file it opens
    assert {n: (cl / n).read_bytes() for n in names(cl) if n != bad} == before
    os.unlink(cl / bad)
    with MessageStore(store_dir, **small(SIZE)) as store:
        assert sum(1 for _ in store.iter_commitlog()) == 20


def test_store_open_rejects_wrong_length_file(store_dir):
    cl = _written_store(store_dir)
    victim = cl / names(cl)[-1]
    os.truncate(victim, SIZE - 512)
    with pytest.raises(StoreCorruptedError) as info:
        MessageStore(store_dir, **small(SIZE))
    assert victim.name in str(info.value)
    assert os.path.getsize(victim) == SIZE - 512


def test_store_open_with_other_file_size_is_refused(store_dir):
    cl = _written_store(store_dir)
    first = names(cl)[0]
    with pytest.raises(StoreCorruptedError) as info:
        MessageStore(store_dir, **small(2 * SIZE))
    assert first in str(info.value)
    # still opens with the right size
    with MessageStore(store_dir, **small(SIZE)) as store:
        assert sum(1 for _ in store.iter_commitlog()) == 20


# ----------------------------------------------------------------------------- lookup


def test_find_by_offset_at_boundaries(tmp_path):
    queue = make_queue(tmp_path, 3)
    try:
        f0, f1, f2 = queue.files
        cases = {
            0: f0, 1: f0, SIZE - 1: f0,
            SIZE: f1, 2 * SIZE - 1: f1,
            2 * SIZE: f2, 3 * SIZE - 1: f2,
            3 * SIZE: None, 3 * SIZE + 1: None, 100 * SIZE: None, -1: None,
        }
        for offset, expected in cases.items():
            assert queue.find_by_offset(offset) is expected, offset

        assert queue.delete_first_files(1) == [f0.path]
        for offset in (0, SIZE - 1):
            assert queue.find_by_offset(offset) is None, offset
        assert queue.find_by_offset(SIZE) is f1
        assert queue.find_by_offset(3 * SIZE - 1) is f2
        assert queue.min_offset() == SIZE
    finally:
        queue.shutdown()


def test_find_by_offset_in_queue_not_starting_at_zero(tmp_path):
    queue = make_queue(tmp_path, 2, start=5 * SIZE)
    try:
        f5, f6 = queue.files
        assert queue.find_by_offset(5 * SIZE - 1) is None
        assert queue.find_by_offset(5 * SIZE) is f5
        assert queue.find_by_offset(6 * SIZE) is f6
        assert queue.find_by_offset(7 * SIZE) is None
        assert queue.find_by_offset(0) is None
    finally:
        queue.shutdown()


# ----------------------------------------------------------------------------- truncate


def test_truncate_moves_positions_keeps_bytes_deletes_later_files(tmp_path):
    queue = make_queue(tmp_path, 3)
    try:
        patterns = [fill_pattern(m.path, i) for i, m in enumerate(queue.files)]
        for mapped in queue.files:
            mapped.set_positions(SIZE)
        queue.flushed_where = queue.committed_where = 3 * SIZE
        f0, f1, f2 = queue.files

        deleted = queue.truncate(SIZE + 100)

        assert deleted == [f2.path]
        assert not os.path.exists(f2.path)
        assert names(tmp_path) == [file_name(0), file_name(SIZE)]
        assert queue.files == [f0, f1]
        assert f0.wrote_position == f0.flushed_position == f0.committed_position == SIZE
        assert f1.wrote_position == f1.flushed_position == f1.committed_position == 100
        assert queue.max_offset() == SIZE + 100
        assert queue.flushed_where == queue.committed_where == SIZE + 100
        # truncation never zeroes: bytes past the end are as they were
        assert f1.read(0, SIZE) == patterns[1]
        with open(f1.path, "rb") as f:
            assert f.read() == patterns[1]
        assert f0.read(0, SIZE) == patterns[0]
    finally:
        queue.shutdown()


def test_truncate_at_file_boundary(tmp_path):
    queue = make_queue(tmp_path, 3)
    try:
        for mapped in queue.files:
            mapped.set_positions(SIZE)
        f0, f1, f2 = queue.files
        assert queue.truncate(2 * SIZE) == []
        # the file holding offset 2*SIZE is f2: kept, empty
        assert queue.files == [f0, f1, f2]
        assert f1.wrote_position == SIZE
        assert f2.wrote_position == f2.flushed_position == 0
        assert queue.max_offset() == 2 * SIZE

        assert queue.truncate(SIZE - 1) == [f1.path, f2.path]
        assert queue.files == [f0]
        assert f0.wrote_position == SIZE - 1
        assert not os.path.exists(f1.path) and not os.path.exists(f2.path)
        assert queue.max_offset() == SIZE - 1
    finally:
        queue.shutdown()


def test_truncate_to_zero_keeps_first_file_empty(tmp_path):
    queue = make_queue(tmp_path, 2)
    try:
        for mapped in queue.files:
            mapped.set_positions(SIZE)
        f0, f1 = queue.files
        assert queue.truncate(0) == [f1.path]
        assert queue.files == [f0] and f0.wrote_position == 0
        assert queue.max_offset() == 0
    finally:
        queue.shutdown()


# ----------------------------------------------------------------------------- delete


def test_delete_first_files_never_deletes_last(tmp_path):
    queue = make_queue(tmp_path, 3)
    try:
        f0, f1, f2 = queue.files
        assert queue.delete_first_files(0) == []
        assert queue.delete_first_files(-5) == []
        assert queue.delete_first_files(10) == [f0.path, f1.path]
        assert queue.files == [f2]
        assert names(tmp_path) == [file_name(2 * SIZE)]
        assert queue.delete_first_files(1) == []
        assert queue.files == [f2] and os.path.exists(f2.path)
        assert f0.is_closed and f1.is_closed and not f2.is_closed
    finally:
        queue.shutdown()


def test_delete_first_files_on_empty_queue(tmp_path):
    queue = MappedFileQueue(str(tmp_path), SIZE)
    assert queue.delete_first_files(3) == []


# ----------------------------------------------------------------------------- flush


def test_file_flush_gating(tmp_path):
    page = OS_PAGE_SIZE
    mapped = MappedFile(str(tmp_path / file_name(0)), 8 * page, create=True)
    try:
        mapped.wrote_position = 100
        assert mapped.flush(least_pages=1) == 0  # less than a page dirty
        assert mapped.flush(least_pages=0) == 100  # any amount when 0
        mapped.wrote_position = 2 * page + 10
        assert mapped.flush(least_pages=3) == 100  # floor(2.x) - floor(0.x) = 2 < 3
        assert mapped.flush(least_pages=2) == 2 * page + 10
        mapped.wrote_position = 8 * page  # full: always flushable
        assert mapped.flush(least_pages=100) == 8 * page
        assert mapped.flushed_position == 8 * page
    finally:
        mapped.destroy()


def test_queue_flush_one_file_per_call_and_flush_all(tmp_path):
    queue = make_queue(tmp_path, 3)
    try:
        f0, f1, f2 = queue.files
        f0.wrote_position = SIZE
        f1.wrote_position = SIZE
        f2.wrote_position = 10
        assert queue.flush(0) is False
        assert queue.flushed_where == SIZE
        assert f1.flushed_position == 0 and f2.flushed_position == 0
        queue.flush_all()
        assert queue.flushed_where == 2 * SIZE + 10 == queue.max_offset()
        assert f1.flushed_position == SIZE and f2.flushed_position == 10
        assert queue.flush(0) is True
    finally:
        queue.shutdown()


# ----------------------------------------------------------------------------- lifetime


def test_held_file_is_unmapped_only_after_release(tmp_path):
    mapped = MappedFile(str(tmp_path / file_name(0)), SIZE, create=True)
    data = fill_pattern(mapped.path, 7)
    assert mapped.hold() is True
    assert mapped.hold() is True  # two readers
    mapped.shutdown()
    assert not mapped.is_closed
    assert mapped.hold() is False  # no new readers once shut down
    assert mapped.read(0, SIZE) == data
    mapped.release()
    assert not mapped.is_closed  # one reader left
    assert mapped.read(SIZE - 16, 16) == data[-16:]
    mapped.release()
    assert mapped.is_closed
    mapped.shutdown()  # idempotent
    assert mapped.is_closed


def test_destroy_while_held_deletes_file_but_keeps_mapping(tmp_path):
    mapped = MappedFile(str(tmp_path / file_name(0)), SIZE, create=True)
    data = fill_pattern(mapped.path, 3)
    assert mapped.hold()
    mapped.destroy()
    assert not os.path.exists(mapped.path)
    assert not mapped.is_closed
    assert mapped.read(0, SIZE) == data
    mapped.release()
    assert mapped.is_closed


def test_unheld_file_is_unmapped_at_shutdown(tmp_path):
    mapped = MappedFile(str(tmp_path / file_name(0)), SIZE, create=True)
    mapped.shutdown()
    assert mapped.is_closed
    assert mapped.hold() is False
    assert os.path.exists(mapped.path)  # shutdown unmaps, does not delete


def test_reader_thread_holding_file_across_queue_shutdown(tmp_path):
    queue = make_queue(tmp_path, 2)
    data = fill_pattern(queue.files[1].path, 11)
    target = queue.files[1]
    held = threading.Event()
    go_on = threading.Event()
    reads = []
    errors = []

    def reader():
        try:
            mapped = queue.find_by_offset(SIZE + 5)
            assert mapped is target and mapped.hold()
            held.set()
            assert go_on.wait(10)
            for _ in range(50):
                reads.append(mapped.read(0, SIZE))
            mapped.release()
        except BaseException as exc:  # reported below
            errors.append(exc)
            held.set()

    thread = threading.Thread(target=reader)
    thread.start()
    assert held.wait(10)
    queue.shutdown()
    assert queue.files == []
    assert not target.is_closed, "unmapped while a reader held it"
    go_on.set()
    thread.join(10)
    assert not errors, errors
    assert len(reads) == 50 and all(r == data for r in reads)
    assert target.is_closed


def test_read_is_bounds_checked(tmp_path):
    mapped = MappedFile(str(tmp_path / file_name(0)), SIZE, create=True)
    try:
        for position, size in ((-1, 1), (0, SIZE + 1), (SIZE, 1), (SIZE - 1, 2), (0, -1)):
            with pytest.raises(ValueError):
                mapped.read(position, size)
        assert mapped.read(SIZE, 0) == b""
    finally:
        mapped.destroy()


def test_readonly_queue_truncate_deletes_nothing(tmp_path):
    make_queue(tmp_path, 3).shutdown()
    before = names(tmp_path)
    queue = MappedFileQueue(str(tmp_path), SIZE, readonly=True)
    queue.load()
    try:
        queue.truncate(100)
        assert len(queue.files) == 1 and queue.max_offset() == 100
        assert names(tmp_path) == before
    finally:
        queue.shutdown()
