"""Transactional messages: half / commit / op records as RocketMQ 4.9.8 stores them,
rollback, check-backs (injected clock + check_now), checker failures, the check
maximum, a restart in the middle, and a local transaction that raises or returns
junk."""

from __future__ import annotations

import logging
import os
import threading
import time

import pytest

from golden import GOLDEN_CONFIG, copy_store, manifest
from mqstore import Message, codec
from mqstore.client.producer import Producer, TransactionProducer
from mqstore.errors import MQClientError
from mqstore.topics import (
    TRANS_CHECK_MAX_TIME_TOPIC,
    TRANS_HALF_TOPIC,
    TRANS_OP_HALF_TOPIC,
)
from mqstore.transaction import (
    OP_TAG,
    SYSTEM_GROUP,
    LocalTransactionState,
)
from support import FakeClock, read_all

COMMIT = LocalTransactionState.COMMIT_MESSAGE
ROLLBACK = LocalTransactionState.ROLLBACK_MESSAGE
UNKNOW = LocalTransactionState.UNKNOW
T0 = 1_800_000_000_000
TIMEOUT = 6_000


def wait_count(store, topic, queue_id, count, timeout=10.0):
    assert store.wait_for_message(topic, queue_id, count - 1, timeout), (topic, queue_id, count)


