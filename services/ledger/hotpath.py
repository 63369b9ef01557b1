"""The everyday debit in three statements: the hot path of the API (`ledger.debit` tries it first).

On PostgreSQL it takes two round trips while it holds the account's row lock: 1 and 2 go
together (pipeline mode), and 3 goes with the COMMIT when the caller asks (`write_at_commit`).

1. one conditional UPDATE takes the account's row lock and the credits, RETURNING the new
   balance (and, on PostgreSQL, what services.ledger.crossings needs for the balance notices);
   it matches nothing for an unknown or deleted customer, a short balance or a used
   idempotency key, and the general path in services.ledger.posting then decides (and explains);
2. the live buckets, in draw order, read under that lock;
3. the bucket draws, the entry and its allocations: one statement on PostgreSQL (three on SQLite).
A bucket past its expiry undoes step 1 under the same lock and hands over to the general path,
which expires it with an entry of its own first. Same rows as `ledger.post_debit` writes.

On PostgreSQL the statements go straight through the driver (psycopg prepares them on the
server after a few uses): SQLAlchemy's per-statement work costs more than the database does
here. `services.core.db.driver(session)` gives the connection of the session's own transaction.
"""
from __future__ import annotations

import json

from psycopg.rows import namedtuple_row
from sqlalchemy import bindparam, exists, insert, select, update
from sqlalchemy.orm import Session, make_transient_to_detached
from sqlalchemy.orm.attributes import set_committed_value
from sqlalchemy.orm.util import identity_key

from models import Account, Allocation, CreditGrant, Customer, LedgerEntry, utcnow
from services.core import context
from services.core.db import defer, driver, run
from services.ledger import crossings
from services.ledger.rules import Actor, expiry_rules, is_expired, plan_draw


def fast_debit(s: Session, *, credits: int, key: str | None, request_hash: str, actor: Actor,
               customer_id: int | None = None, external_id: str | None = None,
               feature: str | None = None, quantity: int | None = None,
               reference: str | None = None, reason: str | None = None,
               task_id: int | None = None, meta: dict | None = None,
               write_at_commit: bool = False) -> LedgerEntry | None:
    """The debit as one entry, or None having changed nothing: the general path decides.

    write_at_commit (PostgreSQL): the entry is written with the transaction's COMMIT, in the same
    round trip (services.core.db.defer); its id is known already (drawn under the lock)."""
    if customer_id is None and external_id is None:
        return None
    s.flush()  # pending ORM changes go first, as they would before any query
    now = utcnow()
    by_ext = external_id is not None
    params = {"who": external_id if by_ext else customer_id, "credits": credits, "key": key,
              "now": now}
    pg = driver(s)
    if pg is not None:
        # The take and the bucket read in one round trip (pipeline): the read is the next
        # statement, so its snapshot is taken once the take holds the row lock.
        with pg.pipeline():
            take = run(pg, _PG_TAKE[(by_ext, bool(key))], params)
            read = run(pg, _PG_GRANTS_OF[by_ext], params, namedtuple_row)
        row = take.fetchone()
        if row is None:
            return None
        aid, cid, after, version, entry_id = row[:5]
        grants = read.fetchall()
    else:
        row = s.execute(_TAKE[(by_ext, bool(key))], params).first()
        if row is None:
            return None
        aid, cid, after, version = row[:4]
        grants = s.execute(_GRANTS, {"aid": aid}).all()
    grace, paid_never = expiry_rules()
    plan = plan_draw(grants, credits)
    if (sum(take for _, take in plan) != credits
            or any(is_expired(g, now, grace, paid_never) for g in grants)):
        if pg is not None:
            run(pg, _PG_UNTAKE, {"aid": aid, "credits": credits})
        else:
            s.execute(_UNTAKE, {"aid": aid, "credits": credits})
        return None
    values = dict(account_id=aid, customer_id=cid, type="debit", amount=-credits,
                  balance_before=after + credits, balance_after=after, actor_type=actor.type,
                  actor_id=actor.id, reason=reason, feature=feature, quantity=quantity,
                  reference=reference, idempotency_key=key, request_hash=request_hash,
                  request_id=context.request_id(), grant_id=None, related_entry_id=None,
                  payment_id=None, task_id=task_id, job_run_id=None, created_at=now)
    if pg is not None:
        write = {**values, "id": entry_id, "metadata": None if meta is None else json.dumps(meta),
                 "gids": [g.id for g, _ in plan], "takes": [t for _, t in plan]}
        if not (write_at_commit and defer(s, _PG_WRITE, write)):
            run(pg, _PG_WRITE, write)
    else:
        entry_id = _write_sqlite(s, values if meta is None else {**values, "metadata": meta}, plan)
    # The session may hold these rows already: it learns what SQL wrote.
    _sync(s, Account, aid, balance=after, version=version, updated_at=now)
    for g, take in plan:
        _sync(s, CreditGrant, g.id, remaining=g.remaining - take)
    entry = LedgerEntry(id=entry_id, meta=meta, **values)
    make_transient_to_detached(entry)  # the row exists: the session knows it as loaded
    s.add(entry)
    # PostgreSQL: the Watch came back with the UPDATE, so a debit that crosses nothing costs no
    # statement more. SQLite's RETURNING cannot hold subqueries: one in-process SELECT reads it.
    crossings.check(s, customer_id=cid, watch=crossings.watch_of(*row[5:]) if pg is not None else None,
                    before=after + credits, after=after, entry_type="debit",
                    entry_id=lambda: entry_id, at=now)
    return entry


def _sync(s: Session, model, pk: int, **values) -> None:
    obj = s.identity_map.get(identity_key(model, pk))
    if obj is not None:
        for k, v in values.items():
            set_committed_value(obj, k, v)


