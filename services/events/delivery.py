"""Delivering the outbox to the product's endpoints (docs/webhooks.md, "Retries").

1. `dispatch`: each undispatched event becomes one delivery per enabled endpoint subscribed to
   its type (UNIQUE per event and endpoint), and is marked dispatched, in one transaction.
2. `deliver_due`: due pending deliveries are claimed (PostgreSQL `FOR UPDATE SKIP LOCKED`, and
   on every database a conditional update of `next_attempt_at`, which becomes the claim's lease),
   then POSTed outside any transaction, and the answer recorded: a 2xx is success; anything else
   is retried after BACKOFF until 3 days after the event (then the delivery is failed). An
   endpoint that has failed every delivery for 3 days is disabled.

`now` can be given (tests move time); the `webhook-timestamp` header is always the wall clock,
since receivers check it against theirs.
"""
from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import urllib3
from flask import current_app
from sqlalchemy import exists, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from models import OutboxEvent, WebhookAttempt, WebhookDelivery, WebhookEndpoint, db, utcnow
from services.core import audit
from services.core.db import atomic, is_sqlite
from services.core.errors import Conflict, NotFound
from services.core.paging import keyset
from services.events import endpoints, sender, signing, urls

log = logging.getLogger("creditdesk.events")

# Seconds to wait after the 1st, 2nd, ... failed attempt; the last repeats (Standard Webhooks'
# schedule): 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h, ... for RETRY_FOR after the event.
BACKOFF = (5, 300, 1800, 7200, 18000, 36000)
RETRY_FOR = timedelta(days=3)
DISABLE_AFTER = timedelta(days=3)
LEASE = timedelta(seconds=60)  # > the 10 s timeout: a live runner always records in time
DISPATCH_BATCH = 500


def backoff(attempts: int) -> timedelta:
    return timedelta(seconds=BACKOFF[min(max(attempts, 1), len(BACKOFF)) - 1])


# --- fan-out -------------------------------------------------------------------------------------

def dispatch(*, now: datetime | None = None) -> int:
    """Turn undispatched events into deliveries; returns how many events were dispatched."""
    total = 0
    while True:
        n = _dispatch_batch(now or utcnow())
        total += n
        if n < DISPATCH_BATCH:
            return total


def _dispatch_batch(now: datetime) -> int:
    try:
        with atomic() as s:
            q = (select(OutboxEvent.id, OutboxEvent.type)
                 .where(OutboxEvent.dispatched_at.is_(None))
                 .order_by(OutboxEvent.id).limit(DISPATCH_BATCH))
            if not is_sqlite(s):
                q = q.with_for_update(skip_locked=True)
            events = s.execute(q).all()
            if not events:
                return 0
            subscribed = s.execute(select(WebhookEndpoint.id, WebhookEndpoint.events).where(
                WebhookEndpoint.enabled.is_(True), WebhookEndpoint.deleted_at.is_(None))).all()
            rows = [dict(outbox_event_id=eid, endpoint_id=ep_id, status="pending", attempts=0,
                         next_attempt_at=now, created_at=now, updated_at=now)
                    for eid, type_ in events for ep_id, types in subscribed if type_ in types]
            if rows:
                s.execute(insert(WebhookDelivery.__table__), rows)
            s.execute(update(OutboxEvent.__table__)
                      .where(OutboxEvent.id.in_([e[0] for e in events]))
                      .values(dispatched_at=now))
            return len(events)
    except IntegrityError:
        # Another runner dispatched the same events first (SQLite has no SKIP LOCKED).
        return 0


# --- sending -------------------------------------------------------------------------------------

@dataclass
class Result:
    dispatched: int = 0
    attempted: int = 0
    succeeded: int = 0
    failed: int = 0  # attempts that failed (the delivery may still be retried)
    errors: list[str] = field(default_factory=list)

    def merge(self, other: Result) -> None:
        self.attempted += other.attempted
        self.succeeded += other.succeeded
        self.failed += other.failed
        self.errors += other.errors

    def as_dict(self) -> dict:
        return {"dispatched": self.dispatched, "attempted": self.attempted,
                "succeeded": self.succeeded, "failed": self.failed}


def has_work(now: datetime | None = None) -> bool:
    """Anything to dispatch or due to send (a scheduled tick with nothing to do records no run)."""
    now = now or utcnow()
    found = db.session.scalar(select(
        exists().where(OutboxEvent.dispatched_at.is_(None)) |
        exists().where(WebhookDelivery.status == "pending",
                       WebhookDelivery.next_attempt_at <= now)))
    db.session.rollback()
    return bool(found)


