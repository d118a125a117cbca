"""The programs in examples/ run to completion and say what they did."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def run(name: str, *args: str) -> str:
    done = subprocess.run([sys.executable, str(EXAMPLES / name), *args], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_background_consumer_handles_every_job_and_resumes(tmp_path):
    store = str(tmp_path / "store")
    assert "handled 20 of 20 jobs, 3 after a retry" in run("background_consumer.py", store)
    second = run("background_consumer.py", store)  # only the new jobs, from saved offsets
    assert "handled 20 of 20 jobs" in second and "store was not empty" in second


def test_outbox_publishes_exactly_the_committed_orders():
    out = run("outbox.py")
    assert "order 2: ROLLBACK_MESSAGE" in out
    assert "saved orders: [1, 3] published events: [1, 3]" in out


def test_replay_reads_the_window_and_copies_it():
    out = run("replay_log.py")
    assert "replayed 30 events, revenue 4035" in out  # orders 20..49
    assert "copied 30 events" in out


@pytest.mark.parametrize("name", sorted(p.name for p in EXAMPLES.glob("*.py")))
def test_every_example_has_a_docstring_with_its_command(name):
    text = (EXAMPLES / name).read_text(encoding="utf-8")
    assert text.startswith('"""') and f"python examples/{name}" in text
