"""Subscription filters: tag expressions and SQL92 selectors, parsing errors with
positions, and a Hypothesis comparison against a plain Python evaluation."""

from __future__ import annotations

import re
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mqstore import Message
from mqstore.client import (
    CONSUME_SUCCESS,
    ConsumeFromWhere,
    MessageSelector,
    Producer,
    PullConsumer,
    PushConsumer,
)
from mqstore.client.filter import parse_sql


def sql(expression, **props):
    return MessageSelector.by_sql(expression).matches({k: str(v) for k, v in props.items()})


def test_sql_comparisons_and_and():
    assert sql("a > 5 AND b = 'x'", a=6, b="x")
    assert not sql("a > 5 AND b = 'x'", a=5, b="x")
    assert not sql("a > 5 AND b = 'x'", a=6, b="y")
    assert sql("a >= 5", a=5) and sql("a <= 5", a=5) and not sql("a < 5", a=5)
    assert sql("a <> 3", a=4) and sql("a != 3", a=4) and not sql("a <> 3", a=3)
    assert sql("a = 1.5", a="1.5") and sql("a > -2", a=-1)


def test_sql_between_in_null_not():
    assert sql("a BETWEEN 1 AND 3", a=1) and sql("a BETWEEN 1 AND 3", a=3)
    assert not sql("a BETWEEN 1 AND 3", a=4)
    assert sql("a NOT BETWEEN 1 AND 3", a=4) and not sql("a NOT BETWEEN 1 AND 3", a=2)
    assert sql("b IN ('x', 'y')", b="y") and not sql("b IN ('x', 'y')", b="z")
    assert sql("b NOT IN ('x', 'y')", b="z") and not sql("b NOT IN ('x')", b="x")
    assert sql("c IS NULL", a=1) and not sql("c IS NULL", c=1)
    assert sql("c IS NOT NULL", c=1) and not sql("c IS NOT NULL", a=1)
    assert sql("NOT a = 1", a=2) and not sql("NOT a = 1", a=1)
    assert sql("b = 'it''s'", b="it's")


def test_sql_precedence():
    # AND binds tighter than OR; NOT tighter than AND.
    assert sql("a = 1 OR a = 2 AND b = 'x'", a=1, b="y")
    assert not sql("(a = 1 OR a = 2) AND b = 'x'", a=1, b="y")
    assert not sql("NOT a = 1 AND b = 'x'", a=1, b="x")
    assert sql("NOT (a = 1 AND b = 'x')", a=1, b="y")


def test_sql_absent_property_never_matches():
    for expression in ("a > 5", "NOT (a > 5)", "a BETWEEN 1 AND 9", "a NOT BETWEEN 1 AND 9",
                       "a IN ('1')", "a NOT IN ('1')", "a = 'x'", "a <> 'x'"):
        assert not sql(expression, b=1), expression
    assert sql("a > 5 OR b = 1", b=1)  # unknown OR true is true


def test_sql_non_numeric_value_is_no_match():
    assert not sql("a > 5", a="abc") and not sql("NOT (a > 5)", a="abc")


def _position(exc_info) -> int:
    match = re.search(r"position (\d+)", str(exc_info.value))
    assert match, str(exc_info.value)
    return int(match.group(1))


@pytest.mark.parametrize(
    "expression, position",
    [
        ("a > ", 4),             # missing literal at the end
        ("a > 5 AND", 9),
        ("a > 5 b = 1", 6),      # junk after a complete expression
        ("a >> 5", 3),
        ("(a > 5", 6),           # unclosed parenthesis
        ("a # 5", 2),            # bad character
        ("a IN (1, )", 9),
        ("a BETWEEN 1 5", 12),
        ("a IS 5", 5),
        ("a > 'x", 4),           # unterminated string
        ("AND a > 1", 0),
    ],
)
def test_malformed_sql_names_position(expression, position):
    with pytest.raises(ValueError) as exc_info:
        MessageSelector.by_sql(expression)
    assert _position(exc_info) == position


@pytest.mark.parametrize("expression, position", [("a || || b", 4), ("|| a", 0), ("a ||", 4)])
def test_malformed_tags_name_position(expression, position):
    with pytest.raises(ValueError) as exc_info:
        MessageSelector.by_tag(expression)
    assert _position(exc_info) == position


def test_subscribe_rejects_malformed_expressions(small_store):
    store = small_store()
    consumer = PullConsumer(store, "g_bad")
    with pytest.raises(ValueError, match="position 6"):
        consumer.subscribe("T", MessageSelector.by_sql("a > 5 b"))
    with pytest.raises(ValueError, match="position 4"):
        consumer.subscribe("T", "a ||")
    assert consumer.subscriptions == {}
    with pytest.raises(TypeError):
        consumer.subscribe("T", 42)
    consumer.shutdown()