def wait_until(predicate, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def check(store, now):
    """One check pass at `now`, once everything written so far is dispatched (a pass
    sees the half queue as far as its ConsumeQueue goes)."""
    dispatcher = store.dispatcher
    assert dispatcher.wait_for_arrival(lambda: dispatcher.behind() == 0, 10)
    return store.transactions.check_now(now)


class Checker:
    """A check-back function answering from a script; records its calls."""

    def __init__(self, *answers):
        self.answers = list(answers)
        self.calls = []
        self.threads = []
        self.event = threading.Event()

    def __call__(self, msg):
        self.calls.append(msg)
        self.threads.append(threading.current_thread().name)
        answer = self.answers.pop(0) if self.answers else UNKNOW
        self.event.set()
        if isinstance(answer, BaseException):
            raise answer
        return answer

    def wait_calls(self, n, timeout=10.0):
        assert wait_until(lambda: len(self.calls) >= n, timeout), (len(self.calls), n)


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
def tx_store(small_store, clock):
    store = small_store(clock=clock, transaction_check_enable=False)
    store.create_topic("Pay", 2)
    return store


def ops(store):
    return read_all(store, TRANS_OP_HALF_TOPIC, 0)


def halves(store):
    return read_all(store, TRANS_HALF_TOPIC, 0)


# -- commit / rollback -----------------------------------------------------------------


def test_commit(tx_store):
    store = tx_store
    checker = Checker()
    producer = TransactionProducer(store, "tx_pg", check=checker)
    seen = {}

    def execute(msg, arg):
        seen["arg"] = arg
        seen["visible"] = store.max_offset("Pay", 0)
        return COMMIT

    result = producer.send_in_transaction(
        Message("Pay", b"paid", tags="TxTag", keys="order-1"), execute, "the-arg")
    assert result.local_transaction_state is COMMIT
    assert result.transaction_id == result.msg_id
    assert seen == {"arg": "the-arg", "visible": 0}  # not visible while executing
    wait_count(store, "Pay", 0, 1)
    [half] = halves(store)
    [commit] = read_all(store, "Pay", 0)
    wait_count(store, TRANS_OP_HALF_TOPIC, 0, 1)
    [op] = ops(store)
    # the half: invisible type, where the message was going, who sent it
    assert half.commitlog_offset == result.commitlog_offset
    assert half.sys_flag == 0 and half.transaction_type == 0
    assert half.properties["TRAN_MSG"] == "true"
    assert half.properties["PGROUP"] == "tx_pg"
    assert half.properties["REAL_TOPIC"] == "Pay"
    assert half.properties["REAL_QID"] == "0"
    assert half.properties["WAIT"] == "true"
    assert half.uniq_key == result.msg_id
    # the commit: COMMIT type, points at the half, same properties string
    assert commit.sys_flag & codec.TRANSACTION_TYPE_MASK == codec.TRANSACTION_COMMIT_TYPE == 8
    assert commit.prepared_transaction_offset == half.commitlog_offset
    assert commit.encoded_properties() == half.encoded_properties()
    assert commit.body == b"paid" and commit.uniq_key == result.msg_id
    assert commit.born_timestamp == half.born_timestamp
    assert commit.tags == "TxTag" and commit.keys == ["order-1"]
    # the op: tag d, body the half's queue offset, only TAGS and WAIT
    assert op.tags == OP_TAG == "d"
    assert op.body == str(half.queue_offset).encode()
    assert dict(op.properties) == {"TAGS": "d", "WAIT": "true"}
    assert op.uniq_key is None
    assert op.born_host == store.config.store_host
    # resolved: a check pass asks nobody
    assert check(store, T0 + 100_000) == 0
    assert checker.calls == []
    producer.shutdown()


def test_rollback(tx_store):
    store = tx_store
    checker = Checker()
    producer = TransactionProducer(store, "tx_pg", check=checker)
    result = producer.send_in_transaction(Message("Pay", b"nope"), lambda m, a: ROLLBACK)
    assert result.local_transaction_state is ROLLBACK
    wait_count(store, TRANS_OP_HALF_TOPIC, 0, 1)
    [op] = ops(store)
    [half] = halves(store)
    assert op.body == str(half.queue_offset).encode()
    assert check(store, T0 + 100_000) == 0
    time.sleep(0.05)
    assert checker.calls == []
    assert store.max_offset("Pay", 0) == 0 and store.max_offset("Pay", 1) == 0
    assert store.query_by_key("Pay", result.msg_id) == []
    producer.shutdown()


def test_delay_level_ignored_for_transactions(tx_store, clock):
    producer = TransactionProducer(tx_store, "tx_pg", check=Checker())
    msg = Message("Pay", b"d", delay_level=2)
    producer.send_in_transaction(msg, lambda m, a: COMMIT)
    wait_count(tx_store, "Pay", 0, 1)
    assert "DELAY" not in read_all(tx_store, "Pay", 0)[0].properties
    producer.shutdown()


# -- check-back ---------------------------------------------------------------------------


@pytest.mark.parametrize("answer", [COMMIT, ROLLBACK])
def test_unknown_then_checked(tx_store, clock, answer):
    store = tx_store
    checker = Checker(answer)
    producer = TransactionProducer(store, "tx_pg", check=checker)
    result = producer.send_in_transaction(
        Message("Pay", b"doubt", keys="k"), lambda m, a: UNKNOW)
    assert result.local_transaction_state is UNKNOW
    wait_count(store, TRANS_HALF_TOPIC, 0, 1)
    assert store.max_offset(TRANS_OP_HALF_TOPIC, 0) == 0
    # not yet timed out: nobody is asked
    assert check(store, T0 + TIMEOUT - 1) == 0
    assert checker.calls == []
    assert check(store, T0 + TIMEOUT) == 1
    checker.wait_calls(1)
    asked = checker.calls[0]
    assert asked.topic == "Pay" and asked.queue_id == 0  # as the producer sent it
    assert asked.uniq_key == result.msg_id and asked.body == b"doubt"
    assert asked.properties["TRANSACTION_CHECK_TIMES"] == "1"
    assert checker.threads[0].startswith("mqstore-send-tx_pg")  # the producer's executor
    wait_count(store, TRANS_OP_HALF_TOPIC, 0, 1)
    first, renewed = halves(store)
    assert renewed.properties["TRANSACTION_CHECK_TIMES"] == "1"
    assert [op.body for op in ops(store)] == [str(renewed.queue_offset).encode()]
    if answer is COMMIT:
        wait_count(store, "Pay", 0, 1)
        [commit] = read_all(store, "Pay", 0)
        assert commit.body == b"doubt" and commit.uniq_key == result.msg_id
        assert commit.prepared_transaction_offset == renewed.commitlog_offset
        assert commit.transaction_type == codec.TRANSACTION_COMMIT_TYPE
    else:
        assert store.max_offset("Pay", 0) == 0
    # resolved: later passes ask nobody, and the progress is saved
    assert check(store, T0 + 10 * TIMEOUT) == 0
    assert store.consumer_offsets.query(SYSTEM_GROUP, TRANS_HALF_TOPIC, 0) == 2
    assert len(checker.calls) == 1
    producer.shutdown()


def test_checker_raises_then_checked_again(tx_store, clock, caplog):
    store = tx_store
    checker = Checker(RuntimeError("db down"), COMMIT)
    producer = TransactionProducer(store, "tx_pg", check=checker)
    producer.send_in_transaction(Message("Pay", b"retry"), lambda m, a: UNKNOW)
    wait_count(store, TRANS_HALF_TOPIC, 0, 1)  # dispatched: a pass sees it
    with caplog.at_level(logging.ERROR, logger="mqstore.transaction"):
        assert check(store, T0 + TIMEOUT) == 1
        checker.wait_calls(1)
        assert wait_until(lambda: "db down" in caplog.text)
    time.sleep(0.05)
    assert store.max_offset(TRANS_OP_HALF_TOPIC, 0) == 0  # UNKNOW: still in doubt
    assert store.max_offset("Pay", 0) == 0
    assert check(store, T0 + TIMEOUT + 60_000) == 1
    checker.wait_calls(2)
    assert checker.calls[1].properties["TRANSACTION_CHECK_TIMES"] == "2"
    wait_count(store, "Pay", 0, 1)
    assert [m.body for m in read_all(store, "Pay", 0)] == [b"retry"]
    producer.shutdown()


def test_checker_returns_junk_is_unknown(tx_store, clock, caplog):
    store = tx_store
    checker = Checker("COMMIT_MESSAGE", ROLLBACK)
    producer = TransactionProducer(store, "tx_pg", check=checker)
    producer.send_in_transaction(Message("Pay", b"j"), lambda m, a: UNKNOW)
    wait_count(store, TRANS_HALF_TOPIC, 0, 1)  # dispatched: a pass sees it
    with caplog.at_level(logging.ERROR, logger="mqstore.transaction"):
        check(store, T0 + TIMEOUT)
        checker.wait_calls(1)
        assert wait_until(lambda: "treated as UNKNOW" in caplog.text)
    assert store.max_offset(TRANS_OP_HALF_TOPIC, 0) == 0
    check(store, T0 + 2 * TIMEOUT)
    checker.wait_calls(2)
    wait_count(store, TRANS_OP_HALF_TOPIC, 0, 1)
    assert store.max_offset("Pay", 0) == 0
    producer.shutdown()


def test_max_checks_then_dropped(small_store, clock):
    store = small_store(clock=clock, transaction_check_enable=False, transaction_check_max=3)
    checker = Checker()  # always UNKNOW
    producer = TransactionProducer(store, "tx_pg", check=checker)
    result = producer.send_in_transaction(Message("Pay", b"stuck"), lambda m, a: UNKNOW)
    wait_count(store, TRANS_HALF_TOPIC, 0, 1)  # dispatched: a pass sees it
    for n in range(1, 4):
        assert check(store, T0 + n * TIMEOUT) == 1
        checker.wait_calls(n)
        assert checker.calls[-1].properties["TRANSACTION_CHECK_TIMES"] == str(n)
    assert store.transactions.checks == 3 and store.transactions.dropped == 0
    assert check(store, T0 + 5 * TIMEOUT) == 1  # the 4th: dropped
    assert store.transactions.dropped == 1
    wait_count(store, TRANS_CHECK_MAX_TIME_TOPIC, 0, 1)
    [dropped] = read_all(store, TRANS_CHECK_MAX_TIME_TOPIC, 0)
    assert dropped.uniq_key == result.msg_id and dropped.body == b"stuck"
    assert dropped.properties["TRANSACTION_CHECK_TIMES"] == "3"
    # nothing more: no check, no commit, no second drop
    assert check(store, T0 + 100 * TIMEOUT) == 0
    time.sleep(0.05)
    assert len(checker.calls) == 3
    assert store.max_offset("Pay", 0) == 0 and store.max_offset("Pay", 1) == 0
    assert store.max_offset(TRANS_CHECK_MAX_TIME_TOPIC, 0) == 1
    producer.shutdown()


def test_restart_in_the_middle(small_store, store_dir, clock):
    store = small_store(clock=clock, transaction_check_enable=False)
    producer = TransactionProducer(store, "tx_pg", check=Checker())
    result = producer.send_in_transaction(Message("Pay", b"across"), lambda m, a: UNKNOW)
    producer.shutdown()
    store.close()
    clock.now = T0 + TIMEOUT
    store = small_store(clock=clock, transaction_check_enable=False)
    assert store.max_offset("Pay", result.message_queue.queue_id) == 0
    checker = Checker(COMMIT)
    producer = TransactionProducer(store, "tx_pg", check=checker)
    assert check(store, None) == 1
    checker.wait_calls(1)
    assert checker.calls[0].uniq_key == result.msg_id
    qid = result.message_queue.queue_id
    wait_count(store, "Pay", qid, 1)
    assert [m.uniq_key for m in read_all(store, "Pay", qid)] == [result.msg_id]
    producer.shutdown()
    store.close()
    # progress survives too: the next store asks nobody and commits nothing twice
    store = small_store(clock=clock, transaction_check_enable=False)
    other = Checker(COMMIT)
    producer = TransactionProducer(store, "tx_pg", check=other)
    assert check(store, T0 + 100 * TIMEOUT) == 0
    time.sleep(0.05)
    assert other.calls == []
    assert store.max_offset("Pay", qid) == 1
    producer.shutdown()


def test_background_check_thread(small_store):
    store = small_store(transaction_check_interval=50, transaction_timeout=100)
    checker = Checker(COMMIT)
    producer = TransactionProducer(store, "tx_bg", check=checker)
    result = producer.send_in_transaction(Message("Pay", b"bg"), lambda m, a: UNKNOW)
    qid = result.message_queue.queue_id
    wait_count(store, "Pay", qid, 1, timeout=10)
    assert len(checker.calls) == 1
    assert read_all(store, "Pay", qid)[0].uniq_key == result.msg_id
    producer.shutdown()


# -- local transaction failures --------------------------------------------------------


@pytest.mark.parametrize("execute", [
    lambda m, a: 1 / 0,
    lambda m, a: None,
    lambda m, a: "COMMIT_MESSAGE",
    lambda m, a: True,
], ids=["raises", "none", "str", "bool"])
def test_execute_failure_is_unknown(tx_store, caplog, execute):
    store = tx_store
    checker = Checker(COMMIT)
    producer = TransactionProducer(store, "tx_pg", check=checker)
    with caplog.at_level(logging.ERROR, logger="mqstore.client.producer"):
        result = producer.send_in_transaction(Message("Pay", b"e"), execute)
    assert result.local_transaction_state is UNKNOW
    assert "state UNKNOW" in caplog.text
    wait_count(store, TRANS_HALF_TOPIC, 0, 1)
    time.sleep(0.02)
    assert store.max_offset(TRANS_OP_HALF_TOPIC, 0) == 0
    assert store.max_offset("Pay", 0) == 0
    # and the check-back settles it
    check(store, T0 + TIMEOUT)
    checker.wait_calls(1)
    wait_count(store, "Pay", result.message_queue.queue_id, 1)
    producer.shutdown()


def test_execute_not_callable(tx_store):
    producer = TransactionProducer(tx_store, "tx_pg", check=Checker())
    before = tx_store.max_commitlog_offset()
    with pytest.raises(TypeError):
        producer.send_in_transaction(Message("Pay", b"x"), None)
    with pytest.raises(MQClientError):
        producer.send_in_transaction(Message("Pay", b""), lambda m, a: COMMIT)
    assert tx_store.max_commitlog_offset() == before
    producer.shutdown()


def test_one_checker_per_group(tx_store):
    first = TransactionProducer(tx_store, "tx_pg", check=Checker())
    with pytest.raises(ValueError):
        TransactionProducer(tx_store, "tx_pg", check=Checker())
    first.shutdown()
    second = TransactionProducer(tx_store, "tx_pg", check=Checker())
    second.shutdown()


def test_plain_producer_cannot_send_to_half_topic(tx_store):
    producer = Producer(tx_store, "pg")
    with pytest.raises(MQClientError):
        producer.send(Message(TRANS_HALF_TOPIC, b"x"))


# -- golden shapes -------------------------------------------------------------------------


def test_record_shapes_match_golden(small_store, tmp_path):
    """Send the golden store's transaction again through mqstore (same topic, queue,
    keys, tags, group and UNIQ_KEY): the property strings are RocketMQ's, byte for byte,
    but for the CLUSTER property a broker adds."""
    rows = manifest("basic")
    g_half = next(r for r in rows if r["topic"] == TRANS_HALF_TOPIC)
    g_commit = next(r for r in rows if r["sysFlag"] & 0xC == 8)
    g_op = next(r for r in rows if r["topic"] == TRANS_OP_HALF_TOPIC)
    golden = small_store(copy_store("basic", tmp_path), **GOLDEN_CONFIG)
    golden_half = golden.look_by_offset(g_half["commitLogOffset"])
    golden_commit = golden.look_by_offset(g_commit["commitLogOffset"])
    golden_op = golden.look_by_offset(g_op["commitLogOffset"])
    assert golden_commit.encoded_properties() == golden_half.encoded_properties()
    cluster = b"CLUSTER\x01GoldenCluster\x02"
    assert cluster in golden_half.encoded_properties()

    store = small_store(tmp_path / "ours", transaction_check_enable=False,
                        store_host=g_half["storeHost"])
    store.create_topic("TopicB", 2)
    producer = TransactionProducer(store, g_half["properties"]["PGROUP"], check=Checker())
    producer.send_in_transaction(Message("TopicB", b"warm-up"), lambda m, a: ROLLBACK)  # q0
    msg = Message("TopicB", b"tx", tags="TxTag", keys="tx-1",
                  properties={"UNIQ_KEY": g_half["uniqKey"]})
    result = producer.send_in_transaction(msg, lambda m, a: COMMIT)
    assert result.message_queue.queue_id == 1
    wait_count(store, "TopicB", 1, 1)
    wait_count(store, TRANS_OP_HALF_TOPIC, 0, 2)
    half = halves(store)[1]
    [commit] = read_all(store, "TopicB", 1)
    op = ops(store)[1]
    expected = golden_half.encoded_properties().replace(cluster, b"")
    assert half.encoded_properties() == expected
    assert commit.encoded_properties() == expected
    assert op.encoded_properties() == golden_op.encoded_properties()
    assert half.sys_flag == golden_half.sys_flag == 0
    assert commit.sys_flag == golden_commit.sys_flag == 8
    assert commit.prepared_transaction_offset == half.commitlog_offset
    assert golden_commit.prepared_transaction_offset == golden_half.commitlog_offset
    assert op.body == str(half.queue_offset).encode()
    assert golden_op.body == str(golden_half.queue_offset).encode()
    assert op.born_host == op.store_host == golden_op.born_host == golden_op.store_host
    producer.shutdown()


def test_check_immunity_time(tx_store, clock):
    """CHECK_IMMUNITY_TIME_IN_SECONDS delays the first check of its own half."""
    store = tx_store
    checker = Checker(COMMIT)
    producer = TransactionProducer(store, "tx_pg", check=checker)
    msg = Message("Pay", b"slow", properties={"CHECK_IMMUNITY_TIME_IN_SECONDS": "30"})
    result = producer.send_in_transaction(msg, lambda m, a: UNKNOW)
    wait_count(store, TRANS_HALF_TOPIC, 0, 1)
    assert check(store, T0 + TIMEOUT) == 0
    assert check(store, T0 + 29_999) == 0
    time.sleep(0.02)
    assert checker.calls == []
    assert check(store, T0 + 30_000) == 1
    checker.wait_calls(1)
    wait_count(store, "Pay", result.message_queue.queue_id, 1)
    producer.shutdown()


def test_immune_half_does_not_hold_back_later_ones(tx_store, clock):
    """A half with a long immunity time must not delay the check of the halves behind
    it (RocketMQ puts the immune half back at the end of the half queue and goes on)."""
    store = tx_store
    checker = Checker(COMMIT, COMMIT)
    producer = TransactionProducer(store, "tx_pg", check=checker)
    slow = Message("Pay", b"slow", properties={"CHECK_IMMUNITY_TIME_IN_SECONDS": "3600"})
    r_slow = producer.send_in_transaction(slow, lambda m, a: UNKNOW)
    r_fast = producer.send_in_transaction(Message("Pay", b"fast"), lambda m, a: UNKNOW)
    wait_count(store, TRANS_HALF_TOPIC, 0, 2)
    check(store, T0 + TIMEOUT)
    checker.wait_calls(1)
    assert [m.uniq_key for m in checker.calls] == [r_fast.msg_id]
    wait_count(store, "Pay", r_fast.message_queue.queue_id, 1)
    wait_count(store, TRANS_OP_HALF_TOPIC, 0, 1)
    # passes meanwhile do not ask about either again
    for n in range(2, 5):
        check(store, T0 + n * TIMEOUT)
    time.sleep(0.05)
    assert len(checker.calls) == 1
    # the slow one is asked once its hour is over, and committed once
    check(store, T0 + 3_600_000)
    checker.wait_calls(2)
    assert checker.calls[1].uniq_key == r_slow.msg_id
    wait_count(store, "Pay", r_slow.message_queue.queue_id, 1)
    wait_count(store, TRANS_OP_HALF_TOPIC, 0, 2)
    check(store, T0 + 3_700_000)
    time.sleep(0.05)
    assert len(checker.calls) == 2
    assert store.max_offset("Pay", r_slow.message_queue.queue_id) == 1
    producer.shutdown()


def test_put_back_copy_resolved_by_original_end(tx_store, clock):
    """A check pass runs while a slow local transaction (with an immunity time) is
    still executing: the half is put back; the transaction then commits the original.
    The copy is resolved by the original's op: never checked, never committed again,
    even after passes moved the op progress past that op."""
    store = tx_store
    checker = Checker(COMMIT)
    producer = TransactionProducer(store, "tx_pg", check=checker)

    def slow_execute(msg, arg):
        assert check(store, T0 + TIMEOUT) == 0  # a pass during the local transaction
        return COMMIT

    msg = Message("Pay", b"slow", properties={"CHECK_IMMUNITY_TIME_IN_SECONDS": "60"})
    result = producer.send_in_transaction(msg, slow_execute)
    qid = result.message_queue.queue_id
    wait_count(store, "Pay", qid, 1)
    wait_count(store, TRANS_OP_HALF_TOPIC, 0, 1)
    original, copy = halves(store)
    assert copy.uniq_key == original.uniq_key
    assert copy.properties["TRAN_PREPARED_QUEUE_OFFSET"] == str(original.queue_offset)
    assert copy.born_timestamp == original.born_timestamp
    for now in (T0 + 20_000, T0 + 40_000, T0 + 61_000, T0 + 200_000):
        check(store, now)
    time.sleep(0.05)
    assert checker.calls == []
    assert store.max_offset("Pay", qid) == 1
    assert store.transactions.checks == 0
    producer.shutdown()


def test_put_back_copy_resolved_after_op_progress_moved(tx_store, clock):
    """As above, but a younger half in front of the copy stops the passes until the
    op naming the original has been consumed by the op progress."""
    store = tx_store
    checker = Checker()
    other_checker = Checker(ROLLBACK)
    producer = TransactionProducer(store, "tx_pg", check=checker)
    other = TransactionProducer(store, "tx_other", check=other_checker)

    def slow_execute(msg, arg):
        clock.now = T0 + 5_000
        other.send_in_transaction(Message("Pay", b"young"), lambda m, a: UNKNOW)
        assert check(store, T0 + TIMEOUT) == 0  # puts the slow half back, stops at young
        return COMMIT

    msg = Message("Pay", b"slow", properties={"CHECK_IMMUNITY_TIME_IN_SECONDS": "60"})
    result = producer.send_in_transaction(msg, slow_execute)
    wait_count(store, TRANS_OP_HALF_TOPIC, 0, 1)
    assert [m.body for m in halves(store)] == [b"slow", b"young", b"slow"]
    assert check(store, T0 + 7_000) == 0  # young still too young: op(0) consumed
    assert store.consumer_offsets.query(SYSTEM_GROUP, TRANS_OP_HALF_TOPIC, 0) == 1
    assert check(store, T0 + 20_000) == 1  # young checked; the copy is resolved
    other_checker.wait_calls(1)
    for now in (T0 + 61_000, T0 + 200_000):
        check(store, now)
    time.sleep(0.05)
    assert checker.calls == []
    assert store.max_offset("Pay", result.message_queue.queue_id) == 1
    other.shutdown()
    producer.shutdown()


def test_immunity_shorter_than_timeout_counts_as_timeout(tx_store, clock):
    store = tx_store
    checker = Checker(ROLLBACK)
    producer = TransactionProducer(store, "tx_pg", check=checker)
    msg = Message("Pay", b"x", properties={"CHECK_IMMUNITY_TIME_IN_SECONDS": "1"})
    producer.send_in_transaction(msg, lambda m, a: UNKNOW)
    assert check(store, T0 + 1_000) == 0
    assert check(store, T0 + TIMEOUT - 1) == 0
    time.sleep(0.02)
    assert checker.calls == []
    assert check(store, T0 + TIMEOUT) == 1
    checker.wait_calls(1)
    producer.shutdown()


@pytest.mark.parametrize("where", ["check thread", "check_now on this thread"])
def test_a_checker_that_closes_the_store(small_store, clock, where):
    """A checker run by a check pass calls store.close(). The close cannot run inside
    the pass (it stops the service running it, or waits for the check thread that
    waits for this pass), so it finishes on a helper thread once the pass is over,
    and leaves nothing running."""
    store = small_store(clock=clock, transaction_check_enable=True,
                        transaction_check_interval=50)
    store.create_topic("Pay", 2)
    producer = TransactionProducer(store, "tx_pg", check=lambda m: UNKNOW)
    producer.send_in_transaction(Message("Pay", b"x"), lambda m, a: UNKNOW)
    producer.shutdown()
    wait_count(store, TRANS_HALF_TOPIC, 0, 1)
    closed_inside = []

    def closing_checker(msg):
        store.close()
        closed_inside.append(store.closed)
        return UNKNOW

    store.transactions.register_checker("tx_pg", closing_checker, None)
    if where == "check thread":
        clock.now = T0 + TIMEOUT + 1  # due: the next background pass asks
        assert wait_until(lambda: closed_inside)
    else:
        check(store, T0 + TIMEOUT + 1)
    assert closed_inside == [True]  # new calls refused at once
    store.close()  # waits for the helper
    assert not os.path.exists(os.path.join(store.path, "abort"))
    assert wait_until(lambda: not {"mqstore-dispatch", "mqstore-tx-check", "mqstore-close"}
                      & {t.name for t in threading.enumerate()}, timeout=5)
