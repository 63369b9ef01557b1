"""Signatures and payloads exactly as Stripe, Razorpay and our own customer webhooks send them.

- signatures: `stripe_signature_header`, `razorpay_webhook_signature`,
  `razorpay_payment_signature`, `customer_webhook_header`;
- ready-to-POST requests: `stripe_webhook_request`, `razorpay_webhook_request`,
  `customer_webhook_request` -> `(body_bytes, headers)`;
- provider objects in their current field layout (`checkout_session_object`,
  `subscription_object`, `invoice_object`, `order_entity`, `payment_entity`, ...) and the
  events that wrap them (`checkout_session_completed`, `invoice_paid`, `subscription_updated`,
  `subscription_deleted`, `charge_refunded`, `razorpay_payment_captured`, `razorpay_order_paid`,
  `razorpay_refund_processed`). Pass an object the fake server holds to get its event.
"""
from __future__ import annotations

import copy
import hashlib
import hmac
import json
import time

from tests.fakes import random_id

STRIPE_API_VERSION = "2026-10-28.endive"  # what stripe==16.1.0 pins
RAZORPAY_ACCOUNT_ID = "acc_CreditdeskFake01"


# -- signatures -------------------------------------------------------------------------------
def _hex(secret: str, message: bytes) -> str:
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def _raw(body: bytes | str) -> bytes:
    return body.encode() if isinstance(body, str) else body


def stripe_signature_header(payload: bytes | str, secret: str,
                            timestamp: int | None = None) -> str:
    """`Stripe-Signature`: `t=<unix>,v1=hex(HMAC-SHA256(secret, "<t>.<payload>"))`."""
    t = int(time.time()) if timestamp is None else timestamp
    return f"t={t},v1={_hex(secret, f'{t}.'.encode() + _raw(payload))}"


def razorpay_webhook_signature(body: bytes | str, secret: str) -> str:
    """`X-Razorpay-Signature`: hex HMAC-SHA256 of the raw body with the webhook secret."""
    return _hex(secret, _raw(body))


def razorpay_payment_signature(order_id: str, payment_id: str, key_secret: str) -> str:
    """Checkout's `razorpay_signature`: hex HMAC-SHA256 of `<order_id>|<payment_id>`."""
    return _hex(key_secret, f"{order_id}|{payment_id}".encode())


def customer_webhook_header(body: bytes | str, secret: str, timestamp: int | None = None) -> str:
    """`X-Creditdesk-Signature`: `t=<unix>,v1=hex(HMAC-SHA256(secret, "<t>.<body>"))`."""
    t = int(time.time()) if timestamp is None else timestamp
    return f"t={t},v1={_hex(secret, f'{t}.'.encode() + _raw(body))}"


# -- ready-to-send webhook requests -----------------------------------------------------------
def stripe_webhook_request(event: dict, secret: str, *,
                           timestamp: int | None = None) -> tuple[bytes, dict[str, str]]:
    """Body (pretty-printed, as Stripe sends it) and headers of a Stripe delivery."""
    body = json.dumps(event, indent=2).encode()
    return body, {"Content-Type": "application/json; charset=utf-8",
                  "Stripe-Signature": stripe_signature_header(body, secret, timestamp)}


def razorpay_webhook_request(event: dict, secret: str, *,
                             event_id: str | None = None) -> tuple[bytes, dict[str, str]]:
    """Body and headers of a Razorpay delivery; the event id travels only in a header."""
    body = json.dumps(event, separators=(",", ":")).encode()
    return body, {"Content-Type": "application/json",
                  "X-Razorpay-Signature": razorpay_webhook_signature(body, secret),
                  "X-Razorpay-Event-Id": event_id or random_id("", 14)}


def customer_webhook_request(payload: dict, secret: str, *,
                             timestamp: int | None = None) -> tuple[bytes, dict[str, str]]:
    """Body and headers of a product-backend delivery to /api/webhooks/customers."""
    body = json.dumps(payload).encode()
    return body, {"Content-Type": "application/json",
                  "X-Creditdesk-Signature": customer_webhook_header(body, secret, timestamp)}


