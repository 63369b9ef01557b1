"""Failure injection for the job tests: a real database trigger that makes one insert fail.

Not a mock: the trigger lives in the test's database (SQLite or PostgreSQL), so the production
code path (the set-based chunk, COPY on PostgreSQL, the one-by-one fallback) meets a real error,
in this process and in a gunicorn worker alike. The `breakage` fixture (tests/jobs/conftest.py)
hands out a Breakage on the test's database and heals whatever a test left broken.
"""
from __future__ import annotations

from sqlalchemy import create_engine, text

from models import db

MESSAGE = "injected failure"


class Breakage:
    """break_grant / break_expiry make one customer's inserts fail; heal() undoes one of them.

    DDL runs as the database owner: the app's role (CI runs the suite as a non-superuser) may not
    create triggers on the tables."""

    def __init__(self, owner_url: str | None):
        self.pg = owner_url is not None
        self.engine = create_engine(owner_url) if self.pg else db.engine
        self.live: list[tuple[str, str]] = []

    def _ddl(self, *statements: str) -> None:
        db.session.rollback()
        with self.engine.begin() as c:
            for sql in statements:
                c.execute(text(sql))

    def inserts(self, name: str, table: str, condition: str) -> tuple[str, str]:
        """Inserts into `table` whose row matches `condition` (SQL over NEW.*) fail from now on."""
        if self.pg:
            self._ddl(f"CREATE OR REPLACE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS "
                      f"$$ BEGIN IF {condition} THEN RAISE EXCEPTION '{MESSAGE}'; END IF; "
                      "RETURN NEW; END $$",
                      f"CREATE TRIGGER {name} BEFORE INSERT ON {table} FOR EACH ROW "
                      f"EXECUTE FUNCTION {name}()")
        else:
            self._ddl(f"CREATE TRIGGER {name} BEFORE INSERT ON {table} FOR EACH ROW "
                      f"WHEN {condition} BEGIN SELECT RAISE(ABORT, '{MESSAGE}'); END")
        self.live.append((name, table))
        return name, table

    def grant(self, customer_id: int) -> tuple[str, str]:
        """This customer's distribution grant fails."""
        return self.inserts(f"fail_grant_{int(customer_id)}", "credit_grants",
                            f"NEW.customer_id = {int(customer_id)} AND NEW.source = 'distribution'")

    def expiry(self, customer_id: int) -> tuple[str, str]:
        """This customer's expiry entries fail (the expiry pass cannot expire their bucket)."""
        return self.inserts(f"fail_expiry_{int(customer_id)}", "ledger_entries",
                            f"NEW.customer_id = {int(customer_id)} AND NEW.type = 'expiry'")

    def heal(self, broken: tuple[str, str]) -> None:
        """Drop an injected failure, as an operator's fix would."""
        name, table = broken
        if self.pg:
            self._ddl(f"DROP TRIGGER IF EXISTS {name} ON {table}", f"DROP FUNCTION IF EXISTS {name}()")
        else:
            self._ddl(f"DROP TRIGGER IF EXISTS {name}")
        self.live.remove(broken)

    def close(self) -> None:
        for broken in list(self.live):
            self.heal(broken)
        if self.pg:
            self.engine.dispose()
