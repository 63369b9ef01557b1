"""The API's single debit as one PostgreSQL statement: `creditdesk_api_debit()` (migration 0017).

One round trip, one transaction of its own: the price, the account's row lock and credits, the
buckets read under that lock, the entry, the bucket draws, the allocations and the stored reply
(written once, complete: no separate claim). The row lock is held for the time the server needs,
never across a round trip or the interpreter (issue 15: the hot customer).

It handles the everyday debit only. Anything else it refuses before committing anything and
`debit()` answers None: the caller runs the general path (services.ledger.posting through
dashboard/api/idempotency.py), which decides and explains. Refused: a key already claimed or
used, an unknown customer, a short balance, an unpriced feature, a bucket past its expiry, a
balance ending below one of the customer's thresholds or at zero (the notice and auto top-up
rule stays services.ledger.crossings'), a unique key taken meanwhile.

The draw rules are written twice, here in PL/pgSQL and in services.ledger.rules; the values that
can change (expiry grace, paid credits never expiring, the paid sources, the low-balance
setting, the largest movement, the request fingerprint) come from Python on every call, and
tests/ledger/test_sql_debit.py proves with Hypothesis, over random histories with expiries, that
both write the same entries, allocations, buckets, balances and stored replies.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

import psycopg
from psycopg.types.json import Json
from sqlalchemy.exc import DBAPIError

from models import db, utcnow
from models.functions import API_DEBIT_TYPES
from models.ledger import PAID_SOURCES
from services.core import context
from services.core import settings as app_settings
from services.core.db import in_atomic
from services.ledger.rules import HOLE, MAX_CREDITS, Actor, expiry_rules, fingerprint_around

REFUSED = "CDF01"  # the function's "not mine: use the general path"
_RETRY_ELSEWHERE = {REFUSED, "23505"}  # 23505: a unique key taken meanwhile (the general path replays)
_SQL = "SELECT * FROM creditdesk_api_debit(" + ", ".join(f"%s::{t}" for t in API_DEBIT_TYPES) + ")"
_PAID = "{" + ",".join(PAID_SOURCES) + "}"  # as text: cheaper for the driver than a list


@dataclass(frozen=True)
class Reply:
    """Where an API call with an Idempotency-Key stores its reply (dashboard/api/idempotency.py)."""

    scope: str
    key: str
    request_hash: str
    ttl: timedelta


def available() -> bool:
    return db.engine.dialect.name == "postgresql"


def debit(*, external_id: str, credits: int | None, feature: str | None, quantity: int | None,
          reference: str | None, meta: dict | None, ledger_key: str | None, actor: Actor,
          reply: Reply | None) -> dict | None:
    """{"entry_id", "credits", "balance"} of the committed debit (its 201 reply stored under
    `reply`), or None having written nothing. `credits` None: priced from the feature price table
    (quantity 1 by default). PostgreSQL only (None elsewhere)."""
    if not available() or in_atomic():
        return None  # inside a caller's transaction the debit must be part of it
    now = utcnow()
    grace, paid_never = expiry_rules()
    head, tail = fingerprint_around("debit", credits=HOLE, customer=external_id, feature=feature,
                                    quantity=quantity, reference=reference)
    params = (external_id, credits, feature, quantity, reference,
              None if meta is None else Json(meta), ledger_key, head, tail, actor.type, actor.id,
              context.request_id(), reply and reply.scope, reply and reply.key,
              reply and reply.request_hash, reply and now + reply.ttl, now, now - grace,
              paid_never, _PAID, int(app_settings.get("low_balance_threshold")),
              MAX_CREDITS)
    s = db.session()
    if s.in_transaction():
        if s.new or s.dirty or s.deleted:  # pragma: no cover - nothing on the API path writes first
            return None
        # End the session's implicit reads (the API key, settings on a cold cache: read just
        # above) before taking the pool connection, so a request never holds two: with every
        # pooled connection held by a request waiting for its second, all would wait out the
        # pool timeout (tests/api/test_pool.py: every API call on a pool of one).
        s.commit()
    conn = db.engine.raw_connection()  # from the pool (pinged first if it sat idle: services.core.db)
    pg = conn.driver_connection
    try:
        pg.autocommit = True  # the statement is its own transaction: no BEGIN, no COMMIT
        try:
            row = pg.execute(_SQL, params, prepare=True).fetchone()
        except psycopg.Error as err:
            if err.sqlstate in _RETRY_ELSEWHERE:
                return None
            raise DBAPIError.instance(_SQL, params, err, psycopg.Error) from err
    finally:
        if pg.broken or pg.closed:
            conn.invalidate()
        else:
            pg.autocommit = False
        conn.close()
    return {"entry_id": row[0], "credits": row[1], "balance": row[2]}


__all__ = ["Reply", "available", "debit", "REFUSED"]
