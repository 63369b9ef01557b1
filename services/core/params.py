"""Untrusted filter values (query strings) to Python values: junk becomes None, never an exception.

Shared by the dashboard's argument helpers (dashboard/respond.py) and the services' own
`Filters.parse(args)`, so a page cannot answer 500 because one parser forgot a case.
"""
from __future__ import annotations

from datetime import date

# A day range around any accepted date stays representable (date.max + 1 day overflows).
MIN_DATE, MAX_DATE = date(1900, 1, 1), date(9998, 12, 31)
MAX_DIGITS = 18  # fits a BIGINT


def to_int(raw, *, max_digits: int = MAX_DIGITS) -> int | None:
    """A non-negative integer written in ASCII digits, else None.

    `"²".isdigit()` is true but int() refuses it, hence the ASCII check.
    """
    raw = raw.strip() if isinstance(raw, str) else ""
    return int(raw) if raw.isascii() and raw.isdigit() and len(raw) <= max_digits else None


def to_date(raw) -> date | None:
    """YYYY-MM-DD (what <input type="date"> sends; longer ISO values are cut to the day)."""
    raw = raw.strip()[:10] if isinstance(raw, str) else ""
    try:
        d = date.fromisoformat(raw)
    except ValueError:
        return None
    return d if MIN_DATE <= d <= MAX_DATE else None
