"""Audience export writers: csv, json, jsonl, xml, xlsx; one ``customer_id`` per row.

Every writer streams: ids are written chunk by chunk as they arrive, so an export of
millions of contacts needs memory for one chunk only (xlsx uses openpyxl's write-only mode).
Parquet, and csv with profile columns, are written by the server (``Export`` with a
format, segd.export) and only stored here.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable
from typing import IO, Any
from xml.sax.saxutils import quoteattr

FORMATS = ("csv", "json", "jsonl", "xml", "xlsx", "parquet")
COLUMN_FORMATS = ("csv", "parquet")  # the formats that take --columns
XLSX_MAX_ROWS = 1_048_576  # Excel's limit per sheet, header included


class Writer:
    def __init__(self, stream: IO[Any], name: str) -> None:
        self.stream = stream
        self.name = name
        self.rows = 0

    def write(self, ids: Iterable[str]) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """Finish the document (the caller closes the stream)."""


class CsvWriter(Writer):
    def __init__(self, stream: IO[Any], name: str) -> None:
        super().__init__(stream, name)
        self._csv = csv.writer(stream, lineterminator="\n")
        self._csv.writerow(["customer_id"])

    def write(self, ids: Iterable[str]) -> None:
        for cid in ids:
            self._csv.writerow([cid])
            self.rows += 1


class JsonWriter(Writer):
    """``[{"customer_id": "c1"}, ...]``."""

    def __init__(self, stream: IO[Any], name: str) -> None:
        super().__init__(stream, name)
        stream.write("[")

    def write(self, ids: Iterable[str]) -> None:
        for cid in ids:
            sep = ",\n " if self.rows else "\n "
            self.stream.write(
                sep + json.dumps({"customer_id": cid}, ensure_ascii=False)
            )
            self.rows += 1

    def close(self) -> None:
        self.stream.write("\n]\n" if self.rows else "]\n")


class JsonLinesWriter(Writer):
    """One ``{"customer_id": "c1"}`` per line."""

    def write(self, ids: Iterable[str]) -> None:
        for cid in ids:
            self.stream.write(
                json.dumps({"customer_id": cid}, ensure_ascii=False) + "\n"
            )
            self.rows += 1


class XmlWriter(Writer):
    """``<segment name="vip"><contact customer_id="c1"/>...</segment>``."""

    def __init__(self, stream: IO[Any], name: str) -> None:
        super().__init__(stream, name)
        stream.write('<?xml version="1.0" encoding="UTF-8"?>\n')
        stream.write(f"<segment name={quoteattr(name)}>\n")

    def write(self, ids: Iterable[str]) -> None:
        for cid in ids:
            self.stream.write(f"  <contact customer_id={quoteattr(cid)}/>\n")
            self.rows += 1

    def close(self) -> None:
        self.stream.write("</segment>\n")


class XlsxWriter(Writer):
    """A workbook with a ``customer_id`` column; a new sheet every 1,048,575 rows."""

    def __init__(self, stream: IO[Any], name: str) -> None:
        from openpyxl import Workbook

        super().__init__(stream, name)
        self._book = Workbook(write_only=True)
        self._sheet: Any = None
        self._sheet_rows = 0
        self._sheets = 0
        self._new_sheet()

    def _new_sheet(self) -> None:
        self._sheets += 1
        base = "".join(c for c in self.name if c not in "[]:*?/\\")[:24] or "segment"
        title = base if self._sheets == 1 else f"{base} ({self._sheets})"
        self._sheet = self._book.create_sheet(title=title)
        self._sheet.append(["customer_id"])
        self._sheet_rows = 1

    def write(self, ids: Iterable[str]) -> None:
        for cid in ids:
            if self._sheet_rows >= XLSX_MAX_ROWS:
                self._new_sheet()
            self._sheet.append([cid])
            self._sheet_rows += 1
            self.rows += 1

    def close(self) -> None:
        self._book.save(self.stream)


WRITERS: dict[str, type[Writer]] = {
    "csv": CsvWriter,
    "json": JsonWriter,
    "jsonl": JsonLinesWriter,
    "xml": XmlWriter,
    "xlsx": XlsxWriter,
}


def format_from_path(path: str) -> str | None:
    ext = path.rsplit(".", 1)[-1].lower() if "." in path else ""
    return {"ndjson": "jsonl"}.get(ext, ext) if ext in (*FORMATS, "ndjson") else None
