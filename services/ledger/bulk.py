"""Set-based ledger posting for jobs: a thousand grants or expiries in a handful of statements.

Same rows as services.ledger.posting would write one by one (grant + entry + allocation; entry + allocation
+ grant update for an expiry, account balance and version), under the same account locks, taken
in account-id order. Ids are reserved up front (a PostgreSQL sequence, or max(id) under SQLite's
exclusive write transaction) so that entries of one account get increasing ids in posting order,
which the balance-chain check of services.ledger.reconcile relies on.
"""
from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import DateTime, bindparam, func, select, text, update
from sqlalchemy.orm import Session

from models import Account, Allocation, CreditGrant, Customer, LedgerEntry, OutboxEvent
from services.core.db import among, is_sqlite
from services.events import outbox
from services.events.signing import iso as iso_utc
from services.ledger import crossings
from services.ledger.rules import Actor, entry_row, fingerprint

GRANTS, ENTRIES, ALLOCS, ACCOUNTS, EVENTS = (CreditGrant.__table__, LedgerEntry.__table__,
                                             Allocation.__table__, Account.__table__,
                                             OutboxEvent.__table__)



def reserve_ids(s: Session, table, n: int) -> list[int]:
    """n fresh ids for `table`, ascending."""
    if n <= 0:
        return []
    if is_sqlite(s):
        top = s.execute(select(func.coalesce(func.max(table.c.id), 0))).scalar_one()
        return list(range(top + 1, top + n + 1))
    rows = s.execute(text("SELECT nextval(pg_get_serial_sequence(:t, 'id')) "
                          "FROM generate_series(1, :n)"), {"t": table.name, "n": n}).scalars()
    return sorted(rows)


def _insert_many(s: Session, table, rows: list[dict]) -> None:
    """Insert rows straight through the driver: COPY on PostgreSQL, executemany on SQLite.

    SQLAlchemy's per-row parameter processing, and psycopg's one-statement-per-row executemany,
    cost far more than the database does at a thousand rows. Values are plain Python values.
    """
    if not rows:
        return
    cols = list(rows[0])
    names = ", ".join(f'"{c}"' for c in cols)
    conn = s.connection()
    if conn.dialect.name == "postgresql":
        raw = conn.connection.dbapi_connection
        with raw.cursor() as cur, cur.copy(f"COPY {table.name} ({names}) FROM STDIN") as copy:
            for r in rows:
                copy.write_row([r[c] for c in cols])
        return
    # SQLAlchemy's own SQLite datetime format, so that string comparisons stay exact.
    fix = [c for c in cols if isinstance(table.c[c].type, DateTime)]
    if fix:
        rows = [{**r, **{c: r[c].strftime("%Y-%m-%d %H:%M:%S.%f") if r[c] is not None else None
                         for c in fix}} for r in rows]
    marks = ", ".join(f":{c}" for c in cols)
    conn.exec_driver_sql(f"INSERT INTO {table.name} ({names}) VALUES ({marks})", rows)


def _set_balances(s: Session, accounts: list[dict], now: datetime) -> None:
    """New balance and version of each touched account: one statement on PostgreSQL."""
    if s.get_bind().dialect.name == "postgresql":
        s.execute(text(
            "UPDATE accounts AS a SET balance = v.bal, version = v.ver, updated_at = :now "
            "FROM unnest(CAST(:ids AS bigint[]), CAST(:bals AS bigint[]), CAST(:vers AS bigint[])) "
            "AS v(id, bal, ver) WHERE a.id = v.id"),
            {"ids": [a["id"] for a in accounts], "bals": [a["balance"] for a in accounts],
             "vers": [a["version"] for a in accounts], "now": now})
        return
    s.execute(update(ACCOUNTS).where(ACCOUNTS.c.id == bindparam("aid"))
              .values(balance=bindparam("bal"), version=bindparam("ver"), updated_at=now),
              [{"aid": a["id"], "bal": a["balance"], "ver": a["version"]} for a in accounts])


def lock_accounts(s: Session, customer_ids: Iterable[int]) -> dict[int, dict]:
    """Lock the live accounts of these customers in account-id order; {customer_id: row}
    (with the `watch` of services.ledger.crossings, read by the same statement)."""
    ids = sorted(set(customer_ids))
    if not ids:
        return {}
    q = (select(ACCOUNTS.c.id, ACCOUNTS.c.customer_id, ACCOUNTS.c.balance, ACCOUNTS.c.version,
                *crossings.columns(ACCOUNTS.c.customer_id))
         .join(Customer.__table__, Customer.id == ACCOUNTS.c.customer_id)
         # the ids on both sides: customers are then read by primary key, not scanned whole
         .where(among(s, ACCOUNTS.c.customer_id, ids), among(s, Customer.id, ids),
                Customer.deleted_at.is_(None))
         .order_by(ACCOUNTS.c.id).with_for_update(of=ACCOUNTS))
    return {r.customer_id: {"id": r.id, "customer_id": r.customer_id, "balance": r.balance,
                            "version": r.version, "watch": crossings.watch_of(*r[4:])}
            for r in s.execute(q)}


def _event_row(type_: str, data: dict, *, customer_id: int, external_id: str | None,
               at: datetime) -> dict:
    """The outbox row services.events.outbox.emit writes, as a plain row for _insert_many."""
    payload = dict(data)
    if external_id is not None:
        payload.setdefault("external_id", external_id)
    return dict(event_id=outbox.new_event_id(), type=type_, customer_id=customer_id,
                data=json.dumps(payload), created_at=at, dispatched_at=None)


