"""open_readonly beside a live writer: refresh() takes in what the writer appended."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time

from mqstore import Message, MessageStore

SMALL = dict(mapped_file_size_commitlog=64 * 1024, mapped_file_size_consume_queue=200,
             max_hash_slot_num=64, max_index_num=128)


def settle(writer: MessageStore) -> None:
    deadline = time.monotonic() + 5
    while writer.dispatcher.behind() and time.monotonic() < deadline:
        time.sleep(0.005)


def test_reader_follows_a_writer_across_files_and_new_queues(tmp_path):
    writer = MessageStore(tmp_path, **SMALL)
    try:
        for i in range(20):
            writer.put(Message("T", b"first-%d" % i, keys=f"k{i}"))
        settle(writer)
        reader = MessageStore.open_readonly(tmp_path, **SMALL)
        try:
            assert reader.max_offset("T", 0) == 20
            for round_no in range(3):
                for i in range(400):  # several 64 KiB files per round
                    writer.put(Message("T", b"r%d-%d-" % (round_no, i) + bytes(150),
                                       keys=f"r{round_no}-{i}"), queue_id=i % 2)
                writer.put(Message(f"New{round_no}", b"fresh"))
                settle(writer)
                assert reader.max_offset("T", 1) < writer.max_offset("T", 1)  # not yet
                reader.refresh()
                assert reader.max_commitlog_offset() == writer.max_commitlog_offset()
                for queue_id in (0, 1):
                    assert reader.max_offset("T", queue_id) == writer.max_offset("T", queue_id)
                assert reader.max_offset(f"New{round_no}", 0) == 1
                last = reader.get("T", 1, writer.max_offset("T", 1) - 1, 1).messages
                assert last and last[0].body.startswith(b"r%d-399-" % round_no)
                found = reader.query_by_key("T", f"r{round_no}-123")
                assert [m.body.startswith(b"r%d-123-" % round_no) for m in found] == [True]
            assert sum(1 for _ in reader.iter_commitlog()) == 20 + 3 * 401
        finally:
            reader.close()
    finally:
        writer.close()


def test_reader_follows_a_writer_in_another_process(tmp_path):
    script = textwrap.dedent(f"""
        import sys
        from mqstore import Message, MessageStore
        store = MessageStore({str(tmp_path)!r}, **{SMALL!r})
        store.put(Message("P", b"first"))
        store.flush()
        print("ready", flush=True)
        sys.stdin.readline()
        for i in range(300):
            store.put(Message("P", b"m%d" % i))
        store.flush()
        print("done", flush=True)
        sys.stdin.readline()
        store.close()
    """)
    child = subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "ready"
        deadline = time.monotonic() + 5
        reader = MessageStore.open_readonly(tmp_path, **SMALL)
        while reader.max_offset("P", 0) < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
            reader.refresh()
        assert reader.max_offset("P", 0) == 1
        child.stdin.write("go\n")
        child.stdin.flush()
        assert child.stdout.readline().strip() == "done"
        while reader.max_offset("P", 0) < 301 and time.monotonic() < deadline:
            time.sleep(0.01)  # the writer's dispatcher may still be catching up
            reader.refresh()
        assert reader.max_offset("P", 0) == 301
        bodies = [m.body for m in reader.iter_commitlog()]
        assert bodies == [b"first"] + [b"m%d" % i for i in range(300)]
        reader.close()
    finally:
        child.stdin.write("stop\n")
        child.stdin.flush()
        assert child.wait(timeout=30) == 0


def test_a_bare_commitlog_is_served_from_queues_rebuilt_in_memory(tmp_path):
    """open_readonly of a directory holding only a CommitLog (copied from a RocketMQ
    broker here) rebuilds ConsumeQueues and index in memory and writes nothing."""
    import hashlib
    import os
    import shutil

    from golden import GOLDEN_CONFIG, case_dir, manifest

    shutil.copytree(case_dir("basic") / "store" / "commitlog", tmp_path / "commitlog")

    def snapshot():
        return {(root, name): hashlib.sha256(open(os.path.join(root, name), "rb").read()).digest()
                for root, _dirs, names in os.walk(tmp_path) for name in names}

    before = snapshot()
    store = MessageStore.open_readonly(tmp_path, **GOLDEN_CONFIG)
    try:
        assert store.in_memory and store.recovery.records_dispatched == 620
        rows = [row for row in manifest("basic") if row["inConsumeQueue"]]
        for row in rows:
            got = store.get(row["topic"], row["queueId"], row["queueOffset"], 1)
            assert [m.commitlog_offset for m in got.messages] == [row["commitLogOffset"]]
            if row["keys"]:
                key = row["keys"].split(" ")[0]
                found = store.query_by_key(row["topic"], key, 64)
                assert row["commitLogOffset"] in [m.commitlog_offset for m in found]
    finally:
        store.close()
    assert snapshot() == before
    assert sorted(os.listdir(tmp_path)) == ["commitlog"]


def test_read_only_queues_and_index_refuse_writes_instead_of_crashing(tmp_path):
    """A read-only store maps its files PROT_READ, where a write would be a segfault:
    CI once hit one, when a writer created consumequeue/ between the read-only store
    deciding to rebuild in memory and loading the queues from disk. Both the decision
    (taken once) and this guard now stand in the way."""
    import pytest

    from mqstore import MQStoreError
    from mqstore._native import ffi

    with MessageStore(tmp_path, **SMALL) as writer:
        writer.put(Message("T", b"x", keys="k"))
    reader = MessageStore.open_readonly(tmp_path, **SMALL)
    try:
        assert not reader.in_memory
        queue = reader.consume_queue("T", 0)
        fields = ffi.new("int64_t[]", 64)
        with pytest.raises(MQStoreError, match="read-only"):
            queue.put_units(fields, 1, 1)
        with pytest.raises(MQStoreError, match="read-only"):
            reader.index.add(ffi.new("char[]", 8), fields, 1)
        assert reader.get("T", 0, 0, 1).messages[0].body == b"x"
    finally:
        reader.close()
