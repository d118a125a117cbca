"""Subscription expressions: tag expressions (``"*"``, ``"a || b"``) and RocketMQ's SQL92
property filters (``"a > 5 AND b = 'x'"``), parsed once at `subscribe`.

The SQL subset is RocketMQ's: comparisons ``= <> != > >= < <=`` on numbers and strings,
``AND OR NOT``, parentheses, ``IS [NOT] NULL``, ``[NOT] BETWEEN x AND y``,
``[NOT] IN ('a', 'b')``, ``[NOT] CONTAINS / STARTSWITH / ENDSWITH 'text'``, ``TRUE``,
``FALSE``. Identifiers name message properties (``TAGS`` is the tag). A property that
is absent makes its comparison false (SQL's unknown), so ``NOT (a > 5)`` does not
match a message without ``a``, as in RocketMQ.
"""

from __future__ import annotations

import re
from typing import Callable, List, Mapping, Optional, Tuple

from ..reader import TagFilter, parse_tags

_UNKNOWN = None  # SQL's third truth value

_TOKEN = re.compile(
    r"""\s*(?:
        (?P<number>-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)
      | (?P<string>'(?:[^']|'')*')
      | (?P<op><>|!=|>=|<=|=|>|<|\(|\)|,)
      | (?P<word>[A-Za-z_$][A-Za-z0-9_.$]*)
    )""",
    re.VERBOSE,
)
_KEYWORDS = {
    "AND", "OR", "NOT", "IS", "NULL", "BETWEEN", "IN", "TRUE", "FALSE",
    "CONTAINS", "STARTSWITH", "ENDSWITH",
}

Predicate = Callable[[Mapping[str, str]], Optional[bool]]


class MessageSelector:
    """A subscription expression: `by_tag("a || b")` or `by_sql("a > 5")`."""

    TAG = "TAG"
    SQL92 = "SQL92"

    def __init__(self, kind: str, expression: str) -> None:
        if kind not in (self.TAG, self.SQL92):
            raise ValueError(f"selector kind must be TAG or SQL92, got {kind!r}")
        if not isinstance(expression, str):
            raise TypeError(f"expression must be a str, got {type(expression).__name__}")
        self.kind = kind
        self.expression = expression
        self.tags: TagFilter = None
        self.predicate: Optional[Predicate] = None
        if kind == self.TAG:
            self.tags = parse_tags(expression)
        else:
            self.predicate = parse_sql(expression)

    @classmethod
    def by_tag(cls, expression: str = "*") -> MessageSelector:
        return cls(cls.TAG, expression)

    @classmethod
    def by_sql(cls, expression: str) -> MessageSelector:
        return cls(cls.SQL92, expression)

    @property
    def tag_expression(self) -> Optional[str]:
        """What the store's tag filter takes (None for SQL selectors)."""
        return self.expression if self.kind == self.TAG else None

    def matches(self, properties: Mapping[str, str]) -> bool:
        """Whether a message with these properties passes (tags are checked by the
        store already; this is the SQL part)."""
        return self.predicate is None or self.predicate(properties) is True

    def __eq__(self, other) -> bool:
        return (
            isinstance(other, MessageSelector)
            and (self.kind, self.expression) == (other.kind, other.expression)
        )

    def __hash__(self) -> int:
        return hash((self.kind, self.expression))

    def __repr__(self) -> str:
        factory = "by_tag" if self.kind == self.TAG else "by_sql"
        return f"MessageSelector.{factory}({self.expression!r})"


# ----------------------------------------------------------------------------- SQL92


def _tokenize(text: str) -> List[Tuple[str, object, int]]:
    tokens = []
    position = 0
    end = len(text.rstrip())
    while position < end:
        match = _TOKEN.match(text, position)
        if match is None or match.end() == position:
            where = position + (len(text[position:]) - len(text[position:].lstrip()))
            raise ValueError(f"SQL filter: unexpected character at position {where}: {text!r}")
        start = match.start(match.lastgroup)
        kind, value = match.lastgroup, match.group(match.lastgroup)
        if kind == "number":
            tokens.append(("value", float(value) if re.search(r"[.eE]", value) else int(value),
                           start))
        elif kind == "string":
            tokens.append(("value", value[1:-1].replace("''", "'"), start))
        elif kind == "word" and value.upper() in _KEYWORDS:
            word = value.upper()
            if word in ("TRUE", "FALSE"):
                tokens.append(("value", word == "TRUE", start))
            else:
                tokens.append(("kw", word, start))
        elif kind == "word":
            tokens.append(("ident", value, start))
        else:
            tokens.append(("op", value, start))
        position = match.end()
    tokens.append(("end", None, len(text)))
    return tokens


def parse_sql(text: str) -> Predicate:
    """Compile a SQL92 filter into a predicate over message properties. Raises
    ValueError naming the position of the first error."""
    if not isinstance(text, str):
        raise TypeError(f"SQL filter must be a str, got {type(text).__name__}")
    if not text.strip():
        raise ValueError("SQL filter is empty")
    parser = _Parser(text, _tokenize(text))
    predicate = parser.parse_or()
    parser.expect_end()
    return predicate


def _number(value):
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return value
    try:
        return float(value) if re.search(r"[.eE]", value) else int(value)
    except (TypeError, ValueError):
        return None


