"""Smoke test of bench/compare.py: its workload functions run on tiny counts and read
back what they wrote, so the comparison script cannot rot. mqstore's workloads always
run; an alternative's only when its package (the `bench` extra) is installed."""

from __future__ import annotations

import importlib.util
import os
import sys

import pytest

BENCH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench")
sys.path.insert(0, BENCH)
compare = pytest.importorskip("compare")

# Small files: the default config reserves 1 GiB CommitLog and 420 MB index files.
SMALL_CONFIG = {
    "mapped_file_size_commitlog": 4 << 20,
    "mapped_file_size_consume_queue": 20 * 1024,
    "max_hash_slot_num": 512,
    "max_index_num": 2048,
}
COUNT = 256  # one batch


@pytest.fixture
def ws(tmp_path, monkeypatch):
    monkeypatch.setattr(compare, "MQSTORE_CONFIG", SMALL_CONFIG)
    workspace = compare.Workspace(str(tmp_path))
    yield workspace
    workspace.cleanup()


def _installed(sys_: compare.System) -> bool:
    return sys_.module is None or importlib.util.find_spec(sys_.module) is not None


@pytest.mark.parametrize("workload", compare.WORKLOADS)
def test_mqstore_workloads_read_back_what_they_wrote(ws, workload):
    outcome = compare.run_workload(compare.system("mqstore"), workload, ws, compare.SMALL,
                                   COUNT)
    assert outcome.expected == COUNT
    assert outcome.done == COUNT
    assert outcome.seconds > 0


@pytest.mark.parametrize("name", [s.name for s in compare.SYSTEMS if s.name != "mqstore"])
def test_alternatives_put_and_consume(ws, name):
    sys_ = compare.system(name)
    if not _installed(sys_):
        pytest.skip(f"{sys_.module} not installed (the bench extra)")
    for workload in ("put", "consume", "batch", "lookup"):
        if not sys_.can(workload):
            continue
        outcome = compare.run_workload(sys_, workload, ws, compare.SMALL, COUNT)
        assert outcome.done == outcome.expected == COUNT, workload


def test_read_floor_counts_every_record(ws):
    assert compare.scan_floor(ws, compare.SMALL)(COUNT) > 0


def test_report_renders_goals_and_na(ws):
    results = compare.Results()
    for name, rate in (("mqstore", 1000.0), ("diskcache", 10.0), ("floor-each", 2000.0)):
        results.cells[(name, "put", compare.SMALL)] = compare.Cell(rate, rate)
    results.cells[("queuelib", "durable", compare.SMALL)] = compare.Cell(note="n/a: no fsync")
    text = compare.render(results, [("CPU", "test")], compare.SYSTEMS, ("0", "0"), True, 1.0,
                          (1, 0.1))
    assert "| n/a |" in text or " n/a |" in text
    assert "100.0× (diskcache 10.0)" in text
    assert "floor is 2.0× faster | met" in text
