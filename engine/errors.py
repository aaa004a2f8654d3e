"""Error categories of segd.

The engine raises these; only ``server/errors.py`` knows gRPC and maps each category to one
status code (INVALID_ARGUMENT, NOT_FOUND, ...). Every message says what was wrong, what came
and where (msgspec style), because an operator reads it in a terminal far from the data.
An error raised while validating input guarantees that nothing was applied.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Self

QUOTE_LIMIT = 200  # characters of user input an error message quotes at most


def shorten(text: str, limit: int = QUOTE_LIMIT) -> str:
    """``text`` cut to ``limit`` characters (with how much was left out), for messages.

    Error messages travel in gRPC metadata, which clients cap (8 KiB by default): a message
    that quotes a 5,000-character name whole would turn the real error into
    RESOURCE_EXHAUSTED on the client.
    """
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text) - limit} more characters)"


def quoted(value: object, limit: int = QUOTE_LIMIT) -> str:
    """``repr(value)`` cut to ``limit`` characters (see ``shorten``)."""
    return shorten(repr(value), limit)


class SegdError(Exception):
    """Base class of every error segd raises on purpose."""


@dataclass(frozen=True)
class Violation:
    """One problem in user input: ``where`` is a path such as ``events[12].ts``.

    ``row`` (0-based, within the batch or load) and ``column`` are set when the problem is
    in one value of a table; ``message`` is the reason alone, without the path.
    """

    where: str
    message: str
    row: int | None = None
    column: str | None = None

    def __str__(self) -> str:
        return f"{self.where}: {self.message}" if self.where else self.message


def location(kind: str, row: int | None = None, column: str | None = None) -> str:
    """The path of a value in a batch: ``events[12].ts``, ``events.ts``, ``events[3]``."""
    where = kind if row is None else f"{kind}[{row}]"
    return where if column is None else f"{where}.{column}"


class InvalidInput(SegdError):
    """Bad input (a malformed batch, an unknown field, a bad value); nothing was changed.

    The location is structure, not text to parse: ``kind`` (``events``, ``contacts``,
    ``items``, or a path prefix), ``row`` (0-based), ``column`` and ``reason`` (the message
    without the path) are attributes, and ``violations`` carries them to the gRPC details.
    """

    def __init__(
        self,
        message: str,
        violations: list[Violation] | None = None,
        *,
        kind: str | None = None,
        row: int | None = None,
        column: str | None = None,
        reason: str | None = None,
    ) -> None:
        super().__init__(message)
        self.violations: list[Violation] = list(violations or [])
        first = self.violations[0] if self.violations else None
        self.batch: int | None = None  # index of the batch in a stream, when in one
        self.kind = kind
        self.row = row if row is not None else (first.row if first else None)
        self.column = (
            column if column is not None else (first.column if first else None)
        )
        self.reason = (
            reason if reason is not None else (first.message if first else message)
        )

    @property
    def where(self) -> str:
        """The path of the first violation (``events[3].ts``), or ``""``."""
        return self.violations[0].where if self.violations else ""

    @classmethod
    def at(
        cls,
        where: str,
        message: str,
        *,
        row: int | None = None,
        column: str | None = None,
    ) -> Self:
        """One violation, with the message ``"<where>: <message>"``."""
        v = Violation(where, message, row, column)
        return cls(str(v), [v], row=row, column=column, reason=message)

    @classmethod
    def in_batch(
        cls,
        kind: str,
        reason: str,
        *,
        row: int | None = None,
        column: str | None = None,
    ) -> InvalidInput:
        """A problem in a table: ``kind`` ``events``/``contacts``/``items``, the 0-based
        ``row`` (None: the whole column) and the ``column`` (None: the whole row)."""
        v = Violation(location(kind, row, column), reason, row, column)
        return cls(str(v), [v], kind=kind, row=row, column=column, reason=reason)

    def shifted(self, rows: int) -> InvalidInput:
        """The same error with row numbers counted ``rows`` later (a chunk of a load)."""
        if rows == 0 or self.row is None or self.kind is None:
            return self
        return type(self).in_batch(
            self.kind, self.reason, row=self.row + rows, column=self.column
        )

    def in_stream_batch(self, index: int) -> InvalidInput:
        """The same error as batch `index` of a stream: the message starts with
        ``batch N: ``, ``batch`` is set; the violations (paths within the batch), row,
        column and reason are unchanged."""
        err = InvalidInput(
            f"batch {index}: {self}",
            self.violations,
            kind=self.kind,
            row=self.row,
            column=self.column,
            reason=self.reason,
        )
        err.batch = index
        return err


class ValueRejected(InvalidInput):
    """A column converter refused a value: ``row`` within the array it was given (None:
    the whole array, e.g. a wrong type) and ``reason``. The ingest path names the batch
    and the column with ``located``."""

    def __init__(self, reason: str, row: int | None = None) -> None:
        where = "" if row is None else f"row {row}"
        super().__init__(
            f"{where}: {reason}" if where else reason,
            [Violation(where, reason, row, None)],
            row=row,
            reason=reason,
        )

    def located(self, kind: str, column: str, suffix: str = "") -> InvalidInput:
        """This rejection as an error in ``kind``'s ``column``."""
        return InvalidInput.in_batch(
            kind, self.reason + suffix, row=self.row, column=column
        )


class DslSyntaxError(InvalidInput):
    """The segment DSL text does not parse; ``line`` and ``column`` are 1-based."""

    def __init__(self, message: str, line: int, column: int, text: str = "") -> None:
        where = f"line {line}:{column}"
        super().__init__(f"{where}: {message}", [Violation(where, message)])
        self.line = line
        # A 1-based character column here, where InvalidInput.column names a table
        # column: the DSL error keeps its documented meaning.
        self.column = column  # type: ignore[assignment]
        self.text = text
        self.reason = message


class UnknownColumn(InvalidInput):
    """An export asked for a column the contacts do not have: ``name``, its ``index``
    in the list of columns asked for, and a hint (``did you mean``, the known columns)."""

    def __init__(self, name: str, index: int, hint: str = "") -> None:
        where = f"columns[{index}]"
        reason = f"unknown column {quoted(name)}{hint}"
        super().__init__(
            f"{where}: {reason}", [Violation(where, reason, None, name)], column=name
        )
        self.name = name
        self.index = index
        self.reason = reason


class InvalidQuery(InvalidInput):
    """A well-formed AST that cannot be evaluated: unknown attribute, bad operator for a type."""


class TooComplex(SegdError):
    """A request or query is over a documented limit (size, depth, conditions).

    ``limit`` names the limit (``MAX_DEPTH``, ...), ``maximum`` is its value, ``actual``
    what the request came to (or None when checking stopped at the limit), ``where`` the
    field or path (``dsl``, ``condition.or_node``, ``segment 'vip'``).
    """

    def __init__(
        self,
        message: str,
        *,
        limit: str = "",
        maximum: int | None = None,
        actual: int | None = None,
        where: str = "",
    ) -> None:
        super().__init__(message)
        self.limit = limit
        self.maximum = maximum
        self.actual = actual
        self.where = where


class NotFound(SegdError):
    """A named object (segment, contact, item) does not exist."""


class SegmentNotFound(NotFound):
    def __init__(self, name: str) -> None:
        super().__init__(f"segment {quoted(name)} not found")
        self.name = name


class ContactNotFound(NotFound):
    def __init__(self, customer_id: str) -> None:
        super().__init__(f"contact {quoted(customer_id)} not found")
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