# -- Stripe objects ---------------------------------------------------------------------------
def price_object(*, unit_amount: int, currency: str = "usd", interval: str | None = None,
                 price_id: str | None = None) -> dict:
    """A Price; `interval` ("month"/"year") makes it recurring."""
    return {
        "id": price_id or random_id("price_"), "object": "price", "active": True,
        "currency": currency.lower(), "unit_amount": unit_amount,
        "unit_amount_decimal": str(unit_amount), "product": random_id("prod_", 14),
        "recurring": ({"interval": interval, "interval_count": 1, "usage_type": "licensed",
                       "meter": None} if interval else None),
        "type": "recurring" if interval else "one_time", "livemode": False, "metadata": {},
        "created": int(time.time()),
    }


def checkout_session_object(*, amount_total: int, currency: str = "usd", mode: str = "payment",
                            status: str = "complete", client_reference_id: str | None = None,
                            metadata: dict | None = None, payment_intent: str | None = None,
                            customer: str | None = None, subscription: str | None = None,
                            invoice: str | None = None, email: str = "buyer@example.com",
                            session_id: str | None = None, url: str | None = None) -> dict:
    """A Checkout Session; `status="open"` gives the unpaid one `create` answers."""
    paid, now = status == "complete", int(time.time())
    sid = session_id or random_id("cs_test_a1", 56)
    return {
        "id": sid, "object": "checkout.session", "mode": mode, "status": status,
        "payment_status": "paid" if paid else "unpaid", "amount_subtotal": amount_total,
        "amount_total": amount_total, "currency": currency.lower(),
        "client_reference_id": client_reference_id, "customer": customer,
        "customer_email": None, "metadata": metadata or {},
        "customer_details": ({"email": email, "name": None, "phone": None, "address": None,
                              "tax_exempt": "none", "tax_ids": []} if paid else None),
        "payment_intent": payment_intent, "subscription": subscription, "invoice": invoice,
        "success_url": None, "cancel_url": None, "url": None if paid else url,
        "ui_mode": "hosted", "livemode": False, "created": now, "expires_at": now + 86400,
        "payment_method_types": ["card"],
        "customer_creation": "if_required" if mode == "payment" else None,
        "total_details": {"amount_discount": 0, "amount_shipping": 0, "amount_tax": 0},
    }


def subscription_object(*, customer: str, price: dict, metadata: dict | None = None,
                        start: int | None = None, status: str = "active",
                        sub_id: str | None = None) -> dict:
    """A Subscription in the current layout: the billing period lives on each item."""
    sub_id, start = sub_id or random_id("sub_"), start or int(time.time())
    days = 365 if (price["recurring"] or {}).get("interval") == "year" else 30
    item = {"id": random_id("si_", 14), "object": "subscription_item", "price": price,
            "quantity": 1, "subscription": sub_id, "current_period_start": start,
            "current_period_end": start + days * 86400, "metadata": {}, "created": start}
    return {
        "id": sub_id, "object": "subscription", "status": status, "customer": customer,
        "currency": price["currency"], "metadata": metadata or {},
        "cancel_at_period_end": False, "cancel_at": None, "canceled_at": None,
        "ended_at": None, "created": start, "start_date": start, "billing_cycle_anchor": start,
        "latest_invoice": None, "collection_method": "charge_automatically", "livemode": False,
        "items": {"object": "list", "data": [item], "has_more": False, "total_count": 1,
                  "url": f"/v1/subscription_items?subscription={sub_id}"},
    }


