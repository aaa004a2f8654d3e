"""The segment DSL: ``parse`` text into a canonical AST and ``format`` an AST as text.

A hand-written recursive-descent parser over ``lexer.tokenize`` (grammar in
docs/segment-language.md), so every error can say where it is and what was expected.
``parse`` only ever raises ``DslSyntaxError``; ``format(ast)`` validates first and
prints the minimal canonical text, so ``parse(format(ast)) == validate(ast)``.

Two small supersets of the documented grammar, both needed to print every valid AST or
to read natural text: event tail clauses (count, sum, period, then) may come in any
order, once each; ``from 2 days to 12 hours ago`` allows a unit on the older bound (the
AST allows ``{"ago": ["2d", "12h"]}``). ``sum(f) > x`` / ``< x`` are rejected: sum
bounds are inclusive and numbers may be fractional, so there is no exact spelling.
"""

from __future__ import annotations

import difflib
from typing import Any

from segd.errors import DslSyntaxError, InvalidQuery
from segd.segments.ast import (
    AGGREGATE_OPS,
    AGGREGATES,
    ATTR_OPS,
    FILTER_OPS,
    RFM_ENTERED,
    RFM_FIELDS,
    RFM_OPS,
    duration_hours,
    measure,
    parse_instant,
    validate,
)
from segd.segments.lexer import DATE, EOF, NAME, NUMBER, OP, PUNCT, STRING, Lexer, Token
from segd.segments.limits import (
    MAX_CONDITIONS,
    MAX_DEPTH,
    Budget,
    check_text_length,
    too_deep,
    too_many_conditions,
)
from segd.segments.printer import OP_SPELLING, format_ast

__all__ = ["parse", "format"]
_UNITS = {"d": "d", "day": "d", "days": "d", "h": "h", "hour": "h", "hours": "h"}
# Words offered as "did you mean" where a comparison or an event clause may start.
_COMPARE_WORDS = (
    "between", "in", "not", "is", "prefix", "contains", "contains_any", "contains_all",
)  # fmt: skip
_PERIOD_WORDS = ("in", "between", "from", "before")
_TAIL_WORDS = ("count", "sum") + _PERIOD_WORDS + ("then",)


def parse(text: str, budget: Budget | None = None) -> dict:
    """Parse DSL ``text`` into a validated canonical AST.

    Each condition is validated as it is read (so errors point at it); the boolean
    structure the parser builds is canonical by construction, so the whole tree is not
    validated a second time. Raises ``DslSyntaxError`` (1-based ``line``/``column``) for
    any text that is not a valid segment, including ASTs that ``validate`` would reject,
    and ``TooComplex`` over a limit of ``segd.segments.limits`` (the text's length is
    checked before anything else). ``budget`` stops the parse at the caller's deadline.
    """
    if not isinstance(text, str):
        raise DslSyntaxError(
            f"expected DSL text (str), got {type(text).__name__}", 1, 1
        )
    check_text_length(text)
    parser = _Parser(text, budget)
    node = parser.expr()
    parser.expect_end()
    depth, _ = measure(node)
    if depth > MAX_DEPTH:
        raise too_deep("dsl", depth)
    return node


