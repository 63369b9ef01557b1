"""Replaying a stored webhook event from the dashboard: payment providers' and the product's.

Separate from services.payments.webhooks (receiving) and services.payments.customer_sync (the
product's lifecycle events), which it both uses, so that neither has to import the other.
"""
from __future__ import annotations

import logging

from models import WebhookEvent, db
from services.core import audit
from services.core.db import atomic
from services.core.errors import Conflict, NotFound, ServiceError
from services.payments import customer_sync, webhooks

log = logging.getLogger("creditdesk.webhooks")


def replay(event_id: int, *, staff=None, ip: str | None = None) -> webhooks.Outcome:
    """Process a stored event again (one that failed or still waits); finished ones stay as they are.

    `event_id` is our row id. The payload was signature-checked when it arrived, so it is not
    checked again; the ledger keys still make a second credit of one payment impossible.
    """
    ev = db.session.get(WebhookEvent, event_id)
    if ev is None:
        raise NotFound(f"No webhook event {event_id}.")
    if ev.status in webhooks.FINISHED:
        raise Conflict(f"Event {ev.event_id} is already {ev.status}; there is nothing to replay.")
    before = ev.status
    try:
        if ev.provider == "customers":
            try:
                result = customer_sync.apply_event(ev.id, customer_sync.parse_event(ev.payload.encode()))
                outcome = webhooks.Outcome("customers", ev.event_id, ev.type, result.status)
            except ServiceError as err:
                webhooks.mark_failed(ev.id, str(err))
                outcome = webhooks.Outcome("customers", ev.event_id, ev.type, "failed", error=str(err))
        else:
            outcome = webhooks.process(ev.id, webhooks.parse_json(ev.payload.encode()))
    except ServiceError as err:  # an unreadable payload
        webhooks.mark_failed(ev.id, str(err))
        outcome = webhooks.Outcome(ev.provider, ev.event_id, ev.type, "failed", error=str(err))
    with atomic():
        audit.record(action="webhook.replay", staff=staff, target_type="webhook_event",
                     target_id=event_id, before={"status": before},
                     after={"status": outcome.status, "error": outcome.error}, ip=ip)
    log.info("webhooks.replayed", extra={"provider": ev.provider, "event_id": ev.event_id,
                                          "status": outcome.status})
    return outcome