def run(*, now: datetime | None = None, max_deliveries: int = 1000,
        concurrency: int | None = None) -> Result:
    """One pass: dispatch, then send every due delivery (at most `max_deliveries`)."""
    now_ = now or utcnow()
    out = Result(dispatched=dispatch(now=now_))
    workers = concurrency or int(current_app.config.get("WEBHOOK_CONCURRENCY", 4))
    if is_sqlite():
        workers = 1  # one writer at a time anyway
    budget = _Budget(max_deliveries)
    if workers <= 1:
        out.merge(_drain(now, budget))
        return out
    app = current_app._get_current_object()

    def work(_: int) -> Result:
        with app.app_context():
            try:
                return _drain(now, budget)
            finally:
                db.session.remove()

    with ThreadPoolExecutor(workers, thread_name_prefix="webhooks") as pool:
        for r in pool.map(work, range(workers)):
            out.merge(r)
    return out


class _Budget:
    def __init__(self, left: int):
        self.left, self.lock = left, threading.Lock()

    def take(self) -> bool:
        with self.lock:
            if self.left <= 0:
                return False
            self.left -= 1
            return True


def _drain(now: datetime | None, budget: _Budget) -> Result:
    out = Result()
    while budget.take():
        delivery_id = claim(now=now or utcnow())
        if delivery_id is None:
            break
        try:
            ok = attempt(delivery_id, now=now)
        except Exception as err:  # noqa: BLE001 - one bad delivery must not stop the others
            log.exception("events.delivery_crashed", extra={"delivery_id": delivery_id})
            out.errors.append(f"delivery {delivery_id}: {type(err).__name__}: {err}")
            continue
        out.attempted += 1
        if ok:
            out.succeeded += 1
        else:
            out.failed += 1
    return out


def claim(*, now: datetime) -> int | None:
    """One due delivery of an enabled endpoint, leased to this runner until now + LEASE."""
    with atomic() as s:
        q = (select(WebhookDelivery.id, WebhookDelivery.next_attempt_at)
             .join(WebhookEndpoint, WebhookEndpoint.id == WebhookDelivery.endpoint_id)
             .where(WebhookDelivery.status == "pending", WebhookDelivery.next_attempt_at <= now,
                    WebhookEndpoint.enabled.is_(True), WebhookEndpoint.deleted_at.is_(None))
             .order_by(WebhookDelivery.next_attempt_at, WebhookDelivery.id).limit(5))
        if not is_sqlite(s):
            q = q.with_for_update(of=WebhookDelivery, skip_locked=True)
        for delivery_id, due in s.execute(q).all():
            won = s.execute(update(WebhookDelivery.__table__).where(
                WebhookDelivery.id == delivery_id, WebhookDelivery.status == "pending",
                WebhookDelivery.next_attempt_at == due).values(next_attempt_at=now + LEASE)).rowcount
            if won == 1:
                return delivery_id
    return None


@dataclass
class _Send:
    delivery_id: int
    attempts: int
    msg_id: str
    url: str
    secrets: list[str]
    payload: bytes


def _prepare(delivery_id: int, now: datetime) -> _Send:
    with atomic() as s:
        d = s.get(WebhookDelivery, delivery_id)
        event = s.get(OutboxEvent, d.outbox_event_id)
        ep = s.get(WebhookEndpoint, d.endpoint_id)
        return _Send(delivery_id=d.id, attempts=d.attempts, msg_id=event.event_id, url=ep.url,
                     secrets=endpoints.signing_secrets(ep, now), payload=signing.body(event))


def attempt(delivery_id: int, *, now: datetime | None = None) -> bool:
    """POST a claimed delivery once and record the answer; True on a 2xx."""
    send = _prepare(delivery_id, now or utcnow())
    status, body, error = None, None, None
    started = time.monotonic()
    try:
        target = urls.target(send.url)
        answer = sender.post(target, signing.headers(send.secrets, send.msg_id, int(time.time()),
                                                     send.payload), send.payload)
        status, body = answer.status, answer.body
        if not 200 <= status < 300:
            error = f"HTTP {status}"
    except urls.UnsafeUrl as err:
        error = str(err)
    except urllib3.exceptions.HTTPError as err:
        error = f"{type(err).__name__}: {err}"[:500]
    duration_ms = int((time.monotonic() - started) * 1000)
    if error is None and duration_ms > sender.TIMEOUT_SECONDS * 1000:
        error = f"answered after {duration_ms} ms (more than {sender.TIMEOUT_SECONDS} s)"
    record(send, now=now or utcnow(), status=status, body=body, error=error,
           duration_ms=duration_ms)
    return error is None