def _compare(op: str, left, right) -> Optional[bool]:
    if left is None or right is None:
        return _UNKNOWN
    if isinstance(right, bool) or isinstance(left, bool):
        if op not in ("=", "<>", "!="):
            return _UNKNOWN
        left_bool = left if isinstance(left, bool) else str(left).lower() == "true"
        right_bool = right if isinstance(right, bool) else str(right).lower() == "true"
        return (left_bool == right_bool) == (op == "=")
    if isinstance(right, (int, float)) or isinstance(left, (int, float)):
        left, right = _number(left), _number(right)
        if left is None or right is None:
            return _UNKNOWN
    elif op not in ("=", "<>", "!="):
        return _UNKNOWN  # RocketMQ compares strings for equality only
    if op == "=":
        return left == right
    if op in ("<>", "!="):
        return left != right
    if op == ">":
        return left > right
    if op == ">=":
        return left >= right
    if op == "<":
        return left < right
    return left <= right


def _and(a: Optional[bool], b: Optional[bool]) -> Optional[bool]:
    if a is False or b is False:
        return False
    if a is None or b is None:
        return _UNKNOWN
    return True


def _or(a: Optional[bool], b: Optional[bool]) -> Optional[bool]:
    if a is True or b is True:
        return True
    if a is None or b is None:
        return _UNKNOWN
    return False


def _not(a: Optional[bool]) -> Optional[bool]:
    return None if a is None else not a


class _Parser:
    def __init__(self, text: str, tokens) -> None:
        self.text = text
        self.tokens = tokens
        self.i = 0

    def peek(self):
        return self.tokens[self.i]

    def take(self):
        token = self.tokens[self.i]
        self.i += 1
        return token

    def error(self, what: str, token=None):
        token = token or self.peek()
        found = "end of input" if token[0] == "end" else repr(self.text[token[2]:].split()[0])
        return ValueError(
            f"SQL filter: {what} at position {token[2]} (found {found}): {self.text!r}"
        )

    def is_kw(self, word: str) -> bool:
        kind, value, _ = self.peek()
        return kind == "kw" and value == word

    def expect_kw(self, word: str) -> None:
        if not self.is_kw(word):
            raise self.error(f"expected {word}")
        self.take()

    def expect_op(self, op: str) -> None:
        kind, value, _ = self.peek()
        if kind != "op" or value != op:
            raise self.error(f"expected {op!r}")
        self.take()

    def expect_end(self) -> None:
        if self.peek()[0] != "end":
            raise self.error("unexpected text")

    def parse_or(self) -> Predicate:
        left = self.parse_and()
        while self.is_kw("OR"):
            self.take()
            right = self.parse_and()
            left = (lambda a, b: lambda p: _or(a(p), b(p)))(left, right)
        return left

    def parse_and(self) -> Predicate:
        left = self.parse_not()
        while self.is_kw("AND"):
            self.take()
            right = self.parse_not()
            left = (lambda a, b: lambda p: _and(a(p), b(p)))(left, right)
        return left

    def parse_not(self) -> Predicate:
        if self.is_kw("NOT"):
            self.take()
            inner = self.parse_not()
            return lambda p: _not(inner(p))
        return self.parse_primary()

    def parse_primary(self) -> Predicate:
        kind, value, _ = self.peek()
        if kind == "op" and value == "(":
            self.take()
            inner = self.parse_or()
            self.expect_op(")")
            return inner
        if kind == "value" and isinstance(value, bool):
            self.take()
            return lambda p, v=value: v
        if kind != "ident":
            raise self.error("expected a property name, TRUE, FALSE or '('")
        self.take()
        name = value
        return self.parse_condition(name)

    def literal(self):
        kind, value, _ = self.peek()
        if kind != "value":
            raise self.error("expected a number or a 'string'")
        self.take()
        return value

    def parse_condition(self, name: str) -> Predicate:
        kind, value, _ = self.peek()
        if kind == "op" and value in ("=", "<>", "!=", ">", ">=", "<", "<="):
            self.take()
            literal = self.literal()
            return lambda p, op=value: _compare(op, p.get(name), literal)
        negate = False
        if self.is_kw("IS"):
            self.take()
            if self.is_kw("NOT"):
                self.take()
                negate = True
            self.expect_kw("NULL")
            return lambda p: (name in p) if negate else (name not in p)
        if self.is_kw("NOT"):
            self.take()
            negate = True
        if self.is_kw("BETWEEN"):
            self.take()
            low = self.literal()
            self.expect_kw("AND")
            high = self.literal()

            def between(p):
                result = _and(_compare(">=", p.get(name), low), _compare("<=", p.get(name), high))
                return _not(result) if negate else result

            return between
        if self.is_kw("IN"):
            self.take()
            self.expect_op("(")
            values = [self.literal()]
            while self.peek()[0] == "op" and self.peek()[1] == ",":
                self.take()
                values.append(self.literal())
            self.expect_op(")")
            choices = frozenset(str(v) for v in values)

            def member(p):
                present = p.get(name)
                if present is None:
                    return _UNKNOWN
                return (present in choices) != negate

            return member
        for word, test in (
            ("CONTAINS", str.__contains__),
            ("STARTSWITH", str.startswith),
            ("ENDSWITH", str.endswith),
        ):
            if self.is_kw(word):
                self.take()
                text = self.literal()
                if not isinstance(text, str):
                    raise self.error(f"{word} takes a 'string'")

                def match(p, test=test, text=text):
                    present = p.get(name)
                    if present is None:
                        return _UNKNOWN
                    return test(present, text) != negate

                return match
        raise self.error(f"expected a comparison after {name!r}")
