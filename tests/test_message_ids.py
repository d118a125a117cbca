"""Message ids: the offset msg id and RocketMQ's client unique id (UNIQ_KEY)."""

from __future__ import annotations

import threading
import time

from mqstore.message import (
    create_uniq_id,
    decode_msg_id,
    encode_host,
    offset_msg_id,
    uniq_id_time_hint,
)


def test_offset_msg_id_vector_and_round_trip():
    assert offset_msg_id(encode_host("127.0.0.1:10911"), 0) == "7F00000100002A9F0000000000000000"
    six = offset_msg_id(encode_host("[2001:db8::5]:10911"), 123456)
    assert len(six) == 56
    assert decode_msg_id(six) == ("[2001:db8::5]:10911", 123456)


def test_uniq_id_layout_and_time_hint():
    now = 1_795_393_670_836
    uniq = create_uniq_id("192.0.2.10", now_ms=now)
    assert len(uniq) == 32 and uniq == uniq.upper()
    assert uniq.startswith("C000020A")  # the host IP comes first
    assert uniq_id_time_hint(uniq, now_ms=now + 5000) == now


def test_uniq_ids_are_unique_across_threads():
    ids = []
    lock = threading.Lock()

    def make():
        mine = [create_uniq_id() for _ in range(2000)]
        with lock:
            ids.extend(mine)

    threads = [threading.Thread(target=make) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # 16,000 ids < 65,536 counter values: no repeats even within one millisecond.
    assert len(set(ids)) == len(ids) == 16_000
    hint = uniq_id_time_hint(ids[0])
    assert abs(hint - time.time() * 1000) < 60_000