def test_tag_and_sql_filtering_end_to_end(small_store):
    store = small_store()
    producer = Producer(store, "pg")
    for i in range(12):
        tag = ("a", "b", "c")[i % 3]
        producer.send(Message("F", b"%d" % i, tags=tag, properties={"n": str(i)}))
    tagged = PullConsumer(store, "g_tags", consume_from_where=ConsumeFromWhere.FIRST_OFFSET)
    tagged.subscribe("F", "a || c")
    by_sql = PullConsumer(store, "g_sql", consume_from_where=ConsumeFromWhere.FIRST_OFFSET)
    by_sql.subscribe("F", MessageSelector.by_sql("n BETWEEN 3 AND 8 AND TAGS <> 'b'"))
    tags_got, sql_got = [], []
    for consumer, sink in ((tagged, tags_got), (by_sql, sql_got)):
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            batch = consumer.poll(0.05)
            sink.extend(int(m.body) for m in batch)
            if not batch and all(v == 0 for v in consumer.lag().values()):
                break
        consumer.shutdown()
    assert sorted(tags_got) == [i for i in range(12) if i % 3 != 1]
    assert sorted(sql_got) == [i for i in range(3, 9) if i % 3 != 1]


def test_push_consumer_sql_filter(small_store):
    store = small_store()
    producer = Producer(store, "pg")
    got = []
    consumer = PushConsumer(store, "g_push_sql", consume_from_where=ConsumeFromWhere.FIRST_OFFSET)
    consumer.subscribe("F", MessageSelector.by_sql("color IN ('red') AND size > 2"))
    consumer.register(lambda msgs, ctx: got.extend(int(m.body) for m in msgs) or CONSUME_SUCCESS)
    consumer.start()
    expected = set()
    for i in range(20):
        props = {"size": str(i % 5)}
        if i % 2:
            props["color"] = "red"
        producer.send(Message("F", b"%d" % i, properties=props))
        if i % 2 and i % 5 > 2:
            expected.add(i)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and set(got) != expected:
        time.sleep(0.02)
    time.sleep(0.1)
    consumer.shutdown()
    assert sorted(got) == sorted(expected)


# --------------------------------------------------------------- Hypothesis vs Python

NAMES = ("a", "b", "c")


def _atoms():
    comparisons = st.tuples(
        st.just("cmp"), st.sampled_from(NAMES),
        st.sampled_from(["=", "<>", ">", ">=", "<", "<="]), st.integers(-3, 3),
    )
    between = st.tuples(st.just("between"), st.sampled_from(NAMES), st.booleans(),
                        st.integers(-3, 3), st.integers(-3, 3))
    isnull = st.tuples(st.just("null"), st.sampled_from(NAMES), st.booleans())
    inlist = st.tuples(st.just("in"), st.sampled_from(NAMES), st.booleans(),
                       st.lists(st.integers(-3, 3), min_size=1, max_size=3))
    return st.one_of(comparisons, between, isnull, inlist)


expressions = st.recursive(
    _atoms(),
    lambda inner: st.one_of(
        st.tuples(st.just("not"), inner),
        st.tuples(st.sampled_from(["and", "or"]), inner, inner),
    ),
    max_leaves=6,
)


def render(e) -> str:
    kind = e[0]
    if kind == "cmp":
        return f"{e[1]} {e[2]} {e[3]}"
    if kind == "between":
        return f"{e[1]} {'NOT ' if e[2] else ''}BETWEEN {e[3]} AND {e[4]}"
    if kind == "null":
        return f"{e[1]} IS {'NOT ' if e[2] else ''}NULL"
    if kind == "in":
        return f"{e[1]} {'NOT ' if e[2] else ''}IN ({', '.join(repr(str(v)) for v in e[3])})"
    if kind == "not":
        return f"NOT ({render(e[1])})"
    return f"({render(e[1])}) {kind.upper()} ({render(e[2])})"


def evaluate(e, props):
    """Three-valued (True/False/None) evaluation in plain Python."""
    kind = e[0]
    if kind in ("cmp", "between", "in"):
        raw = props.get(e[1])
        if raw is None:
            return None
        try:
            value = int(raw)
        except ValueError:
            value = None
    if kind == "cmp":
        if value is None:
            return None
        return {"=": value == e[3], "<>": value != e[3], ">": value > e[3],
                ">=": value >= e[3], "<": value < e[3], "<=": value <= e[3]}[e[2]]
    if kind == "between":
        if value is None:
            return None
        inside = e[3] <= value <= e[4]
        return not inside if e[2] else inside
    if kind == "in":
        inside = raw in {str(v) for v in e[3]}
        return not inside if e[2] else inside
    if kind == "null":
        absent = e[1] not in props
        return not absent if e[2] else absent
    if kind == "not":
        inner = evaluate(e[1], props)
        return None if inner is None else not inner
    left, right = evaluate(e[1], props), evaluate(e[2], props)
    if kind == "and":
        if left is False or right is False:
            return False
        return None if left is None or right is None else True
    if left is True or right is True:
        return True
    return None if left is None or right is None else False


properties = st.dictionaries(
    st.sampled_from(NAMES),
    st.one_of(st.integers(-4, 4).map(str), st.sampled_from(["x", "", "1.5x"])),
)


@settings(max_examples=400, deadline=None)
@given(expressions, properties)
def test_sql_matches_python_evaluation(expression, props):
    text = render(expression)
    predicate = parse_sql(text)
    assert predicate(props) == evaluate(expression, props), text
    assert MessageSelector.by_sql(text).matches(props) == (evaluate(expression, props) is True)
