"""Small helpers shared by test modules."""

from __future__ import annotations

T0 = 1_800_000_000_000  # a fixed "now" for injected clocks, in ms


class FakeClock:
    """A store clock (ms) that moves only when a test sets `now`."""

    def __init__(self, now: int = T0) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


def read_all(store, topic, queue_id):
    """Every message of a queue, by repeated `get` from offset 0."""
    out, offset = [], 0
    while True:
        got = store.get(topic, queue_id, offset, 32)
        if not got.messages:
            return out
        out.extend(got.messages)
        offset = got.next_begin_offset
