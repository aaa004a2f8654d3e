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


class StorageError(SegdError):
    """The data directory could not take a write (I/O error); nothing of the call stays
    applied. Reads keep working; a write may be retried (UNAVAILABLE)."""


class StorageFull(StorageError):
    """The disk of the data directory is full (ENOSPC / file size limit); nothing of the
    call stays applied and writes work again once space returns (RESOURCE_EXHAUSTED)."""


class LogFailed(StorageError):
    """An fsync of the write-ahead log failed: what the kernel dropped cannot be known, so
    the log accepts no more writes until the process restarts and recovers from disk (the
    lesson of PostgreSQL's fsyncgate)."""


class DataDirLocked(FailedPrecondition):
    """Another process holds the data directory (its lock file is locked)."""

    def __init__(self, path: str, holder: str = "") -> None:
        who = f" (pid {holder})" if holder else ""
        super().__init__(
            f"data directory {path} is in use by another segd process{who}; "
            "stop it first or pick another --data-dir"
        )
        self.path = path
        self.holder = holder


class CorruptLog(SegdError):
    """A record in the middle of the write-ahead log fails its checksum (or breaks the
    sequence): start-up stops rather than skip it. ``segctl repair`` truncates there."""

    def __init__(self, file: str, offset: int, reason: str) -> None:
        super().__init__(
            f"write-ahead log {file} is corrupt at offset {offset}: {reason} "
            "(records after it cannot be trusted; `segctl repair --data-dir DIR` "
            "truncates the log there, dropping them)"
        )
        self.file = file
        self.offset = offset
        self.reason = reason
