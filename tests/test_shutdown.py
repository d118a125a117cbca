"""Shutdown from anywhere: a signal handler, atexit, another thread."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading

import pytest

from mqstore import Message, MessageStore, StoreClosedError
from mqstore.checkpoint import StoreCheckpoint

SMALL = dict(mapped_file_size_commitlog=64 * 1024, mapped_file_size_consume_queue=200,
             max_hash_slot_num=64, max_index_num=128)


def run_child(tmp_path, body: str) -> subprocess.CompletedProcess:
    script = textwrap.dedent(f"""
        import os, signal, sys, threading, time
        from mqstore import Message, MessageStore, StoreClosedError
        store = MessageStore({str(tmp_path)!r}, **{SMALL!r})
    """) + textwrap.dedent(body)
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=60)


def assert_clean(tmp_path, expected_messages: int) -> None:
    assert not (tmp_path / "abort").exists()
    checkpoint = StoreCheckpoint(str(tmp_path / "checkpoint"))
    assert checkpoint.physic_msg_timestamp > 0 and checkpoint.logics_msg_timestamp > 0
    with MessageStore(tmp_path, **SMALL) as store:
        assert not store.recovery.abnormal
        assert sum(1 for _ in store.iter_commitlog()) == expected_messages


def test_a_process_that_exits_without_close_still_shuts_down_cleanly(tmp_path):
    done = run_child(tmp_path, """
        for i in range(100):
            store.put(Message("T", b"m%d" % i))
        print("exiting without close", flush=True)
    """)
    assert done.returncode == 0, done.stderr
    assert_clean(tmp_path, 100)


def test_close_from_a_signal_handler_while_putting(tmp_path):
    done = run_child(tmp_path, """
        acked = 0
        def on_term(signum, frame):
            store.close()
        signal.signal(signal.SIGTERM, on_term)
        threading.Timer(0.2, lambda: os.kill(os.getpid(), signal.SIGTERM)).start()
        try:
            while True:
                r = store.put(Message("T", b"x" * 100))
                assert r.ok
                acked += 1
        except StoreClosedError:
            pass
        store.close()  # again: a no-op
        print(acked, flush=True)
    """)
    assert done.returncode == 0, done.stderr
    acked = int(done.stdout.split()[-1])
    assert acked > 0
    assert not (tmp_path / "abort").exists()
    with MessageStore(tmp_path, **SMALL) as store:
        # Every acknowledged put is there; one interrupted mid-put may be there too.
        assert sum(1 for _ in store.iter_commitlog()) in (acked, acked + 1)


def test_close_from_another_thread_while_putting(tmp_path):
    store = MessageStore(tmp_path, **SMALL)
    acked = []
    errors = []

    def writer():
        try:
            while True:
                if store.put(Message("T", b"y" * 50)).ok:
                    acked.append(1)
        except StoreClosedError:
            pass
        except Exception as exc:  # anything else is a bug
            errors.append(exc)

    thread = threading.Thread(target=writer)
    thread.start()
    while len(acked) < 500:
        pass
    store.close()
    thread.join(timeout=10)
    assert not thread.is_alive() and not errors
    assert not (tmp_path / "abort").exists()
    with MessageStore(tmp_path, **SMALL) as reopened:
        assert sum(1 for _ in reopened.iter_commitlog()) == len(acked)
    assert os.path.exists(tmp_path / "checkpoint")


HANDLERS = {
    "function": "signal.signal(signal.SIGTERM, lambda signum, frame: store.close())",
    # the "a second signal kills" idiom: the handler is no longer registered when
    # close() runs
    "resets itself": """
def on_term(signum, frame):
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    store.close()
signal.signal(signal.SIGTERM, on_term)""",
    "callable object": """
class OnTerm:
    def __call__(self, signum, frame):
        store.close()
signal.signal(signal.SIGTERM, OnTerm())""",
}


@pytest.mark.parametrize("handler", sorted(HANDLERS))
def test_close_from_a_signal_handler_that_interrupts_a_file_roll(tmp_path, handler):
    # The signal lands while the put that rolls to a new CommitLog file holds the
    # append lock: the close must wait for that put, not unmap the file under it.
    done = run_child(tmp_path, HANDLERS[handler] + "\n" + textwrap.dedent("""
        roll = store.commitlog.on_roll
        rolls = []
        def roll_then_signal():
            rolls.append(1)
            if len(rolls) == 3:  # the first roll opens the first file
                os.kill(os.getpid(), signal.SIGTERM)  # the handler runs inside the roll
            roll()
        store.commitlog.on_roll = roll_then_signal
        acked = 0
        try:
            while True:
                assert store.put(Message("T", b"x" * 100)).ok
                acked += 1
        except StoreClosedError:
            pass
        store.close()  # waits for the helper that finishes the close
        print(acked, flush=True)
    """))
    assert done.returncode == 0, done.stderr
    acked = int(done.stdout.split()[-1])
    per_file = SMALL["mapped_file_size_commitlog"] // 200
    assert acked > 2 * per_file * 0.9  # two files filled before the roll that signalled
    assert_clean(tmp_path, acked)


def test_close_from_signal_handlers_at_random_moments(tmp_path):
    # Many short runs, each closed by a signal at a random point of put, put_batch,
    # get or a roll; every run must close cleanly and keep every acknowledged message.
    done = run_child(tmp_path / "unused", f"""
        import random
        from pathlib import Path
        store.close()
        root = Path({str(tmp_path)!r})
        rng = random.Random(7)
        counts = []
        for run in range(25):
            s = MessageStore(root / str(run), **{SMALL!r})
            signal.signal(signal.SIGTERM, lambda signum, frame, s=s: s.close())
            threading.Timer(rng.uniform(0.005, 0.05),
                            lambda: os.kill(os.getpid(), signal.SIGTERM)).start()
            acked = 0
            try:
                while True:
                    if acked % 3 == 2:
                        r = s.put_batch([Message("T", b"b" * 200) for _ in range(4)])
                        assert r.ok
                        acked += 4
                    else:
                        assert s.put(Message("T", b"x" * 100)).ok
                        acked += 1
                    s.get("T", 0, max(0, acked - 2), 2)
            except StoreClosedError:
                pass
            s.close()
            counts.append(acked)
        print(" ".join(map(str, counts)), flush=True)
    """)
    assert done.returncode == 0, done.stderr
    counts = [int(n) for n in done.stdout.split()]
    assert len(counts) == 25
    for run, acked in enumerate(counts):
        assert not (tmp_path / str(run) / "abort").exists()
        with MessageStore(tmp_path / str(run), **SMALL) as store:
            assert not store.recovery.abnormal
            stored = sum(1 for _ in store.iter_commitlog())
            # an interrupted put or batch may have completed after the signal
            assert acked <= stored <= acked + 4
