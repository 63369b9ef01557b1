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
import itertools
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
_TRIGGER_SET = frozenset(_TRIGGERS)


def row_fixer(kinds: Iterable[str]):
    """A function making one row's values CSV-safe, by column kind (text, number, timestamp, any).

    The hot path of a large export: numbers are left alone (csv writes None as an empty cell),
    and only text cells that begin with a trigger character are touched.
    """
    kinds = list(kinds)
    unknown = set(kinds) - set(KINDS)
    if unknown:
        raise ValueError(f"unknown column kinds {unknown}")
    texts = [i for i, k in enumerate(kinds) if k == "text"]
    times = [i for i, k in enumerate(kinds) if k == "timestamp"]
    anys = [i for i, k in enumerate(kinds) if k == "any"]

    def fix(row) -> list:
        vals = list(row)
        for i in texts:
            v = vals[i]
            if v:
                if v.__class__ is not str:
                    v = vals[i] = str(v)
                if v[0] in _TRIGGER_SET:
                    vals[i] = PREFIX + v
        for i in times:
            v = vals[i]
            if v is not None:
                vals[i] = v.isoformat(sep=" ", timespec="seconds")
        for i in anys:
            vals[i] = cell(vals[i])
        return vals

    return fix


def _writer(buf):
    # RFC 4180: CRLF line ends, fields with a comma, quote or line break quoted, quotes doubled.
    return csv.writer(buf, lineterminator="\r\n", quoting=csv.QUOTE_MINIMAL)


def header_line(header: Iterable[str]) -> str:
    buf = io.StringIO()
    _writer(buf).writerow([neutralise(h) for h in header])
    return buf.getvalue()


def stream(header: Iterable[str] | None, rows: Iterable[Iterable], *, chunk: int = 64 * 1024,
           kinds: Iterable[str] | None = None, counter: list | None = None,
           batch: int = 500) -> Iterator[str]:
    """CSV text of `rows`, yielded in chunks of about `chunk` characters; `counter[0]` holds the
    rows written so far. Without `kinds` every value goes through cell(). The header (unless
    None: the caller sent it already) is yielded at once, so a download starts before the first
    row is read."""
    fix = row_fixer(kinds) if kinds is not None else (lambda r: [cell(v) for v in r])
    if header is not None:
        yield header_line(header)
    buf = io.StringIO()
    w = _writer(buf)
    it = iter(rows)
    written = 0
    while part := list(itertools.islice(it, batch)):
        w.writerows(map(fix, part))
        written += len(part)
        if counter is not None:
            counter[0] = written
        if buf.tell() >= chunk:
            yield buf.getvalue()
            buf.seek(0)
            buf.truncate()
    tail = buf.getvalue()
    if tail:
        yield tail


def dumps(header: Iterable[str], rows: Iterable[Iterable]) -> str:
    """A whole (small) CSV document as one string."""
    return "".join(stream(header, rows))