def invoice_object(*, subscription: dict, amount: int | None = None,
                   billing_reason: str = "subscription_cycle",
                   invoice_id: str | None = None) -> dict:
    """A paid subscription Invoice in the current layout.

    The subscription is at `parent.subscription_details.subscription`; there is no top-level
    `subscription`, `charge` or `payment_intent` any more, and `payments` is includable only
    (never in webhooks): see `invoice_payments()`.
    """
    item = subscription["items"]["data"][0]
    price, inv_id, now = item["price"], invoice_id or random_id("in_"), int(time.time())
    amount = price["unit_amount"] if amount is None else amount
    line = {
        "id": random_id("il_"), "object": "line_item", "amount": amount,
        "currency": price["currency"], "quantity": 1, "metadata": {},
        "period": {"start": item["current_period_start"], "end": item["current_period_end"]},
        "description": f"1 x {price['product']}",
        "parent": {"type": "subscription_item_details", "invoice_item_details": None,
                   "subscription_item_details": {"subscription": subscription["id"],
                                                 "subscription_item": item["id"],
                                                 "proration": False, "invoice_item": None}},
        "pricing": {"type": "price_details", "unit_amount_decimal": str(amount),
                    "price_details": {"price": price["id"], "product": price["product"]}},
    }
    return {
        "id": inv_id, "object": "invoice", "status": "paid", "customer": subscription["customer"],
        "currency": price["currency"], "amount_due": amount, "amount_paid": amount,
        "amount_remaining": 0, "subtotal": amount, "total": amount,
        "billing_reason": billing_reason, "created": now, "livemode": False, "metadata": {},
        "period_start": now, "period_end": now, "number": random_id("CD", 8).upper(),
        "parent": {"type": "subscription_details", "quote_details": None,
                   "subscription_details": {"subscription": subscription["id"],
                                            "metadata": subscription["metadata"]}},
        "lines": {"object": "list", "data": [line], "has_more": False, "total_count": 1,
                  "url": f"/v1/invoices/{inv_id}/lines"},
        "status_transitions": {"finalized_at": now, "paid_at": now, "voided_at": None,
                               "marked_uncollectible_at": None},
    }


def invoice_payments(invoice: dict, payment_intent: str) -> dict:
    """The includable `invoice.payments` list (`GET /v1/invoices/{id}?expand[]=payments`)."""
    return {"object": "list", "has_more": False, "total_count": 1, "data": [{
        "id": random_id("inpay_"), "object": "invoice_payment", "invoice": invoice["id"],
        "amount_paid": invoice["amount_paid"], "amount_requested": invoice["amount_due"],
        "currency": invoice["currency"], "is_default": True, "livemode": False,
        "status": "paid", "payment": {"type": "payment_intent", "payment_intent": payment_intent},
        "status_transitions": {"canceled_at": None, "paid_at": invoice["created"]}}],
        "url": "/v1/invoice_payments"}


# -- Stripe events ----------------------------------------------------------------------------
def stripe_event(event_type: str, obj: dict, *, previous_attributes: dict | None = None,
                 event_id: str | None = None, created: int | None = None) -> dict:
    """A snapshot event wrapping a copy of `obj`."""
    data: dict = {"object": copy.deepcopy(obj)}
    if previous_attributes is not None:
        data["previous_attributes"] = previous_attributes
    return {"id": event_id or random_id("evt_"), "object": "event",
            "api_version": STRIPE_API_VERSION, "created": created or int(time.time()),
            "data": data, "livemode": False, "pending_webhooks": 1,
            "request": {"id": None, "idempotency_key": None}, "type": event_type}


def checkout_session_completed(session: dict | None = None, **fields: object) -> dict:
    """`checkout.session.completed` for a session (or one built from `checkout_session_object`
    fields, e.g. `amount_total=500, client_reference_id="42", metadata={...}`)."""
    return stripe_event("checkout.session.completed",
                        session or checkout_session_object(**fields))  # type: ignore[arg-type]


def invoice_paid(invoice: dict) -> dict:
    """`invoice.paid` (build the invoice with `invoice_object`)."""
    return stripe_event("invoice.paid", invoice)


def subscription_updated(subscription: dict, *, previous_attributes: dict | None = None) -> dict:
    """`customer.subscription.updated`; `previous_attributes` holds the fields that changed."""
    return stripe_event("customer.subscription.updated", subscription,
                        previous_attributes=previous_attributes or {})


def subscription_deleted(subscription: dict) -> dict:
    """`customer.subscription.deleted`: the subscription ended now."""
    now = int(time.time())
    ended = {**subscription, "status": "canceled", "canceled_at": now, "ended_at": now}
    return stripe_event("customer.subscription.deleted", ended)


