"""Reading received webhook events for the dashboard: filters, keyset paging, one event.

Receiving and processing them is services/webhooks.py.
"""
from __future__ import annotations

import json
from dataclasses import dataclass

from sqlalchemy import select

from models import WebhookEvent, db
from services.core.errors import NotFound
from services.core.paging import keyset

PROVIDERS = ("stripe", "razorpay", "customers")
STATUSES = ("received", "processed", "failed", "ignored")


@dataclass
class EventPage:
    rows: list[WebhookEvent]
    next_before: int | None


def search(*, provider: str = "", status: str = "", type: str = "", q: str = "",
           before_id: int | None = None, limit: int = 50) -> EventPage:
    """Events newest first, filtered by provider, status, type (prefix) and provider event id."""
    stmt = select(WebhookEvent)
    if provider in PROVIDERS:
        stmt = stmt.where(WebhookEvent.provider == provider)
    if status in STATUSES:
        stmt = stmt.where(WebhookEvent.status == status)
    if type:
        stmt = stmt.where(WebhookEvent.type.startswith(type.strip(), autoescape=True))
    if q:
        stmt = stmt.where(WebhookEvent.event_id == q.strip())
    return EventPage(*keyset(stmt, WebhookEvent.id, cursor=before_id, limit=limit))


def get(event_id: int) -> WebhookEvent:
    event = db.session.get(WebhookEvent, event_id)
    if event is None:
        raise NotFound(f"No webhook event {event_id}.")
    return event


def types() -> list[str]:
    return sorted(db.session.scalars(select(WebhookEvent.type).distinct()))


def pretty(payload: str | None) -> str:
    """The payload as indented JSON when it parses, else as received (escaped by the template)."""
    if not payload:
        return ""
    try:
        return json.dumps(json.loads(payload), indent=2, sort_keys=True, ensure_ascii=False)
    except (ValueError, TypeError):
        return payload
