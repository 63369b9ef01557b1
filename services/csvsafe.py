"""CSV that spreadsheets open safely: RFC 4180 quoting, UTF-8, formula-injection neutralised.

A text cell that starts with `=`, `+`, `-`, `@`, tab, CR or LF would be evaluated as a formula
by Excel, LibreOffice or Google Sheets (CSV injection, OWASP). Such a cell is written with a
leading apostrophe, which spreadsheets treat as "this is text" and do not display. A text cell
that starts with an apostrophe itself gets one too, so the rule is exactly reversible: strip one
leading apostrophe from a text cell to get the stored text back (`restore`).

Numbers (int, Decimal, float) are written as numbers, never prefixed: a debit of -5 stays -5.
"""
from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Iterator
from datetime import date, datetime
from decimal import Decimal

DANGEROUS = ("=", "+", "-", "@", "\t", "\r", "\n")
PREFIX = "'"
_TRIGGERS = DANGEROUS + (PREFIX,)


def neutralise(text: str) -> str:
    """The cell text a spreadsheet shows as-is (a leading apostrophe when it could be a formula)."""
    return PREFIX + text if text.startswith(_TRIGGERS) else text


def restore(cell: str) -> str:
    """The inverse of neutralise() for a text cell read back from the file."""
    return cell[1:] if cell.startswith(PREFIX) else cell


def cell(value) -> object:
    """One value as a CSV cell: numbers stay numbers, times in ISO 8601 UTC, text neutralised."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | Decimal | float):
        return value
    if isinstance(value, datetime):
        return value.isoformat(sep=" ", timespec="seconds")
    if isinstance(value, date):
        return value.isoformat()
    return neutralise(str(value))


def text(value) -> str:
    return "" if value is None else neutralise(value if isinstance(value, str) else str(value))


def number(value):
    return "" if value is None else value


def timestamp(value) -> str:
    return "" if value is None else value.isoformat(sep=" ", timespec="seconds")


KINDS = {"text": text, "number": number, "timestamp": timestamp, "any": cell}


class Writer:
    """Rows in, CSV text out in chunks of about `chunk` characters.

    `kinds` (one of text, number, timestamp, any per column) skips the per-value type checks of
    cell() on the hot path of a large export.
    """

    def __init__(self, header: Iterable[str], *, chunk: int = 64 * 1024,
                 kinds: Iterable[str] | None = None):
        self.convert = [KINDS[k] for k in kinds] if kinds is not None else None
        self.buf = io.StringIO()
        # RFC 4180: CRLF line ends, fields with a comma, quote or line break quoted, quotes doubled.
        self.writer = csv.writer(self.buf, lineterminator="\r\n", quoting=csv.QUOTE_MINIMAL)
        self.chunk = chunk
        self.count = 0
        self.writer.writerow([neutralise(h) for h in header])

    def add(self, values: Iterable) -> str | None:
        """Write one row; returns a chunk of text when enough has piled up, else None."""
        if self.convert is None:
            self.writer.writerow([cell(v) for v in values])
        else:
            self.writer.writerow([f(v) for f, v in zip(self.convert, values, strict=True)])
        self.count += 1
        if self.buf.tell() >= self.chunk:
            return self.take()
        return None

    def take(self) -> str:
        text = self.buf.getvalue()
        self.buf.seek(0)
        self.buf.truncate()
        return text


def stream(header: Iterable[str], rows: Iterable[Iterable], *, chunk: int = 64 * 1024,
           kinds: Iterable[str] | None = None, counter: list | None = None) -> Iterator[str]:
    """CSV text of `rows`, yielded chunk by chunk; `counter[0]` holds the rows written so far."""
    w = Writer(header, chunk=chunk, kinds=kinds)
    for values in rows:
        out = w.add(values)
        if counter is not None:
            counter[0] = w.count
        if out:
            yield out
    tail = w.take()
    if tail:
        yield tail


def dumps(header: Iterable[str], rows: Iterable[Iterable]) -> str:
    """A whole (small) CSV document as one string."""
    return "".join(stream(header, rows))
