"""Keyset paging, the one way every list in the dashboard pages: by id, never by OFFSET, so a
page costs the same at row 50 as at row 5 million and rows added meanwhile do not shift it.
Also the base of a list's filters (their query-string arguments)."""
from __future__ import annotations

from dataclasses import asdict

from sqlalchemy import Select

from models import db


class ListFilters:
    """Base of a list's filters (a dataclass of strings, "" meaning any): the query-string
    arguments they come from, and whether any is set."""

    def args(self) -> dict[str, str]:
        return {k: v for k, v in asdict(self).items() if v}

    @property
    def active(self) -> bool:
        return bool(self.args())


def keyset(stmt: Select, id_col, *, cursor: int | None, limit: int,
           newest_first: bool = True) -> tuple[list, int | None]:
    """One page of `stmt`: newest first below `cursor` (or oldest first above it), and the cursor
    of the next page (None on the last). Reads limit + 1 rows to know whether there is one."""
    if cursor:
        stmt = stmt.where(id_col < cursor if newest_first else id_col > cursor)
    stmt = stmt.order_by(id_col.desc() if newest_first else id_col.asc())
    rows = list(db.session.scalars(stmt.limit(limit + 1)))
    more = len(rows) > limit
    rows = rows[:limit]
    return rows, (rows[-1].id if more else None)
