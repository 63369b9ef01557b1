"""Sandbox: play the customer of the local provider doubles (pay a checkout, refund a payment).

Admin only, and a 404 unless a provider points at a local double (services/providers/sandbox.py),
so a production dashboard never shows it. The credits move through the normal webhook path.
"""
from __future__ import annotations

from flask import Blueprint, abort, current_app, request, url_for
from flask_login import current_user

from dashboard import htmx
from dashboard.auth import require
from dashboard.respond import changed, client_ip, refused
from services.core.errors import ServiceError
from services.payments import sandbox

bp = Blueprint("sandbox", __name__, url_prefix="/sandbox")
TEMPLATE = "sandbox/index.html"


def _available() -> None:
    if not sandbox.any_available():
        abort(404)


def _webhook_base() -> str:
    """Where the deliveries go: SANDBOX_WEBHOOK_URL, else this very dashboard."""
    return current_app.config.get("SANDBOX_WEBHOOK_URL") or request.host_url


def _ctx() -> dict:
    return {"pending": sandbox.pending(), "paid": sandbox.refundable(),
            "availability": sandbox.availability(), "webhook_base": _webhook_base()}


@bp.get("/")
@require("sandbox.use")
def index():
    _available()
    return htmx.render(TEMPLATE, None, **_ctx())


def _act(payment_id: int, action, verb: str):
    _available()
    sandbox.find(reference=str(payment_id))  # a guessed id is a 404
    back = url_for("sandbox.index")
    try:
        result = action(webhook_base=_webhook_base(), staff=current_user, ip=client_ip())
    except ServiceError as err:
        return refused(err, template=TEMPLATE, block="panels", back=back, **_ctx())
    sent = ", ".join(f"{d.type} ({d.status})" for d in result.deliveries)
    return changed(template=TEMPLATE, block="panels", back=back, events=("payments-changed",),
                   message=f"{verb} payment #{result.payment_id} at the {result.provider} double; "
                           f"sent {sent}.", **_ctx())


@bp.post("/payments/<int:payment_id>/pay")
@require("sandbox.use")
def pay(payment_id: int):
    return _act(payment_id, lambda **kw: sandbox.pay(reference=str(payment_id), **kw), "Paid")


@bp.post("/payments/<int:payment_id>/refund")
@require("sandbox.use")
def refund(payment_id: int):
    return _act(payment_id, lambda **kw: sandbox.refund(reference=str(payment_id), **kw),
                "Refunded")