def charge_refunded(charge: dict, *, previously_refunded: int = 0) -> dict:
    """`charge.refunded` for a charge as it stands after the refund (e.g. the fake's)."""
    return stripe_event("charge.refunded", charge, previous_attributes={
        "amount_refunded": previously_refunded, "refunded": False})


# -- Razorpay entities and events -------------------------------------------------------------
def notes_out(notes: dict | None) -> dict | list:
    """Razorpay answers an empty `notes` object as `[]` (a PHP-ism clients must accept)."""
    return notes if notes else []


def order_entity(*, amount: int, currency: str = "INR", receipt: str | None = None,
                 notes: dict | None = None, order_id: str | None = None) -> dict:
    """An order as `POST /v1/orders` returns it."""
    return {"id": order_id or random_id("order_", 14), "entity": "order", "amount": amount,
            "amount_paid": 0, "amount_due": amount, "currency": currency, "receipt": receipt,
            "offer_id": None, "status": "created", "attempts": 0, "notes": notes_out(notes),
            "created_at": int(time.time())}


def payment_entity(*, amount: int, currency: str = "INR", order_id: str | None = None,
                   status: str = "captured", method: str = "upi", notes: dict | None = None,
                   payment_id: str | None = None, email: str = "buyer@example.com") -> dict:
    """A payment as `GET /v1/payments/{id}` and the webhooks show it."""
    captured = status in ("captured", "refunded")
    return {
        "id": payment_id or random_id("pay_", 14), "entity": "payment", "amount": amount,
        "currency": currency, "status": status, "order_id": order_id, "invoice_id": None,
        "international": False, "method": method, "amount_refunded": 0, "refund_status": None,
        "captured": captured, "description": None, "card_id": None, "bank": None,
        "wallet": None, "vpa": "success@razorpay" if method == "upi" else None,
        "email": email, "contact": "+919000090000", "notes": notes_out(notes),
        "fee": round(amount * 0.02) if captured else None,
        "tax": round(amount * 0.0036) if captured else None,
        "error_code": None, "error_description": None, "error_source": None,
        "error_step": None, "error_reason": None,
        "acquirer_data": {"rrn": random_id("", 12).upper()} if method == "upi" else {},
        "created_at": int(time.time()),
    }


def refund_entity(*, payment_id: str, amount: int, currency: str = "INR",
                  receipt: str | None = None, notes: dict | None = None,
                  status: str = "processed", speed: str = "normal") -> dict:
    """A refund as `POST /v1/payments/{id}/refund` returns it."""
    return {"id": random_id("rfnd_", 14), "entity": "refund", "amount": amount,
            "currency": currency, "payment_id": payment_id, "notes": notes_out(notes),
            "receipt": receipt, "acquirer_data": {"arn": None}, "created_at": int(time.time()),
            "batch_id": None, "status": status, "speed_processed": speed,
            "speed_requested": speed}


def razorpay_event(event: str, entities: dict[str, dict], *,
                   created_at: int | None = None) -> dict:
    """A webhook body: `{"entity": "event", "event", "contains", "payload": {name: {entity}}}`."""
    return {"entity": "event", "account_id": RAZORPAY_ACCOUNT_ID, "event": event,
            "contains": list(entities),
            "payload": {name: {"entity": copy.deepcopy(e)} for name, e in entities.items()},
            "created_at": created_at or int(time.time())}


def razorpay_payment_captured(payment: dict) -> dict:
    """`payment.captured`."""
    return razorpay_event("payment.captured", {"payment": payment})


def razorpay_order_paid(order: dict, payment: dict) -> dict:
    """`order.paid`: carries the payment and the order."""
    return razorpay_event("order.paid", {"payment": payment, "order": order})


def razorpay_refund_processed(refund: dict, payment: dict) -> dict:
    """`refund.processed`: carries the refund and its payment."""
    return razorpay_event("refund.processed", {"refund": refund, "payment": payment})


def flip_last(signature: str) -> str:
    """The same signature with its last character changed: always a different, invalid one."""
    return signature[:-1] + ("0" if signature[-1:] != "0" else "1")
