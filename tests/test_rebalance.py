"""rebalance.allocate_averagely against RocketMQ's AllocateMessageQueueAveragely."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from mqstore.client.rebalance import allocate_averagely


def _java_allocate(mq_all, cid_all, current):
    """A line-by-line transcription of AllocateMessageQueueAveragely.allocate."""
    index = cid_all.index(current)
    mod = len(mq_all) % len(cid_all)
    if len(mq_all) <= len(cid_all):
        average = 1
    elif mod > 0 and index < mod:
        average = len(mq_all) // len(cid_all) + 1
    else:
        average = len(mq_all) // len(cid_all)
    start = index * average if (mod > 0 and index < mod) else index * average + mod
    rng = min(average, len(mq_all) - start)
    return [mq_all[(start + i) % len(mq_all)] for i in range(rng)]


def _split(queues, members):
    return [allocate_averagely(queues, members, m) for m in members]


def test_known_examples():
    assert [len(x) for x in _split(list(range(4)), ["a", "b", "c"])] == [2, 1, 1]
    assert _split(list(range(4)), ["a", "b", "c"]) == [[0, 1], [2], [3]]
    assert _split(list(range(3)), ["a", "b", "c", "d", "e"]) == [[0], [1], [2], [], []]
    assert _split(list(range(8)), ["a", "b", "c"]) == [[0, 1, 2], [3, 4, 5], [6, 7]]
    assert _split(list(range(4)), ["a"]) == [[0, 1, 2, 3]]
    assert _split(list(range(6)), ["a", "b"]) == [[0, 1, 2], [3, 4, 5]]


def test_unknown_member_or_no_queues_gets_nothing():
    assert allocate_averagely([0, 1], ["a", "b"], "zz") == []
    assert allocate_averagely([], ["a", "b"], "a") == []


@given(st.integers(0, 64), st.integers(1, 20))
def test_every_queue_exactly_once_and_even(n_queues, n_members):
    queues = list(range(n_queues))
    members = [f"m{i:02d}" for i in range(n_members)]
    parts = _split(queues, members)
    flat = [q for part in parts for q in part]
    assert sorted(flat) == queues  # each queue exactly once
    sizes = [len(p) for p in parts]
    assert max(sizes) - min(sizes) <= 1
    assert sizes == sorted(sizes, reverse=True)  # the first members take one more
    for part in parts:  # contiguous
        assert part == list(range(part[0], part[0] + len(part))) if part else True
    for m, part in zip(members, parts):
        if n_queues:
            assert part == _java_allocate(queues, members, m)