def check_crossings(s: Session, entries: list[dict], accounts: dict[int, dict], *,
                    at: datetime) -> None:
    """The crossing rule for every written entry that lowered a balance, in posting order.

    Without debits (expiries: no auto top-up can trigger) the notices are written set-based,
    one COPY, rows as services.ledger.crossings.check would emit them one by one."""
    if not any(e["type"] == "debit" for e in entries):
        rows = []
        for e in entries:
            if e["amount"] < 0:
                acct = accounts.get(e["customer_id"])
                watch = (acct.get("watch") if acct else None) or crossings.watch_for(
                    s, e["customer_id"])
                for type_, data in crossings.notices(watch, before=e["balance_before"],
                                                     after=e["balance_after"]):
                    rows.append(_event_row(type_, data, customer_id=e["customer_id"],
                                           external_id=watch.external_id, at=at))
        _insert_many(s, EVENTS, rows)
        return
    for e in entries:
        if e["amount"] < 0:
            acct = accounts.get(e["customer_id"])
            crossings.check(s, customer_id=e["customer_id"],
                            watch=acct.get("watch") if acct else None,
                            before=e["balance_before"], after=e["balance_after"],
                            entry_type=e["type"], entry_id=lambda e=e: e["id"], at=at)


@dataclass
class Batch:
    """Rows to post in one transaction; `balances` tracks each locked account as we go."""

    now: datetime
    actor: Actor
    job_run_id: int | None
    accounts: dict[int, dict]  # customer_id -> locked account row (balance mutated here)
    grants: list[dict] = field(default_factory=list)
    entries: list[dict] = field(default_factory=list)
    allocs: list[dict] = field(default_factory=list)
    expired: list[int] = field(default_factory=list)

    def _entry(self, acct: dict, *, type: str, amount: int, **kw) -> dict:
        e = entry_row(acct, type=type, amount=amount, actor=self.actor, at=self.now,
                      job_run_id=self.job_run_id, **kw)
        self.entries.append(e)
        return e

    def grant(self, customer_id: int, *, credits: int, source: str, key: str,
              expires_at: datetime | None, reason: str, plan_id: int | None = None,
              period: str | None = None) -> None:
        acct = self.accounts[customer_id]
        g = dict(account_id=acct["id"], customer_id=customer_id, source=source, amount=credits,
                 remaining=credits, expires_at=expires_at, expired_at=None, cost_minor=0,
                 currency=None, payment_id=None, plan_id=plan_id, period=period,
                 job_run_id=self.job_run_id, created_at=self.now)
        self.grants.append(g)
        e = self._entry(acct, type="grant", amount=credits, reason=reason, idempotency_key=key,
                        request_hash=fingerprint("grant", key=key), _grant=g)
        self.allocs.append(dict(_entry=e, _grant=g, credits=credits))

    def expire(self, customer_id: int, *, grant_id: int, remaining: int) -> None:
        acct = self.accounts[customer_id]
        e = self._entry(acct, type="expiry", amount=-remaining, reason="credits expired",
                        idempotency_key=f"expiry:{grant_id}",
                        request_hash=fingerprint("expiry", grant=grant_id), grant_id=grant_id)
        self.allocs.append(dict(_entry=e, grant_id=grant_id, credits=-remaining))
        self.expired.append(grant_id)

    def _grant_events(self, s: Session) -> None:
        """grant.created of every new bucket, set-based like the buckets (one COPY); the
        external id is the one the account lock read (its `watch`)."""
        if not self.grants:
            return
        external = {cid: a["watch"].external_id for cid, a in self.accounts.items()
                    if a.get("watch") is not None}
        if missing := sorted({g["customer_id"] for g in self.grants} - set(external)):
            external.update(s.execute(select(Customer.id, Customer.external_id)
                                      .where(among(s, Customer.id, missing))).all())
        _insert_many(s, EVENTS, [
            dict(event_id=outbox.new_event_id(), type="grant.created",
                 customer_id=g["customer_id"], created_at=self.now, dispatched_at=None,
                 data=json.dumps({"grant_id": g["id"], "credits": g["amount"],
                                  "source": g["source"], "expires_at": iso_utc(g["expires_at"]),
                                  "external_id": external.get(g["customer_id"])}))
            for g in self.grants])

    def flush(self, s: Session) -> None:
        """Write everything: ids reserved, then one executemany per table."""
        for g, gid in zip(self.grants, reserve_ids(s, GRANTS, len(self.grants)), strict=True):
            g["id"] = gid
        for e, eid in zip(self.entries, reserve_ids(s, ENTRIES, len(self.entries)), strict=True):
            e["id"] = eid
            if "_grant" in e:  # a grant entry points at its new bucket
                e["grant_id"] = e.pop("_grant")["id"]
        for a in self.allocs:
            a["entry_id"] = a.pop("_entry")["id"]
            if "_grant" in a:
                a["grant_id"] = a.pop("_grant")["id"]
        _insert_many(s, GRANTS, self.grants)
        _insert_many(s, ENTRIES, self.entries)
        _insert_many(s, ALLOCS, self.allocs)
        self._grant_events(s)
        if self.expired:
            s.execute(update(GRANTS).where(among(s, GRANTS.c.id, self.expired))
                      .values(remaining=0, expired_at=self.now))
        touched = [a for a in self.accounts.values() if a.pop("touched", False)]
        if touched:
            _set_balances(s, touched, self.now)
        check_crossings(s, self.entries, self.accounts, at=self.now)
