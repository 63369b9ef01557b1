"""Stored replies of money-moving API calls, keyed by (scope, Idempotency-Key).

A call claims its key with an INSERT in its own short transaction before it runs, so that a
concurrent duplicate sees the claim (409 IDEMPOTENCY_KEY_IN_USE) instead of running twice. The
reply is stored after the call; a retry with the same key and body gets it back, one with another
body is refused (409 IDEMPOTENCY_KEY_REUSED). Records live at least `ttl` (24 h by default).
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import DateTime, bindparam, delete, select, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from models import IdempotencyRecord, db, utcnow
from services.core.db import atomic, defer, driver, run
from services.core.errors import IdempotencyConflict, IdempotencyInUse

TTL = timedelta(hours=24)
# A claim older than this whose reply was never stored (the process died) may be taken over.
# The ledger's own idempotency keys still make the re-run a replay of any movement it made.
LEASE = timedelta(minutes=5)


@dataclass(frozen=True)
class Claim:
    """Either a fresh claim (record_id, run the call) or a stored reply to replay."""

    record_id: int | None = None
    status: int | None = None
    body: dict | None = None

    @property
    def replay(self) -> bool:
        return self.record_id is None


def request_hash(body: object, path_args: dict | None = None) -> str:
    """sha256 of the canonical JSON body and the path arguments."""
    blob = json.dumps({"body": body, "args": path_args or {}}, sort_keys=True,
                      separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(blob.encode("utf-8", "surrogatepass")).hexdigest()


def _answer(rec: IdempotencyRecord, h: str) -> Claim:
    if rec.request_hash != h:
        raise IdempotencyConflict(f"Idempotency key {rec.key!r} was already used for a different "
                                  "request; use a new key for a new request.")
    if rec.status != "completed":
        raise IdempotencyInUse(f"A request with idempotency key {rec.key!r} is still being "
                               "processed; retry shortly.")
    return Claim(status=rec.response_status, body=rec.response_body)


def claim(*, scope: str, key: str, request_hash: str, ttl: timedelta = TTL,
          lease: timedelta = LEASE) -> Claim:
    """Claim (scope, key) for this request, or return the stored reply; raises 409s."""
    for _ in range(3):
        now = utcnow()
        try:
            with atomic() as s:
                rec = s.scalar(select(IdempotencyRecord).where(
                    IdempotencyRecord.scope == scope, IdempotencyRecord.key == key)
                    .with_for_update().execution_options(populate_existing=True))
                if rec is None:
                    rec = IdempotencyRecord(scope=scope, key=key, request_hash=request_hash,
                                            status="in_progress", created_at=now,
                                            expires_at=now + ttl)
                    s.add(rec)
                    s.flush()
                    return Claim(record_id=rec.id)
                if rec.expires_at <= now:
                    # An expired record is as good as absent: reuse its row for this request.
                    rec.request_hash, rec.status, rec.created_at = request_hash, "in_progress", now
                    rec.expires_at, rec.response_status, rec.response_body = now + ttl, None, None
                    return Claim(record_id=rec.id)
                if (rec.status == "in_progress" and rec.request_hash == request_hash
                        and rec.created_at <= now - lease):
                    rec.created_at = now  # abandoned claim: take it over
                    return Claim(record_id=rec.id)
                return _answer(rec, request_hash)
        except IntegrityError:
            continue  # another request inserted the same key first: read what it claimed
    with atomic() as s:
        rec = s.scalar(select(IdempotencyRecord).where(IdempotencyRecord.scope == scope,
                                                       IdempotencyRecord.key == key))
        if rec is None:  # pragma: no cover - only if a cleanup raced three inserts
            raise IdempotencyInUse("The idempotency key is busy; retry shortly.")
        return _answer(rec, request_hash)


# Built once: a debit spends no time composing (or compiling) SQL. Same text on both databases.
_CLAIM = text(
    "INSERT INTO idempotency_records (scope, key, request_hash, status, created_at, expires_at) "
    "VALUES (:p_scope, :p_key, :p_hash, 'in_progress', :p_now, :p_expires) "
    "ON CONFLICT (scope, key) DO NOTHING RETURNING id"
).bindparams(bindparam("p_now", type_=DateTime), bindparam("p_expires", type_=DateTime))
_PG_CLAIM = (
    "INSERT INTO idempotency_records (scope, key, request_hash, status, created_at, expires_at) "
    "VALUES (%(p_scope)s, %(p_key)s, %(p_hash)s, 'in_progress', %(p_now)s, %(p_expires)s) "
    "ON CONFLICT (scope, key) DO NOTHING RETURNING id")
_PG_COMPLETE = ("UPDATE idempotency_records SET status = 'completed', response_status = %(p_status)s, "
                "response_body = %(p_body)s::json WHERE id = %(p_id)s")
_T = IdempotencyRecord.__table__
_COMPLETE = update(_T).where(_T.c.id == bindparam("p_id")).values(
    status="completed", response_status=bindparam("p_status"), response_body=bindparam("p_body"))


def claim_in(s: Session, *, scope: str, key: str, request_hash: str, ttl: timedelta = TTL,
             lease: timedelta = LEASE) -> Claim:
    """claim() inside the caller's transaction, so the call and its stored reply commit together.

    INSERT ... ON CONFLICT DO NOTHING: a concurrent first call with the same key makes this one
    wait for its commit and then replay its reply (or take the key over if it rolled back).
    """
    now = utcnow()
    params = {"p_scope": scope, "p_key": key, "p_hash": request_hash, "p_now": now,
              "p_expires": now + ttl}
    pg = driver(s)
    if pg is not None:  # straight through the driver: this runs on every money-moving call
        with pg.pipeline():  # the transaction's BEGIN, when it is the first statement, goes with it
            cur = run(pg, _PG_CLAIM, params)
        row = cur.fetchone()
        rid = row[0] if row else None
    else:
        rid = s.execute(_CLAIM, params).scalar()
    if rid is not None:
        return Claim(record_id=rid)
    rec = s.scalar(select(IdempotencyRecord).where(
        IdempotencyRecord.scope == scope, IdempotencyRecord.key == key)
        .with_for_update().execution_options(populate_existing=True))
    if rec is None:  # pragma: no cover - only if a cleanup deleted it in between
        raise IdempotencyInUse("The idempotency key is busy; retry shortly.")
    if rec.expires_at <= now:
        rec.request_hash, rec.status, rec.created_at = request_hash, "in_progress", now
        rec.expires_at, rec.response_status, rec.response_body = now + ttl, None, None
        return Claim(record_id=rec.id)
    if rec.status == "in_progress" and rec.request_hash == request_hash and rec.created_at <= now - lease:
        rec.created_at = now  # abandoned claim of a two-transaction call: take it over
        return Claim(record_id=rec.id)
    return _answer(rec, request_hash)


def complete_in(s: Session, *, record_id: int, status: int, body: dict, raw: str | None = None) -> None:
    """complete() inside the caller's transaction; on PostgreSQL sent with its COMMIT.
    `raw`: `body` as JSON text already (the reply as sent), stored as it is."""
    if s.get_bind().dialect.name == "postgresql":
        params = {"p_id": record_id, "p_status": status, "p_body": raw or json.dumps(body)}
        if not defer(s, _PG_COMPLETE, params):
            run(driver(s), _PG_COMPLETE, params)
    else:
        s.execute(_COMPLETE, {"p_id": record_id, "p_status": status, "p_body": body})


def remember(*, scope: str, key: str, request_hash: str, status: int, body: dict,
             ttl: timedelta = TTL) -> None:
    """Store a final answer whose call was rolled back (402...), unless another is stored."""
    now = utcnow()
    table = IdempotencyRecord.__table__
    with atomic() as s:
        ins = pg_insert if s.get_bind().dialect.name == "postgresql" else sqlite_insert
        s.execute(ins(table).values(
            scope=scope, key=key, request_hash=request_hash, status="completed", created_at=now,
            expires_at=now + ttl, response_status=status, response_body=body)
            .on_conflict_do_nothing(index_elements=["scope", "key"]))


def complete(*, record_id: int, status: int, body: dict) -> None:
    """Store the reply of a claimed call so that retries replay it."""
    with atomic() as s:
        s.execute(update(IdempotencyRecord).where(IdempotencyRecord.id == record_id).values(
            status="completed", response_status=status, response_body=body)
            .execution_options(synchronize_session=False))


def release(*, record_id: int) -> None:
    """Forget a claim whose call did not run to a final answer, so that a retry can run."""
    with atomic() as s:
        s.execute(delete(IdempotencyRecord).where(IdempotencyRecord.id == record_id,
                                                  IdempotencyRecord.status == "in_progress")
                  .execution_options(synchronize_session=False))


def cleanup(*, now=None, batch: int = 5000) -> int:
    """Delete expired records (in batches); returns how many went."""
    now = now or utcnow()
    total = 0
    while True:
        with atomic() as s:
            ids = list(s.scalars(select(IdempotencyRecord.id)
                                 .where(IdempotencyRecord.expires_at <= now).limit(batch)))
            if not ids:
                return total
            s.execute(delete(IdempotencyRecord).where(IdempotencyRecord.id.in_(ids))
                      .execution_options(synchronize_session=False))
            total += len(ids)


def get(*, scope: str, key: str) -> IdempotencyRecord | None:
    return db.session.scalar(select(IdempotencyRecord).where(IdempotencyRecord.scope == scope,
                                                             IdempotencyRecord.key == key))


__all__ = ["Claim", "claim", "claim_in", "complete", "complete_in", "remember", "release", "cleanup",
           "request_hash", "get", "TTL", "LEASE"]