def record(send: _Send, *, now: datetime, status: int | None, body: str | None,
           error: str | None, duration_ms: int) -> None:
    """The attempt, the delivery's new state and the endpoint's health, in one transaction."""
    with atomic() as s:
        d = s.scalar(select(WebhookDelivery).where(WebhookDelivery.id == send.delivery_id)
                     .with_for_update().execution_options(populate_existing=True))
        if d.status != "pending" or d.attempts != send.attempts:
            return  # recorded by a runner that took over after our lease ran out
        ep = s.scalar(select(WebhookEndpoint).where(WebhookEndpoint.id == d.endpoint_id)
                      .with_for_update().execution_options(populate_existing=True))
        event_at = s.scalar(select(OutboxEvent.created_at)
                            .where(OutboxEvent.id == d.outbox_event_id))
        s.add(WebhookAttempt(delivery_id=d.id, attempted_at=now, status_code=status,
                             duration_ms=duration_ms, error=error, response_body=body))
        d.attempts, d.last_status_code, d.last_error, d.updated_at = \
            d.attempts + 1, status, error, now
        if error is None:
            d.status, d.delivered_at, d.next_attempt_at = "succeeded", now, None
            ep.failing_since = None
            log.info("events.delivered", extra={"delivery_id": d.id, "attempts": d.attempts})
            return
        deadline = event_at + RETRY_FOR
        nxt = now + backoff(d.attempts)
        if nxt > deadline:  # one last try at the deadline, then failed
            nxt = deadline if now < deadline - LEASE else None
        d.status = "pending" if nxt else "failed"
        d.next_attempt_at = nxt
        ep.failing_since = ep.failing_since or now
        log.info("events.attempt_failed", extra={"delivery_id": d.id, "attempts": d.attempts,
                                                 "error": error, "status": d.status})
        # Disabled when it has failed everything for 3 days: by the clock, or because a delivery
        # ran out of its 3 days of retries with no success anywhere since its first try.
        s.flush()
        first_try = s.scalar(select(func.min(WebhookAttempt.attempted_at))
                             .where(WebhookAttempt.delivery_id == d.id))
        if ep.enabled and (ep.failing_since <= now - DISABLE_AFTER or
                           (d.status == "failed" and ep.failing_since <= first_try)):
            endpoints.disable(s, ep, reason=f"every delivery failed for "
                              f"{DISABLE_AFTER.days} days (last: {error})"[:200], now=now)


# --- the page --------------------------------------------------------------------------------

def deliveries(*, endpoint_id: int, cursor: int | None = None,
               limit: int = 50) -> tuple[list[WebhookDelivery], int | None]:
    """An endpoint's deliveries, newest first (keyset by id)."""
    q = select(WebhookDelivery).where(WebhookDelivery.endpoint_id == endpoint_id)
    return keyset(q, WebhookDelivery.id, cursor=cursor, limit=limit)


def events_of(rows: list[WebhookDelivery]) -> dict[int, OutboxEvent]:
    ids = {d.outbox_event_id for d in rows}
    if not ids:
        return {}
    return {e.id: e for e in db.session.scalars(select(OutboxEvent).where(OutboxEvent.id.in_(ids)))}


def attempts_of(rows: list[WebhookDelivery]) -> dict[int, list[WebhookAttempt]]:
    out: dict[int, list[WebhookAttempt]] = {d.id: [] for d in rows}
    if out:
        for a in db.session.scalars(select(WebhookAttempt).where(
                WebhookAttempt.delivery_id.in_(list(out))).order_by(WebhookAttempt.id)):
            out[a.delivery_id].append(a)
    return out


def get_delivery(delivery_id: int) -> WebhookDelivery:
    d = db.session.get(WebhookDelivery, delivery_id)
    if d is None:
        raise NotFound(f"No webhook delivery {delivery_id}.")
    return d


def resend(*, delivery_id: int, staff, ip: str | None = None) -> WebhookDelivery:
    """Send one delivery again at the next run (a few seconds), whatever its state; audited."""
    with atomic() as s:
        d = s.scalar(select(WebhookDelivery).where(WebhookDelivery.id == delivery_id)
                     .with_for_update().execution_options(populate_existing=True))
        if d is None:
            raise NotFound(f"No webhook delivery {delivery_id}.")
        ep = s.get(WebhookEndpoint, d.endpoint_id)
        if ep.deleted_at is not None or not ep.enabled:
            raise Conflict("This endpoint is disabled or deleted: enable it before resending.")
        before = {"status": d.status, "attempts": d.attempts}
        now = utcnow()
        d.status, d.next_attempt_at, d.updated_at = "pending", now, now
        audit.record(action="webhook_deliveries.resend", staff=staff,
                     target_type="webhook_delivery", target_id=d.id, before=before,
                     after={"status": "pending", "endpoint_id": ep.id}, ip=ip)
    return d
