"""The product's webhook endpoints: create, list, delete, rotate the secret, enable again.

Admins manage them on the "Webhooks out" page and the product through the API (scope
`webhooks:write`); every change is audited. The plain signing secret is returned by `create` and
`rotate` only (it is stored, since every delivery is signed with it, but never listed).
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select, update

from models import WebhookDelivery, WebhookEndpoint, db, utcnow
from services.core import audit
from services.core.db import atomic
from services.core.errors import NotFound, ValidationFailed
from services.core.paging import keyset
from services.events import signing, urls
from services.events.outbox import EVENT_TYPES

ROTATION_OVERLAP = timedelta(hours=24)
MAX_DESCRIPTION = 200


@dataclass
class Created:
    endpoint: WebhookEndpoint
    secret: str  # shown once


def _events(events) -> list[str]:
    if not isinstance(events, (list, tuple)) or not events:
        raise ValidationFailed("Choose at least one event type.",
                               details={"events": "at least one event type"})
    unknown = [e for e in events if e not in EVENT_TYPES]
    if unknown:
        raise ValidationFailed(f"Unknown event type(s): {', '.join(map(str, unknown))}.",
                               details={"events": f"unknown: {', '.join(map(str, unknown))}; "
                                                  f"one of {', '.join(EVENT_TYPES)}"})
    return [e for e in EVENT_TYPES if e in events]  # the documented order, no duplicates


def _who(staff, actor: str | None) -> dict:
    return {"staff": staff, "actor": actor}


def create(*, url: str, events: list[str], description: str = "", staff=None,
           actor: str | None = None, ip: str | None = None) -> Created:
    """A new enabled endpoint with a fresh secret (422 for a bad or private URL, bad events)."""
    url = (url or "").strip()
    urls.check(url)
    chosen = _events(events)
    description = (description or "").strip()
    if len(description) > MAX_DESCRIPTION:
        raise ValidationFailed(f"The description is at most {MAX_DESCRIPTION} characters.",
                               details={"description": "too long"})
    secret = signing.new_secret()
    with atomic() as s:
        ep = WebhookEndpoint(url=url, events=chosen, description=description, secret=secret,
                             enabled=True)
        s.add(ep)
        s.flush()
        audit.record(action="webhook_endpoints.create", target_type="webhook_endpoint",
                     target_id=ep.id, after={"url": url, "events": chosen}, ip=ip,
                     **_who(staff, actor))
    return Created(endpoint=ep, secret=secret)


def get(endpoint_id: int) -> WebhookEndpoint:
    ep = db.session.get(WebhookEndpoint, endpoint_id)
    if ep is None or ep.deleted_at is not None:
        raise NotFound(f"No webhook endpoint {endpoint_id}.")
    return ep


def _locked(s, endpoint_id: int) -> WebhookEndpoint:
    ep = s.scalar(select(WebhookEndpoint).where(WebhookEndpoint.id == endpoint_id)
                  .with_for_update().execution_options(populate_existing=True))
    if ep is None or ep.deleted_at is not None:
        raise NotFound(f"No webhook endpoint {endpoint_id}.")
    return ep


def page(*, cursor: int | None = None, limit: int = 50) -> tuple[list[WebhookEndpoint], int | None]:
    """Endpoints newest first (keyset by id), deleted ones left out."""
    q = select(WebhookEndpoint).where(WebhookEndpoint.deleted_at.is_(None))
    return keyset(q, WebhookEndpoint.id, cursor=cursor, limit=limit)


def disabled() -> list[WebhookEndpoint]:
    """Endpoints disabled after failing (what the overview shows admins)."""
    return list(db.session.scalars(
        select(WebhookEndpoint).where(WebhookEndpoint.deleted_at.is_(None),
                                      WebhookEndpoint.enabled.is_(False))
        .order_by(WebhookEndpoint.disabled_at.desc()).limit(20)))


def _stop_pending(s, endpoint_id: int, reason: str, now: datetime) -> None:
    """Pending deliveries of an endpoint that will not be sent any more: failed, with the reason."""
    s.execute(update(WebhookDelivery).where(WebhookDelivery.endpoint_id == endpoint_id,
                                            WebhookDelivery.status == "pending")
              .values(status="failed", next_attempt_at=None, last_error=reason, updated_at=now)
              .execution_options(synchronize_session=False))


def delete(*, endpoint_id: int, staff=None, actor: str | None = None,
           ip: str | None = None) -> WebhookEndpoint:
    """Remove an endpoint: nothing more is sent to it; its delivery history is kept."""
    with atomic() as s:
        ep = _locked(s, endpoint_id)
        now = utcnow()
        ep.deleted_at, ep.enabled, ep.updated_at = now, False, now
        _stop_pending(s, ep.id, "endpoint deleted", now)
        audit.record(action="webhook_endpoints.delete", target_type="webhook_endpoint",
                     target_id=ep.id, before={"url": ep.url}, ip=ip, **_who(staff, actor))
    return ep


def rotate(*, endpoint_id: int, staff=None, actor: str | None = None, ip: str | None = None,
           now: datetime | None = None) -> Created:
    """A new secret; the current one keeps signing alongside for 24 h (both signatures sent)."""
    with atomic() as s:
        ep = _locked(s, endpoint_id)
        now = now or utcnow()
        secret = signing.new_secret()
        ep.previous_secret, ep.previous_secret_expires_at = ep.secret, now + ROTATION_OVERLAP
        ep.secret, ep.updated_at = secret, now
        audit.record(action="webhook_endpoints.rotate_secret", target_type="webhook_endpoint",
                     target_id=ep.id, after={"previous_secret_expires_at":
                                             ep.previous_secret_expires_at.isoformat()},
                     ip=ip, **_who(staff, actor))
    return Created(endpoint=ep, secret=secret)


def enable(*, endpoint_id: int, staff, ip: str | None = None) -> WebhookEndpoint:
    """Enable a disabled endpoint again (new events are delivered; resend the ones it missed)."""
    with atomic() as s:
        ep = _locked(s, endpoint_id)
        before = {"enabled": ep.enabled, "disabled_reason": ep.disabled_reason}
        now = utcnow()
        ep.enabled, ep.disabled_at, ep.disabled_reason = True, None, None
        ep.failing_since, ep.updated_at = None, now
        audit.record(action="webhook_endpoints.enable", staff=staff, target_type="webhook_endpoint",
                     target_id=ep.id, before=before, after={"enabled": True}, ip=ip)
    return ep


def disable(s, ep: WebhookEndpoint, *, reason: str, now: datetime) -> None:
    """Inside the caller's transaction (endpoint locked): stop delivering to it, audited."""
    ep.enabled, ep.disabled_at, ep.disabled_reason, ep.updated_at = False, now, reason, now
    _stop_pending(s, ep.id, f"endpoint disabled: {reason}", now)
    audit.record(action="webhook_endpoints.disabled", actor="system",
                 target_type="webhook_endpoint", target_id=ep.id,
                 after={"reason": reason, "failing_since": ep.failing_since.isoformat()
                        if ep.failing_since else None})


def signing_secrets(ep: WebhookEndpoint, now: datetime) -> list[str]:
    """The secrets that sign now: the current one, and the previous one during its overlap."""
    out = [ep.secret]
    if ep.previous_secret and ep.previous_secret_expires_at and \
            ep.previous_secret_expires_at > now:
        out.append(ep.previous_secret)
    return out
