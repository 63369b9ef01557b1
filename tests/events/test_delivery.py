"""Delivery over real HTTP: Standard Webhooks signatures, retries with the same webhook-id,
backoff and the 3-day limit, disabling a failing endpoint, rotation."""
from __future__ import annotations

import json
from datetime import timedelta

import pytest
from sqlalchemy import func, select
from standardwebhooks.webhooks import WebhookVerificationError

from models import AuditLog, OutboxEvent, WebhookAttempt, WebhookDelivery, db, utcnow
from services.events import delivery, endpoints
from tests.events.helpers import deliver, endpoint


def test_a_grant_arrives_signed_and_verifies_with_standardwebhooks(local_app, make, receiver):
    created = endpoint(receiver.url, events=["grant.created"])
    c = make.customer(external_id="user-42")
    g = make.grant(c, credits=250, expires_in_days=30)

    out = deliver()

    assert (out.dispatched, out.succeeded) == (1, 1)
    [req] = receiver.requests
    assert req.path == "/hooks"
    assert req.headers["webhook-id"].startswith("msg_")
    assert req.headers["webhook-signature"].startswith("v1,")
    doc = receiver.verify(created.secret, req)
    assert doc["type"] == "grant.created"
    assert doc["timestamp"].endswith("Z")
    assert doc["data"] == {"grant_id": g.id, "credits": 250, "source": "promo",
                           "expires_at": g.expires_at.isoformat(timespec="microseconds") + "Z",
                           "external_id": "user-42"}
    event = db.session.scalar(select(OutboxEvent))
    assert req.headers["webhook-id"] == event.event_id
    with pytest.raises(WebhookVerificationError):
        receiver.verify(endpoints.signing.new_secret(), req)


def test_unsubscribed_events_are_not_sent(local_app, make, receiver):
    endpoint(receiver.url, events=["task.finished"])
    make.customer(credits=10)  # a grant.created
    assert deliver().attempted == 0
    assert receiver.requests == []
    assert db.session.scalar(select(OutboxEvent.dispatched_at)) is not None


def test_500_twice_then_200_same_id_three_times_delivered_once(local_app, make, receiver):
    created = endpoint(receiver.url)
    receiver.answers = [500, 500]
    make.customer(credits=10)
    t0 = utcnow()

    deliver(now=t0)
    d = db.session.scalar(select(WebhookDelivery))
    assert (d.status, d.attempts, d.last_status_code) == ("pending", 1, 500)
    assert d.next_attempt_at == t0 + timedelta(seconds=5)
    assert deliver(now=t0 + timedelta(seconds=4)).attempted == 0  # not due yet
    deliver(now=t0 + timedelta(seconds=5))
    d = db.session.get(WebhookDelivery, d.id)
    assert d.next_attempt_at == t0 + timedelta(seconds=5) + timedelta(minutes=5)
    deliver(now=t0 + timedelta(minutes=6))
    assert deliver(now=t0 + timedelta(days=1)).attempted == 0  # delivered: nothing more

    assert len(receiver.requests) == 3
    assert len({r.headers["webhook-id"] for r in receiver.requests}) == 1
    assert len({r.body for r in receiver.requests}) == 1  # the same bytes every time
    for r in receiver.requests:
        receiver.verify(created.secret, r)
    d = db.session.get(WebhookDelivery, d.id)
    assert (d.status, d.attempts, d.last_status_code) == ("succeeded", 3, 200)
    assert db.session.scalar(select(func.count()).select_from(WebhookDelivery)) == 1
    codes = db.session.scalars(select(WebhookAttempt.status_code).order_by(WebhookAttempt.id)).all()
    assert codes == [500, 500, 200]
    assert db.session.scalar(select(WebhookAttempt.response_body)
                             .order_by(WebhookAttempt.id.desc()).limit(1)) == "answered 200"


def test_backoff_schedule():
    assert [delivery.backoff(n).total_seconds() for n in range(1, 9)] == \
        [5, 300, 1800, 7200, 18000, 36000, 36000, 36000]


def test_failing_three_days_fails_the_delivery_and_disables_the_endpoint(local_app, make,
                                                                          receiver):
    created = endpoint(receiver.url)
    receiver.answers = [503] * 100
    make.customer(credits=10)
    t0 = utcnow()
    now = t0
    for _ in range(30):  # walk the schedule (time injected, no sleeping)
        deliver(now=now)
        d = db.session.scalar(select(WebhookDelivery))
        if d.next_attempt_at is None:
            break
        now = d.next_attempt_at
    assert d.status == "failed"
    # now, 5 s, 5 min, 30 min, 2 h, 5 h, then every 10 h up to 67.6 h, and once at the deadline
    assert d.attempts == 13
    event_at = db.session.scalar(select(OutboxEvent.created_at))
    last = db.session.scalar(select(func.max(WebhookAttempt.attempted_at)))
    assert last == event_at + timedelta(days=3)
    ep = endpoints.get(created.endpoint.id)
    assert ep.enabled is False and "3 days" in ep.disabled_reason
    assert ep.disabled_at == last
    assert db.session.scalar(select(AuditLog.action).where(
        AuditLog.target_id == str(ep.id), AuditLog.action == "webhook_endpoints.disabled"))
    # A new event is not sent to a disabled endpoint.
    before = len(receiver.requests)
    make.customer(credits=5)
    deliver(now=now + timedelta(hours=1))
    assert len(receiver.requests) == before


def test_a_success_resets_failing_since(local_app, make, receiver):
    created = endpoint(receiver.url)
    receiver.answers = [500]
    make.customer(credits=10)
    t0 = utcnow()
    deliver(now=t0)
    assert endpoints.get(created.endpoint.id).failing_since == t0
    deliver(now=t0 + timedelta(seconds=5))
    assert endpoints.get(created.endpoint.id).failing_since is None


def test_rotation_both_signatures_verify_during_the_overlap(local_app, make, receiver):
    created = endpoint(receiver.url)
    rotated = endpoints.rotate(endpoint_id=created.endpoint.id)
    make.customer(credits=10)
    deliver()
    [req] = receiver.requests
    assert len(req.headers["webhook-signature"].split(" ")) == 2
    assert receiver.verify(created.secret, req)["type"] == "grant.created"
    assert receiver.verify(rotated.secret, req)["type"] == "grant.created"

    # After 24 h only the new secret signs.
    make.customer(credits=10)
    deliver(now=utcnow() + timedelta(hours=24, seconds=1))
    last = receiver.requests[-1]
    assert len(last.headers["webhook-signature"].split(" ")) == 1
    receiver.verify(rotated.secret, last)
    with pytest.raises(WebhookVerificationError):
        receiver.verify(created.secret, last)


def test_body_is_deterministic_from_the_outbox_row(local_app, make):
    make.customer(credits=10)
    event = db.session.scalar(select(OutboxEvent))
    body = delivery.signing.body(event)
    db.session.expire_all()
    assert delivery.signing.body(db.session.get(OutboxEvent, event.id)) == body
    assert json.loads(body)["data"]["credits"] == 10
