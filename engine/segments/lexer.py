"""Tokenizer of the segment DSL: text -> tokens that remember their line and column.

Kept apart from the parser so each stays small; the parser never looks at characters.
Every problem raises ``DslSyntaxError`` with a 1-based line and column.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from segd.errors import DslSyntaxError
from segd.segments.ast import ISO_PATTERN, parse_instant
from segd.segments.limits import Budget

# Token kinds. Keywords are NAME tokens: the parser decides (case-insensitively) which
# words are keywords where, so a filter field may be called ``from`` or ``count``.
NAME = "name"
STRING = "string"
NUMBER = "number"
DATE = "date"
OP = "op"  # = != < <= > >=
PUNCT = "punct"  # ( ) , . ..
EOF = "eof"

_DATE_RE = re.compile(ISO_PATTERN)
_NUMBER_RE = re.compile(r"-?[0-9]+(\.[0-9]+)?([eE][+-]?[0-9]+)?")
_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_OPS = ("<=", ">=", "!=", "=", "<", ">")
_PUNCTS = ("..", "(", ")", ",", ".")
_ESCAPES = {'"': '"', "\\": "\\", "n": "\n", "t": "\t", "r": "\r"}
_HEX_LENGTHS = {"u": 4, "U": 8}
_SPECIAL_RE = re.compile(r'["\\\n]')


@dataclass(frozen=True, slots=True)
class Token:
    """One token; ``text`` is the source spelling, ``value`` the decoded value."""

    kind: str
    text: str
    value: Any
    line: int
    column: int


class Lexer:
    """Reads ``text`` one token at a time (``next``); the parser pulls tokens lazily."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0
        self.line = 1
        self.line_start = 0

    def error(self, message: str, pos: int) -> DslSyntaxError:
        column = pos - self.text.rfind("\n", 0, pos)  # 1-based; -1 when no newline
        line = self.text.count("\n", 0, pos) + 1
        return DslSyntaxError(message, line, column, self.text)

    def token(self, kind: str, start: int, end: int, value: Any) -> Token:
        column = start - self.line_start + 1
        return Token(kind, self.text[start:end], value, self.line, column)

    def skip_space(self) -> None:
        text = self.text
        while self.pos < len(text) and text[self.pos] in " \t\r\n":
            if text[self.pos] == "\n":
                self.line += 1
                self.line_start = self.pos + 1
            self.pos += 1

    def next(self) -> Token:
        self.skip_space()
        start, text = self.pos, self.text
        if start >= len(text):
            return self.token(EOF, start, start, None)
        char = text[start]
        if char == '"':
            return self.string()
        if char.isascii() and (char.isdigit() or char == "-"):
            return self.number_or_date()
        match = _NAME_RE.match(text, start)
        if match:
            self.pos = match.end()
            return self.token(NAME, start, self.pos, match.group())
        for kind, spellings in ((OP, _OPS), (PUNCT, _PUNCTS)):
            for spelling in spellings:
                if text.startswith(spelling, start):
                    self.pos = start + len(spelling)
                    return self.token(kind, start, self.pos, spelling)
        raise self.error(f"unexpected character {char!r}", start)

    def number_or_date(self) -> Token:
        start, text = self.pos, self.text
        match = _DATE_RE.match(text, start)
        if match:
            self.pos = match.end()
            if parse_instant(match.group()) is None:
                raise self.error(f"invalid date {match.group()!r}", start)
            return self.token(DATE, start, self.pos, match.group())
        match = _NUMBER_RE.match(text, start)
        if match is None:
            raise self.error("expected a digit after '-'", start)
        self.pos = match.end()
        spelling = match.group()
        if match.group(1) is None and match.group(2) is None:
            if len(spelling) > 1000:  # int() refuses very long digit strings anyway
                raise self.error("number has more than 1000 digits", start)
            return self.token(NUMBER, start, self.pos, int(spelling))
        value = float(spelling)
        if value in (float("inf"), float("-inf")):
            raise self.error(f"number {spelling} is out of range", start)
        return self.token(NUMBER, start, self.pos, value)

    def string(self) -> Token:
        start, text = self.pos, self.text
        pos, parts = start + 1, []
        while True:
            end = _next_special(text, pos)
            parts.append(text[pos:end])
            if end >= len(text) or text[end] == "\n":
                raise self.error("unterminated string (no closing '\"')", start)
            if text[end] == '"':
                self.pos = end + 1
                return self.token(STRING, start, self.pos, "".join(parts))
            char, pos = self.escape(end)
            parts.append(char)

    def escape(self, pos: int) -> tuple[str, int]:
        """Decode the escape at ``pos`` (a backslash): (character, next position)."""
        code = self.text[pos + 1 : pos + 2]
        if code in _ESCAPES:
            return _ESCAPES[code], pos + 2
        if code in _HEX_LENGTHS:
            digits = self.text[pos + 2 : pos + 2 + _HEX_LENGTHS[code]]
            if len(digits) == _HEX_LENGTHS[code] and re.fullmatch(
                r"[0-9a-fA-F]+", digits
            ):
                number = int(digits, 16)
                if number <= 0x10FFFF and not 0xD800 <= number <= 0xDFFF:
                    return chr(number), pos + 2 + len(digits)
            raise self.error(
                f"bad escape '\\{code}{digits}' (expected {_HEX_LENGTHS[code]} hex "
                "digits of a code point that is not a surrogate)",
                pos,
            )
        shown = code or "end of input"
        raise self.error(
            f"unknown escape '\\{shown}' (expected \\\", \\\\, \\n, \\t, \\r, \\uXXXX "
            "or \\UXXXXXXXX)",
            pos,
        )


def _next_special(text: str, pos: int) -> int:
    """Index of the next '"', '\\' or newline from ``pos`` on (len(text) if none)."""
    match = _SPECIAL_RE.search(text, pos)
    return match.start() if match else len(text)


def tokenize(text: str, budget: Budget | None = None) -> list[Token]:
    """All tokens of ``text``, ending with one EOF token (``budget``: see limits)."""
    lexer = Lexer(text)
    tokens = [lexer.next()]
    while tokens[-1].kind != EOF:
        if budget is not None:
            budget.tick()
        tokens.append(lexer.next())
    return tokens