def _write_sqlite(s: Session, values: dict, plan: list[tuple]) -> int:
    ent, grants = LedgerEntry.__table__, CreditGrant.__table__
    entry_id = s.execute(insert(ent).values(values).returning(ent.c.id)).scalar_one()
    for g, take in plan:
        s.execute(update(grants).where(grants.c.id == g.id).values(remaining=grants.c.remaining - take))
    s.execute(insert(Allocation.__table__), [{"entry_id": entry_id, "grant_id": g.id, "credits": -take}
                                             for g, take in plan])
    return entry_id


# --- PostgreSQL: plain SQL for the driver ---------------------------------------------------------

def _pg_take(by_external_id: bool, keyed: bool) -> str:
    who = "external_id" if by_external_id else "id"
    sql = ("UPDATE accounts SET balance = balance - %(credits)s::bigint, version = version + 1, "
           "updated_at = %(now)s "
           f"WHERE customer_id = (SELECT id FROM customers WHERE {who} = %(who)s "
           "AND deleted_at IS NULL) AND balance >= %(credits)s::bigint")
    if keyed:
        sql += " AND NOT EXISTS (SELECT 1 FROM ledger_entries WHERE idempotency_key = %(key)s)"
    # The entry's id is drawn under the lock, as the INSERT would draw it: ids follow the lock order.
    return (sql + " RETURNING id, customer_id, balance, version, "
            "nextval(pg_get_serial_sequence('ledger_entries', 'id')), " + crossings.PG_COLUMNS)


_PG_TAKE = {(by_ext, keyed): _pg_take(by_ext, keyed) for by_ext in (False, True) for keyed in (False, True)}
# The live buckets of the customer's account (the take's account: same customer, not deleted).
_PG_GRANTS_OF = {by_ext: (
    "SELECT id, remaining, expires_at, source FROM credit_grants WHERE account_id = "
    "(SELECT a.id FROM accounts a JOIN customers c ON c.id = a.customer_id "
    f"WHERE c.{'external_id' if by_ext else 'id'} = %(who)s AND c.deleted_at IS NULL) "
    "AND remaining > 0 ORDER BY expires_at IS NULL, expires_at, id") for by_ext in (False, True)}
_PG_UNTAKE = ("UPDATE accounts SET balance = balance + %(credits)s::bigint, version = version - 1 "
              "WHERE id = %(aid)s")
_ENTRY_COLS = ("account_id", "customer_id", "type", "amount", "balance_before", "balance_after",
               "actor_type", "actor_id", "reason", "feature", "quantity", "reference",
               "idempotency_key", "request_hash", "request_id", "grant_id", "related_entry_id",
               "payment_id", "task_id", "job_run_id", "created_at")
_CASTS = {"account_id": "bigint", "customer_id": "bigint", "amount": "bigint",
          "balance_before": "bigint", "balance_after": "bigint", "quantity": "bigint",
          "grant_id": "bigint", "related_entry_id": "bigint", "payment_id": "bigint",
          "task_id": "bigint", "job_run_id": "bigint", "created_at": "timestamp"}
# The entry, the bucket draws and the allocations in one round trip; allocation ids follow the
# draw order, so that a refund gives back the latest-drawn credits first.
_PG_WRITE = f"""
WITH e AS (
  INSERT INTO ledger_entries (id, {", ".join(_ENTRY_COLS)}, metadata)
  VALUES (%(id)s::bigint, {", ".join(f"%({c})s::{_CASTS.get(c, 'text')}" for c in _ENTRY_COLS)},
          %(metadata)s::json)
  RETURNING id),
v AS (SELECT * FROM unnest(%(gids)s::bigint[], %(takes)s::bigint[]) WITH ORDINALITY AS v (gid, take, n)),
g AS (UPDATE credit_grants SET remaining = credit_grants.remaining - v.take
      FROM v WHERE credit_grants.id = v.gid),
a AS (INSERT INTO allocations (entry_id, grant_id, credits)
      SELECT e.id, v.gid, -v.take FROM e, v ORDER BY v.n)
SELECT id FROM e"""


# --- SQLite: the same statements through SQLAlchemy, built once -----------------------------------

def _take(by_external_id: bool, keyed: bool):
    acc, cust, ent = Account.__table__, Customer.__table__, LedgerEntry.__table__
    who = (cust.c.external_id if by_external_id else cust.c.id) == bindparam("who")
    cond = [acc.c.customer_id == select(cust.c.id).where(who, cust.c.deleted_at.is_(None))
            .scalar_subquery(), acc.c.balance >= bindparam("credits")]
    if keyed:
        cond.append(~exists().where(ent.c.idempotency_key == bindparam("key")))
    return (update(acc).where(*cond).values(balance=acc.c.balance - bindparam("credits"),
                                            version=acc.c.version + 1, updated_at=bindparam("now"))
            .returning(acc.c.id, acc.c.customer_id, acc.c.balance, acc.c.version))


_TAKE = {(by_ext, keyed): _take(by_ext, keyed) for by_ext in (False, True) for keyed in (False, True)}
_GT = CreditGrant.__table__
_GRANTS = (select(_GT.c.id, _GT.c.remaining, _GT.c.expires_at, _GT.c.source)
           .where(_GT.c.account_id == bindparam("aid"), _GT.c.remaining > 0)
           .order_by(_GT.c.expires_at.is_(None), _GT.c.expires_at, _GT.c.id))
_AT = Account.__table__
_UNTAKE = (update(_AT).where(_AT.c.id == bindparam("aid"))
           .values(balance=_AT.c.balance + bindparam("credits"), version=_AT.c.version - 1))

__all__ = ["fast_debit"]
