"""Webhook events: what Stripe, Razorpay and the product sent, what became of it, and replay."""
from __future__ import annotations

from flask import Blueprint, url_for
from flask_login import current_user

from dashboard import htmx
from dashboard.auth import require
from dashboard.respond import changed, client_ip, int_arg, list_page, refused, str_arg
from services.core.errors import ServiceError
from services.payments import replay as replay_service
from services.payments import webhook_events

bp = Blueprint("webhooks", __name__, url_prefix="/webhooks")
PAGE = 50


def _filters() -> dict:
    provider, status = str_arg("provider", 16), str_arg("status", 16)
    return {"provider": provider if provider in webhook_events.PROVIDERS else "",
            "status": status if status in webhook_events.STATUSES else "",
            "type": str_arg("type", 64), "q": str_arg("q", 128)}


@bp.get("/")
@require("webhooks.view")
def index():
    f, before = _filters(), int_arg("before")
    page = webhook_events.search(**f, before_id=before, limit=PAGE)
    return list_page("webhooks/index.html", before, f=f, events=page.rows,
                     next_before=page.next_before, types=webhook_events.types(),
                     providers=webhook_events.PROVIDERS, statuses=webhook_events.STATUSES)


@bp.get("/<int:event_id>")
@require("webhooks.view")
def detail(event_id: int):
    event = webhook_events.get(event_id)
    return htmx.render("webhooks/detail.html", None, event=event,
                       payload=webhook_events.pretty(event.payload))


@bp.post("/<int:event_id>/replay")
@require("webhooks.replay")
def replay(event_id: int):
    webhook_events.get(event_id)  # a guessed id is a 404
    back = url_for("webhooks.detail", event_id=event_id)
    try:
        outcome = replay_service.replay(event_id, staff=current_user, ip=client_ip())
    except ServiceError as err:
        event = webhook_events.get(event_id)
        return refused(err, template="webhooks/detail.html", block="status_panel", back=back,
                       event=event)
    event = webhook_events.get(event_id)
    message = f"Replayed: the event is now {outcome.status}."
    if outcome.error:
        message += f" {outcome.error}"
    return changed(template="webhooks/detail.html", block="status_panel", back=back, event=event,
                   message=message, category="success" if outcome.status != "failed" else "error")
