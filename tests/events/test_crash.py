"""A crash between the ledger change and the delivery loses nothing: a live server grants
credits (the event is committed with the grant) and is killed before anything is delivered; a
restarted server's scheduler (deliver_webhooks, leader rule) delivers the event."""
from __future__ import annotations

import os
import signal
import time

from sqlalchemy import select

from models import OutboxEvent, WebhookDelivery, db
from tests.events.helpers import endpoint
from tests.live import bearer


def _wait_for(cond, seconds: float = 60.0) -> bool:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.2)
    return False


def test_killed_after_the_grant_restarted_delivers_it(local_app, live, make, receiver):
    created = endpoint(receiver.url, events=["grant.created"])
    c = make.customer(external_id="crash-1")
    _, key = make.api_key(scopes=["grants:write"])
    db.session.commit()

    first = live(workers=1)  # no scheduler: nothing delivers
    resp = first.post("/api/v1/customers/crash-1/grants",
                      headers=bearer(key, **{"Idempotency-Key": "crash-grant-1"}),
                      json={"credits": 75, "source": "promo", "reason": "crash test"})
    assert resp.status_code == 201, resp.text
    os.killpg(first.proc.pid, signal.SIGKILL)  # the crash
    first.proc.wait(10)
    assert receiver.requests == []
    db.session.expire_all()
    event = db.session.scalar(select(OutboxEvent).where(OutboxEvent.customer_id == c.id))
    assert event is not None and event.dispatched_at is None

    second = live(workers=1, SCHEDULER_ENABLED="1", JOBS_LEADER_RETRY_SECONDS="1")
    assert _wait_for(lambda: len(receiver.requests) >= 1), second.log()[-3000:]
    [req] = receiver.requests[:1]
    doc = receiver.verify(created.secret, req)
    assert req.headers["webhook-id"] == event.event_id
    assert doc["data"]["credits"] == 75 and doc["data"]["external_id"] == "crash-1"

    def delivered():
        db.session.rollback()  # a fresh snapshot
        return db.session.scalar(select(WebhookDelivery.status)) == "succeeded"
    assert _wait_for(delivered, 20), (db.session.scalars(select(WebhookDelivery)).all(),
                                      second.log()[-3000:])
    second.stop()
    assert len(receiver.requests) == 1
