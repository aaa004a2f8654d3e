"""Error categories of segd.

The engine raises these; only ``server/errors.py`` knows gRPC and maps each category to one
status code (INVALID_ARGUMENT, NOT_FOUND, ...). Every message says what was wrong, what came
and where (msgspec style), because an operator reads it in a terminal far from the data.
An error raised while validating input guarantees that nothing was applied.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Self


class SegdError(Exception):
    """Base class of every error segd raises on purpose."""


@dataclass(frozen=True)
class Violation:
    """One problem in user input: ``where`` is a path such as ``events[12].ts``."""

    where: str
    message: str

    def __str__(self) -> str:
        return f"{self.where}: {self.message}" if self.where else self.message


class InvalidInput(SegdError):
    """Bad input (a malformed batch, an unknown field, a bad value); nothing was changed."""

    def __init__(self, message: str, violations: list[Violation] | None = None) -> None:
        super().__init__(message)
        self.violations: list[Violation] = list(violations or [])

    @classmethod
    def at(cls, where: str, message: str) -> Self:
        """One violation, with the message ``"<where>: <message>"``."""
        v = Violation(where, message)
        return cls(str(v), [v])


class DslSyntaxError(InvalidInput):
    """The segment DSL text does not parse; ``line`` and ``column`` are 1-based."""

    def __init__(self, message: str, line: int, column: int, text: str = "") -> None:
        where = f"line {line}:{column}"
        super().__init__(f"{where}: {message}", [Violation(where, message)])
        self.line = line
        self.column = column
        self.text = text
        self.reason = message


class InvalidQuery(InvalidInput):
    """A well-formed AST that cannot be evaluated: unknown attribute, bad operator for a type."""


class TooComplex(SegdError):
    """A request or query is over a configured limit (size, depth, conditions)."""


class NotFound(SegdError):
    """A named object (segment, contact, item) does not exist."""


class SegmentNotFound(NotFound):
    def __init__(self, name: str) -> None:
        super().__init__(f"segment {name!r} not found")
        self.name = name


class ContactNotFound(NotFound):
    def __init__(self, customer_id: str) -> None:
        super().__init__(f"contact {customer_id!r} not found")
        self.customer_id = customer_id


class AlreadyExists(SegdError):
    """Creating something whose name is taken."""


class FailedPrecondition(SegdError):
    """The request is valid but the system is not in a state to run it."""


class Conflict(SegdError):
    """An update lost a race (stale version)."""


class OutOfRange(SegdError):
    """A page token or offset past the end."""


class DeadlineExceeded(SegdError):
    """The caller's deadline passed; the work was abandoned between plan steps."""
