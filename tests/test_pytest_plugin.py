"""The pytest plugin (fixtures mq_store, mq_store_factory, reopen(), --mqstore-keep),
run through pytester in a fresh pytest session."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

pytest_plugins = ["pytester"]


def test_mq_producer_and_mq_consumer(pytester):
    pytester.makepyfile(
        """
        import pytest
        from mqstore import Message, SendStatus

        def test_round_trip(mq_producer, mq_consumer):
            mq_consumer.subscribe("Orders", "paid")
            sent = [mq_producer.send(Message("Orders", b"o%d" % i, tags="paid")) for i in range(6)]
            mq_producer.send(Message("Orders", b"skipped", tags="created"))
            assert all(r.send_status is SendStatus.SEND_OK for r in sent)
            got = mq_consumer.wait_for(6, timeout=10)
            assert sorted(m.body for m in got) == [b"o%d" % i for i in range(6)]
            assert {m.uniq_key for m in got} == {r.msg_id for r in sent}

        def test_wait_for_times_out_with_the_count(mq_consumer):
            mq_consumer.subscribe("Empty")
            with pytest.raises(TimeoutError, match="received 0 of 1"):
                mq_consumer.wait_for(1, timeout=0.2)
        """
    )
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)


def test_mq_store_survives_reopen(pytester):
    pytester.makepyfile(
        """
        from mqstore import Message, MessageStore

        def test_durable(mq_store):
            assert isinstance(mq_store, MessageStore)
            assert mq_store.config.mapped_file_size_commitlog == 64 * 1024
            holder = mq_store  # the code under test keeps its reference
            for i in range(5):
                assert mq_store.put(Message("T", b"m%d" % i)).ok
            mq_store.settle()
            assert mq_store.max_offset("T", 0) == 5  # all visible after settle()
            path = mq_store.path
            same = mq_store.reopen()
            assert same is holder and not holder.closed and holder.path == path
            assert holder.recovery.abnormal is False  # closed cleanly, then opened
            got = holder.get("T", 0, 0, 32)
            assert [m.body for m in got.messages] == [b"m%d" % i for i in range(5)]
            holder.reopen(max_msgs_num_batch=8)
            assert holder.config.max_msgs_num_batch == 8
            assert holder.max_offset("T", 0) == 5
        """
    )
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)


def test_factory_opens_several_stores_and_closes_them(pytester):
    pytester.makeconftest(
        """
        import pytest

        @pytest.fixture
        def mq_store_options(mq_store_options):
            return {**mq_store_options, "max_msgs_num_batch": 7}
        """
    )
    pytester.makepyfile(
        """
        from mqstore import Message

        opened = []

        def test_two(mq_store_factory):
            a = mq_store_factory("a")
            b = mq_store_factory("b", mapped_file_size_commitlog=128 * 1024)
            opened.extend([a, b])
            assert a.path != b.path
            assert a.config.max_msgs_num_batch == b.config.max_msgs_num_batch == 7
            assert b.config.mapped_file_size_commitlog == 128 * 1024
            a.put(Message("T", b"x"))
            assert b.max_offset("T", 0) == 0

        def test_closed_after(mq_store):
            assert all(s.closed for s in opened) and len(opened) == 2
        """
    )
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)


FAILING = """
from mqstore import Message

def test_breaks(mq_store):
    mq_store.put(Message("Kept", b"evidence", keys="k1"))
    assert False, "the service under test misbehaved"

def test_fine(mq_store):
    mq_store.put(Message("Other", b"ok"))
"""


def test_keep_keeps_failed_test_stores_and_says_where(pytester):
    pytester.makepyfile(FAILING)
    result = pytester.runpytest("-p", "no:cacheprovider", "--mqstore-keep")
    result.assert_outcomes(passed=1, failed=1)
    text = result.stdout.str()
    assert "mqstore: kept store directories of failed tests" in text
    match = re.search(r"kept store directory: (\S+)", text)
    assert match, text
    kept = Path(match.group(1))
    assert kept.name == "store" and (kept / "commitlog").is_dir()
    assert kept.is_relative_to(pytester.path.parent / "basetemp" / "mqstore-kept")
    assert "test_breaks" in str(kept) and "test_fine" not in text.split("kept store")[-1]
    # the kept directory is a normal store: the CLI reads what the failed test wrote
    proc = subprocess.run(
        [sys.executable, "-m", "mqstore", "cat", str(kept), "--format", "raw"],
        capture_output=True,
        timeout=60,
    )
    assert proc.returncode == 0 and proc.stdout == b"evidence\n"
    assert len([p for p in kept.parent.parent.iterdir()]) == 1  # only the failed test


def test_without_keep_nothing_is_kept(pytester):
    pytester.makepyfile(FAILING)
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, failed=1)
    assert "kept store" not in result.stdout.str()
    basetemp = pytester.path.parent / "basetemp"  # where pytester runs put tmp_path
    assert basetemp.is_dir() and not list(basetemp.rglob("mqstore-kept"))


def test_keep_dir_option(pytester, tmp_path):
    pytester.makepyfile(FAILING)
    target = tmp_path / "evidence"
    result = pytester.runpytest(
        "-p", "no:cacheprovider", "--mqstore-keep", f"--mqstore-keep-dir={target}"
    )
    result.assert_outcomes(passed=1, failed=1)
    (kept,) = target.iterdir()
    assert (kept / "store" / "commitlog").is_dir()
    assert str(kept / "store") in result.stdout.str()


def test_the_worked_example_in_docs_testing_md_passes(pytester):
    text = (Path(__file__).resolve().parents[1] / "docs" / "testing.md").read_text()
    files = {}
    for block in re.findall(r"```python\n(.*?)```", text, re.S):
        name = re.match(r"# (\S+\.py)\n", block)
        assert name, block[:40]
        files[name.group(1)] = block
    assert set(files) == {"orders.py", "test_orders.py", "conftest.py"}
    for name, code in files.items():
        (pytester.path / name).write_text(code)
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=3)
