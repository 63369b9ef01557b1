"""Helpers of the API tests (the clients and `assert_error` are in tests/helpers.py)."""
from __future__ import annotations

from sqlalchemy import func, select

from models import CreditGrant, Customer, IdempotencyRecord, LedgerEntry, Task, db


def counts() -> dict[str, int]:
    """Row counts of everything an API write could add."""
    db.session.rollback()
    return {m.__name__: db.session.scalar(select(func.count()).select_from(m))
            for m in (LedgerEntry, CreditGrant, Customer, Task, IdempotencyRecord)}