class _Parser:
    """One parse: a token list, a cursor, the nesting depth (to refuse deep input before
    recursing into it) and the number of conditions read."""

    def __init__(self, text: str, budget: Budget | None = None) -> None:
        self.text = text
        # Tokens are read as the parser needs them, so that text refused early (too
        # deep at character 33) is not tokenized to its end first.
        self.lexer = Lexer(text)
        self.tokens: list[Token] = []
        self.pos = 0
        self.nesting = 0
        self.conditions = 0
        self.budget = budget

    # -- token plumbing --------------------------------------------------------------

    def peek(self, ahead: int = 0) -> Token:
        want = self.pos + ahead
        tokens = self.tokens
        while len(tokens) <= want and (not tokens or tokens[-1].kind != EOF):
            if self.budget is not None:
                self.budget.tick()
            tokens.append(self.lexer.next())
        return tokens[min(want, len(tokens) - 1)]

    def advance(self) -> Token:
        token = self.peek()
        if token.kind != EOF:
            self.pos += 1
        return token

    def at_word(self, *words: str, ahead: int = 0) -> bool:
        token = self.peek(ahead)
        return token.kind == NAME and token.text.lower() in words

    def at_punct(self, punct: str) -> bool:
        token = self.peek()
        return token.kind == PUNCT and token.text == punct

    def error(
        self, token: Token, expected: str, suggest: tuple[str, ...] = ()
    ) -> DslSyntaxError:
        """``expected X, got Y``; for a NAME, suggest the closest of ``suggest``."""
        message = f"expected {expected}, got {_describe(token)}"
        if token.kind == NAME and suggest:
            close = difflib.get_close_matches(token.text.lower(), suggest, n=1)
            if close and close[0] != token.text.lower():
                message += f" (did you mean '{close[0]}'?)"
        return self.fail(token, message)

    def fail(self, token: Token, message: str) -> DslSyntaxError:
        return DslSyntaxError(message, token.line, token.column, self.text)

    def word(self, word: str, context: str) -> Token:
        if not self.at_word(word):
            raise self.error(self.peek(), f"'{word}' {context}", (word,))
        return self.advance()

    def punct(self, punct: str, context: str) -> Token:
        if not self.at_punct(punct):
            raise self.error(self.peek(), f"'{punct}' {context}")
        return self.advance()

    def checked(self, node: dict, start: Token) -> dict:
        """``validate(node)``, with a rejection reported at ``start``."""
        try:
            return validate(node)
        except InvalidQuery as exc:
            raise self.fail(start, str(exc)) from None

    def expect_end(self) -> None:
        token = self.peek()
        if token.kind == PUNCT and token.text == ")":
            raise self.fail(token, "unexpected ')' (no matching '(')")
        if token.kind != EOF:
            raise self.error(token, "'and', 'or' or end of input", ("and", "or"))

    # -- boolean structure -----------------------------------------------------------

    def expr(self) -> dict:
        items = [self.and_expr()]
        while self.at_word("or"):
            self.advance()
            items.append(self.and_expr())
        return items[0] if len(items) == 1 else {"or": items}

    def and_expr(self) -> dict:
        items = [self.unary()]
        while self.at_word("and"):
            self.advance()
            items.append(self.unary())
        return items[0] if len(items) == 1 else {"and": items}

    def unary(self) -> dict:
        token = self.peek()
        self.nesting += 1
        if self.nesting > MAX_DEPTH:
            raise too_deep(f"dsl line {token.line}:{token.column}")
        if self.at_word("not"):
            self.advance()
            node: dict = {"not": self.unary()}
        elif self.at_punct("("):
            self.advance()
            node = self.expr()
            if not self.at_punct(")"):
                raise self.error(self.peek(), "'and', 'or' or ')'", ("and", "or"))
            self.advance()
        else:
            node = self.condition()
        self.nesting -= 1
        return node

    def follow(self, words: tuple[str, ...]) -> None:
        """After a condition, raise unless and/or/')'/end (or a ``words``) is next."""
        token = self.peek()
        if token.kind == EOF or (token.kind == PUNCT and token.text == ")"):
            return
        if self.at_word("and", "or"):
            return
        expected = ", ".join(f"'{w}'" for w in words + ("and", "or"))
        expected += ", ')' or end of input"
        raise self.error(token, expected, words + ("and", "or"))

    # -- conditions ------------------------------------------------------------------

    def condition(self) -> dict:
        token = self.peek()
        self.conditions += 1
        if self.conditions > MAX_CONDITIONS:
            raise too_many_conditions(f"dsl line {token.line}:{token.column}")
        if self.budget is not None:
            self.budget.tick()
        if self.at_word("in"):
            return self.segment()
        if (
            self.at_word("entered", "exited")
            and self.peek(1).kind == NAME
            and self.peek(1).text.lower() == "segment"
            and self.peek(2).kind == STRING
        ):
            return self.segment_event()
        if token.kind != NAME or self.at_word("and", "or"):
            raise self.error(token, "a condition")
        if (
            self.at_word("rfm")
            and self.peek(1).kind == PUNCT
            and self.peek(1).text == "."
        ):
            return self.rfm()
        if self.peek(1).kind == PUNCT and self.peek(1).text == "(":
            return self.event()
        if token.text.lower() in AGGREGATES:
            return self.aggregate()
        self.advance()
        node = {
            "attr": token.text,
            **self.compare(token.text, ATTR_OPS, "an attribute"),
        }
        self.follow(())
        return self.checked(node, token)

    def segment(self) -> dict:
        start = self.advance()
        self.word("segment", "after 'in' (a segment reference is: in segment \"name\")")
        token = self.advance()
        if token.kind != STRING:
            raise self.error(token, "a quoted segment name after 'in segment'")
        self.follow(())
        return self.checked({"segment": token.value}, start)

    def rfm(self) -> dict:
        start = self.advance()
        self.advance()  # the '.'
        token = self.advance()
        field = token.text.lower() if token.kind == NAME else None
        if field == RFM_ENTERED:
            return self.rfm_entered(start)
        if field not in RFM_FIELDS:
            raise self.error(
                token,
                f"an RFM field ({', '.join(RFM_FIELDS)}) after 'rfm.'",
                RFM_FIELDS,
            )
        node = {"rfm": field, **self.compare(f"rfm.{field}", RFM_OPS, "an RFM field")}
        self.follow(())
        return self.checked(node, start)

    def rfm_entered(self, start: Token) -> dict:
        """``rfm.entered "X" [from "Y"] [first time | again] [period]``."""
        node: dict = {"rfm": RFM_ENTERED, "value": self.string("'rfm.entered'")}
        if self.at_word("from") and self.peek(1).kind == STRING:
            self.advance()
            node["from"] = self.string("'from'")
        if self.at_word("first"):
            self.advance()
            self.word("time", "after 'first' (rfm.entered \"X\" first time)")
            node["entry"] = "first"
        elif self.at_word("again"):
            self.advance()
            node["entry"] = "again"
        if self.at_period():
            node["period"] = self.period()
        self.follow(() if "period" in node else _PERIOD_WORDS)
        return self.checked(node, start)

    def aggregate(self) -> dict:
        start = self.advance()
        name = start.text.lower()
        node: dict = {"aggregate": name, **self.compare(name, AGGREGATE_OPS, name)}
        if self.at_period():
            node["period"] = self.period()
        self.follow(() if "period" in node else _PERIOD_WORDS)
        return self.checked(node, start)

    # -- comparisons and values ------------------------------------------------------

    def compare(self, subject: str, ops: tuple[str, ...], kind: str) -> dict:
        """``op`` and ``value`` keys for the comparison after ``subject``."""
        token = self.peek()
        op, value = self.compare_parts(subject)
        if op not in ops:
            allowed = ", ".join(OP_SPELLING.get(o, o) for o in ops)
            raise self.fail(
                token,
                f"operator '{OP_SPELLING.get(op, op)}' is not allowed for {kind} "
                f"(expected one of {allowed})",
            )
        return {"op": op} if value is _NO_VALUE else {"op": op, "value": value}

    def compare_parts(self, subject: str) -> tuple[str, Any]:
        token = self.peek()
        if token.kind == OP:
            self.advance()
            return token.text, self.value(f"'{token.text}'")
        word = token.text.lower() if token.kind == NAME else ""
        if word == "between":
            self.advance()
            low = self.value("'between'")
            self.word("and", "between the bounds of 'between'")
            return "between", [low, self.value("'and'")]
        if word == "not" and self.at_word("in", ahead=1):
            self.advance()
            self.advance()
            return "not_in", self.value_list(self.value, "'not in'")
        if word == "in":
            self.advance()
            return "in", self.value_list(self.value, "'in'")
        if word == "is":
            self.advance()
            negated = self.at_word("not")
            if negated:
                self.advance()
            self.word("null", "after 'is'" if not negated else "after 'is not'")
            return ("is_not_null" if negated else "is_null"), _NO_VALUE
        if word in ("prefix", "contains"):
            self.advance()
            return word, self.string(f"'{word}'")
        if word in ("contains_any", "contains_all"):
            self.advance()
            return word, self.value_list(self.string, f"'{word}'")
        raise self.error(
            token, f"a comparison operator after '{subject}'", _COMPARE_WORDS
        )

    def value(self, after: str) -> Any:
        token = self.peek()
        if token.kind in (STRING, NUMBER, DATE):
            self.advance()
            return token.value
        if self.at_word("true", "false"):
            self.advance()
            return token.text.lower() == "true"
        hint = " (strings are double-quoted)" if token.kind == NAME else ""
        raise self.fail(
            token,
            f"expected a value (string, number, true, false or date) after {after}, "
            f"got {_describe(token)}{hint}",
        )

    def string(self, after: str) -> str:
        token = self.advance()
        if token.kind != STRING:
            raise self.error(token, f"a quoted string after {after}")
        return token.value

    def value_list(self, item: Any, after: str) -> list:
        self.punct("(", f"after {after}")
        values = [item(f"'(' after {after}")]
        while self.at_punct(","):
            self.advance()
            values.append(item("','"))
        if not self.at_punct(")"):
            raise self.error(self.peek(), "')' or ',' after value")
        self.advance()
        return values

    # -- events ----------------------------------------------------------------------

    def segment_event(self) -> dict:
        """``entered segment "x" [count ...] [period]`` (``exited`` alike): the event
        condition ``segment_entered(segment = "x") ...`` on the live segments' events."""
        start = self.advance()
        self.advance()  # 'segment'
        name = self.advance().value
        node: dict = {
            "event": f"segment_{start.text.lower()}",
            "where": [{"field": "segment", "op": "=", "value": name}],
        }
        return self.event_tail(node, start)

    def event(self) -> dict:
        start = self.advance()
        node: dict = {"event": start.text}
        where = self.filters()
        if where:
            node["where"] = where
        return self.event_tail(node, start)

    def event_tail(self, node: dict, start: Token) -> dict:
        clauses = {"count": self.count, "sum": self.sum, "then": self.then_no}
        while True:
            token = self.peek()
            key = token.text.lower() if token.kind == NAME else ""
            if self.at_period():
                key, parse_clause = "period", self.period
            elif key in clauses:
                parse_clause = clauses[key]
            else:
                break
            key = "then_no" if key == "then" else key
            if key in node:
                raise self.fail(token, f"duplicate '{token.text}' clause in event")
            node[key] = parse_clause()
        unused = tuple(w for w in _TAIL_WORDS if _clause_key(w) not in node)
        self.follow(unused)
        return self.checked(node, start)

    def filters(self) -> list[dict]:
        self.punct("(", "after the event type")
        where: list[dict] = []
        if self.at_punct(")"):
            self.advance()
            return where
        while True:
            where.append(self.filter())
            if self.at_punct(","):
                self.advance()
                continue
            if not self.at_punct(")"):
                raise self.error(self.peek(), "')' or ',' after filter", ("and",))
            self.advance()
            return where

    def filter(self) -> dict:
        token = self.advance()
        if token.kind != NAME:
            raise self.error(token, "a field name in an event filter")
        node = {"field": token.text}
        node.update(self.compare(token.text, FILTER_OPS, "an event filter"))
        return node

    def integer(self, what: str) -> int:
        token = self.advance()
        if token.kind != NUMBER or not isinstance(token.value, int) or token.value < 0:
            raise self.error(token, f"{what} (an integer >= 0)")
        return token.value

    def count(self) -> dict:
        self.advance()
        token = self.peek()
        if token.kind == NUMBER:
            low = self.integer("a count")
            self.punct("..", "in a count range such as 2..5")
            high = self.integer("the upper bound of the count range")
            if low > high:
                raise self.fail(token, f"empty count range {low}..{high} (min > max)")
            return {"min": low, "max": high}
        if token.kind != OP:
            raise self.error(token, "a count such as 2..5, >= 3, > 2, = 0 or < 1")
        self.advance()
        number = self.integer(f"a count after '{token.text}'")
        if token.text == "!=":
            raise self.fail(token, "'count !=' is not supported (use '..', >=, <=)")
        if token.text == "<" and number == 0:
            raise self.fail(token, "'count < 0' never matches (use 'count = 0')")
        bounds = {
            "=": {"min": number, "max": number},
            ">=": {"min": number},
            ">": {"min": number + 1},
            "<=": {"max": number},
            "<": {"max": number - 1},
        }
        return bounds[token.text]

    def number(self, after: str) -> int | float:
        token = self.advance()
        if token.kind != NUMBER:
            raise self.error(token, f"a number after {after}")
        return token.value

    def sum(self) -> dict:
        self.advance()
        self.punct("(", "after 'sum'")
        token = self.advance()
        if token.kind != NAME:
            raise self.error(token, "a numeric field name in sum(...)")
        self.punct(")", "after the sum field")
        node: dict = {"field": token.text}
        op = self.peek()
        if self.at_word("between"):
            self.advance()
            node["min"] = self.number("'between'")
            self.word("and", "between the bounds of 'between'")
            node["max"] = self.number("'and'")
        elif op.kind == OP and op.text in ("=", ">=", "<="):
            self.advance()
            value = self.number(f"'{op.text}'")
            if op.text in ("=", ">="):
                node["min"] = value
            if op.text in ("=", "<="):
                node["max"] = value
        elif op.kind == OP and op.text in (">", "<"):
            raise self.fail(op, f"sum bounds are inclusive: use '{op.text}=' instead")
        else:
            raise self.error(op, "'>=', '<=', '=' or 'between' after sum(...)")
        if "min" in node and "max" in node and node["min"] > node["max"]:
            raise self.fail(op, f"empty sum range {node['min']}..{node['max']}")
        return node

    def then_no(self) -> dict:
        self.advance()
        self.word("no", "after 'then' (then no EVENT within DURATION)")
        token = self.advance()
        if token.kind != NAME:
            raise self.error(token, "an event type after 'then no'")
        node: dict = {"event": token.text}
        if self.at_punct("("):
            where = self.filters()
            if where:
                node["where"] = where
        self.word("within", "after the event of 'then no'")
        node["within"] = self.duration("'within'")
        return node

    # -- periods ---------------------------------------------------------------------

    def at_period(self) -> bool:
        if self.at_word("in"):
            return self.at_word("last", ahead=1)
        return self.at_word("between", "from", "before")

    def unit(self, after: str) -> str:
        token = self.advance()
        unit = _UNITS.get(token.text.lower()) if token.kind == NAME else None
        if unit is None:
            raise self.error(
                token, f"a unit (days or hours) after {after}", tuple(_UNITS)
            )
        return unit

    def duration(self, after: str) -> str:
        amount = self.integer(f"a duration after {after}")
        return f"{amount}{self.unit(repr(str(amount)))}"

    def date(self, after: str) -> tuple[str, Token]:
        token = self.advance()
        if token.kind != DATE:
            raise self.error(token, f"a date like 2025-01-01 after {after}")
        return token.value, token

    def period(self) -> dict:
        word = self.advance().text.lower()
        if word == "in":
            self.advance()  # 'last'
            return {"last": self.duration("'in last'")}
        if word == "before":
            return {"to": self.date("'before'")[0]}
        if word == "between":
            low, token = self.date("'between'")
            self.word("and", "between the dates of 'between'")
            high = self.date("'and'")[0]
            if not parse_instant(low) < parse_instant(high):  # type: ignore[operator]
                raise self.fail(token, f"empty period: {low} is not before {high}")
            return {"from": low, "to": high}
        if self.peek().kind != NUMBER:
            return {"from": self.date("'from'")[0]}
        return self.ago()

    def ago(self) -> dict:
        start = self.peek()
        older = self.integer("the older bound after 'from'")
        older_unit = None if self.at_word("to") else self.unit(repr(str(older)))
        self.word("to", "in 'from N to M days ago'")
        newer = self.duration("'to'")
        self.word("ago", "after 'from N to M <unit>'")
        older_duration = f"{older}{older_unit or newer[-1]}"
        if duration_hours(older_duration) <= duration_hours(newer):
            raise self.fail(
                start,
                f"empty period: 'from {older_duration} to {newer} ago' "
                "(the first bound is the older one and must be longer)",
            )
        return {"ago": [older_duration, newer]}


_NO_VALUE = object()


def _clause_key(word: str) -> str:
    return {"then": "then_no", "count": "count", "sum": "sum"}.get(word, "period")


def _describe(token: Token) -> str:
    if token.kind == EOF:
        return "end of input"
    text = token.text if len(token.text) <= 40 else token.text[:37] + "..."
    return f"'{text}'"


def format(ast: dict) -> str:  # noqa: A001 - the contract's name (engine.format)
    """Print ``ast`` as minimal canonical DSL text; ``parse(format(a)) == validate(a)``.

    Validates first (raising ``InvalidQuery``), so the text is that of the canonical
    form. Parentheses appear only where precedence (not > and > or) needs them.
    """
    return format_ast(validate(ast))
