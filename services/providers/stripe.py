"""Stripe through its official SDK; the only module of ours that imports `stripe`.

Functions take plain values and answer plain dicts. Every failure of the SDK or the network
becomes `PaymentProviderError` (502, retryable) with a message free of secrets; every bad
webhook becomes `InvalidSignature`. The SDK does not retry: our callers retry with the same
idempotency key, which Stripe honours on every POST.
"""
from __future__ import annotations

import logging
import re
import time
from functools import lru_cache
from typing import Any, Literal

import stripe
from flask import current_app

from services.core.errors import InvalidSignature, PaymentProviderError
from services.providers.inputs import check_minor, currency_code

log = logging.getLogger(__name__)

TIMEOUT_SECONDS = 10.0
WEBHOOK_TOLERANCE_SECONDS = 300
_SECRET_PATTERN = re.compile(r"\b(?:sk|rk|whsec)_[A-Za-z0-9_]+")

# The SDK would otherwise write ~/.config/stripe/telemetry_id and report request latencies.
stripe.enable_telemetry = False


def configured() -> bool:
    """Whether a Stripe secret key is set."""
    return bool(current_app.config.get("STRIPE_SECRET_KEY"))


def create_checkout_session(
    *,
    mode: Literal["payment", "subscription"],
    amount_minor: int,
    currency: str,
    product_name: str,
    credits: int,
    customer_ref: str | None,
    client_reference_id: str,
    metadata: dict[str, Any],
    success_url: str,
    cancel_url: str,
    idempotency_key: str,
    price_id: str | None = None,
    interval: Literal["month", "year"] = "month",
    save_payment_method: bool = False,
) -> dict[str, Any]:
    """Create a hosted Checkout Session; answers the session with `id`, `url`, `payment_intent`.

    `save_payment_method` (payment mode, with a `cus_` customer) asks Checkout to keep the card
    for off-session charges (`setup_future_usage=off_session`): auto top-up charges it later.
    """
    if mode not in ("payment", "subscription"):
        raise ValueError(f"unsupported Checkout mode {mode!r}")
    check_minor(amount_minor)
    tags = _metadata({**metadata, "credits": credits})
    if price_id:
        line_item: dict[str, Any] = {"price": price_id, "quantity": 1}
    else:
        price_data: dict[str, Any] = {
            "currency": currency_code(currency).lower(), "unit_amount": amount_minor,
            "product_data": {"name": product_name, "metadata": {"credits": str(credits)}},
        }
        if mode == "subscription":
            price_data["recurring"] = {"interval": interval}
        line_item = {"price_data": price_data, "quantity": 1}
    params: dict[str, Any] = {
        "mode": mode, "line_items": [line_item], "client_reference_id": client_reference_id,
        "metadata": tags, "success_url": success_url, "cancel_url": cancel_url,
    }
    # Copy the tags onto what outlives the session, so refunds and renewals carry them too.
    if mode == "payment":
        params["payment_intent_data"] = {"metadata": tags}
        if save_payment_method and customer_ref and customer_ref.startswith("cus_"):
            params["payment_intent_data"]["setup_future_usage"] = "off_session"
    else:
        params["subscription_data"] = {"metadata": tags}
    if customer_ref and customer_ref.startswith("cus_"):
        params["customer"] = customer_ref
    elif customer_ref and "@" in customer_ref:
        params["customer_email"] = customer_ref
    session = _call("checkout.create", lambda c: c.v1.checkout.sessions.create(
        params, {"idempotency_key": idempotency_key}))
    log.info("providers.stripe.checkout_created",
             extra={"session_id": session["id"], "mode": mode, "amount_minor": amount_minor})
    return session


def retrieve_checkout_session(session_id: str) -> dict[str, Any]:
    """Fetch a Checkout Session (`payment_intent` is an id, or None until it is paid)."""
    return _call("checkout.retrieve", lambda c: c.v1.checkout.sessions.retrieve(session_id))


def create_customer(*, email: str, name: str, metadata: dict[str, Any],
                    idempotency_key: str) -> dict[str, Any]:
    """Create a Stripe Customer (the owner of saved payment methods); answers it with `id`."""
    customer = _call("customer.create", lambda c: c.v1.customers.create(
        {"email": email, "name": name or email, "metadata": _metadata(metadata)},
        {"idempotency_key": idempotency_key}))
    log.info("providers.stripe.customer_created", extra={"stripe_customer_id": customer["id"]})
    return customer


def retrieve_payment_intent(payment_intent_id: str) -> dict[str, Any]:
    """Fetch a PaymentIntent with its `payment_method` expanded (card brand and last 4);
    `latest_charge` is the charge a refund moves money back from."""
    return _call("payment_intent.retrieve", lambda c: c.v1.payment_intents.retrieve(
        payment_intent_id, {"expand": ["payment_method"]}))


def charge_off_session(*, amount_minor: int, currency: str, customer: str, payment_method: str,
                       idempotency_key: str, metadata: dict[str, Any]) -> dict[str, Any]:
    """Charge a saved payment method without the customer (PaymentIntent, confirm=true,
    off_session=true). Answers `{"outcome", "payment_intent", "status", "reason"}`:
    outcome `succeeded`, `processing`, `declined` (a card_error) or `requires_action` (the bank
    wants the customer: `authentication_required`, or a PaymentIntent in requires_action).
    Network and server failures raise PaymentProviderError: retry with the same key, Stripe
    answers the same PaymentIntent, so a retry never charges twice."""
    check_minor(amount_minor)
    params = {"amount": amount_minor, "currency": currency_code(currency).lower(),
              "customer": customer, "payment_method": payment_method, "off_session": True,
              "confirm": True, "metadata": _metadata(metadata)}
    try:
        pi = _client().v1.payment_intents.create(
            params, {"idempotency_key": idempotency_key}).to_dict(for_json=True)
    except stripe.CardError as err:
        body = (err.json_body or {}).get("error") or {}
        pi = body.get("payment_intent") or {}
        outcome = "requires_action" if err.code == "authentication_required" else "declined"
        reason = body.get("decline_code") or err.code or "card_declined"
        log.info("providers.stripe.off_session_declined",
                 extra={"payment_intent": pi.get("id"), "code": err.code, "reason": reason})
        return {"outcome": outcome, "payment_intent": pi.get("id"), "status": pi.get("status"),
                "reason": reason, "message": _redact(err.user_message or reason)[:300]}
    except stripe.StripeError as err:
        raise _provider_error("payment_intent.create", err) from None
    status = pi.get("status")
    outcome = {"succeeded": "succeeded", "processing": "processing",
               "requires_action": "requires_action"}.get(status, "declined")
    log.info("providers.stripe.off_session_charged",
             extra={"payment_intent": pi["id"], "status": status, "amount_minor": amount_minor})
    return {"outcome": outcome, "payment_intent": pi["id"], "status": status,
            "amount": pi.get("amount"), "currency": pi.get("currency"),
            "reason": None if outcome in ("succeeded", "processing") else status, "message": None}


def retrieve_invoice(invoice_id: str) -> dict[str, Any]:
    """Fetch an Invoice with its `payments` (the only place its PaymentIntent id is shown)."""
    return _call("invoice.retrieve", lambda c: c.v1.invoices.retrieve(
        invoice_id, {"expand": ["payments"]}))


def retrieve_charge(charge_id: str) -> dict[str, Any]:
    """Fetch a Charge (`amount_refunded`, `refunded`, `payment_intent`, `metadata`)."""
    return _call("charge.retrieve", lambda c: c.v1.charges.retrieve(charge_id))


def create_refund(
    *, payment_intent: str, amount_minor: int, idempotency_key: str, metadata: dict[str, Any]
) -> dict[str, Any]:
    """Refund part or all of a PaymentIntent; answers the refund with `id` and `status`."""
    check_minor(amount_minor)
    refund = _call("refund.create", lambda c: c.v1.refunds.create(
        {"payment_intent": payment_intent, "amount": amount_minor,
         "metadata": _metadata(metadata)},
        {"idempotency_key": idempotency_key}))
    log.info("providers.stripe.refund_created",
             extra={"refund_id": refund["id"], "status": refund.get("status"),
                    "amount_minor": amount_minor})
    return refund


def construct_event(payload: bytes, sig_header: str | None) -> dict[str, Any]:
    """Verify a webhook's `Stripe-Signature` (300 s tolerance) and answer the event as a dict."""
    secret = current_app.config.get("STRIPE_WEBHOOK_SECRET")
    if not secret:
        raise InvalidSignature("Stripe webhooks are not configured")
    if not sig_header:
        raise InvalidSignature("Missing Stripe-Signature header")
    try:
        event = stripe.Webhook.construct_event(
            payload, sig_header, secret, tolerance=WEBHOOK_TOLERANCE_SECONDS)
    except stripe.SignatureVerificationError as err:
        log.warning("providers.stripe.webhook_rejected", extra={"reason": _reason(err)})
        raise InvalidSignature("Invalid Stripe signature") from None
    except (ValueError, TypeError, AttributeError):  # signed, yet not an event
        raise InvalidSignature("Stripe webhook body is not a valid event") from None
    # The SDK only refuses old timestamps; a delivery signed "in the future" (a leaked secret,
    # a clock far off) must not stay replayable for longer than the tolerance either.
    if _signed_at(sig_header) - time.time() > WEBHOOK_TOLERANCE_SECONDS:
        log.warning("providers.stripe.webhook_rejected", extra={"reason": "timestamp in the future"})
        raise InvalidSignature("Invalid Stripe signature (timestamp outside the tolerance)")
    return event.to_dict(for_json=True)  # plain JSON types: no Decimal for *_decimal fields


def _signed_at(sig_header: str) -> int:
    """The `t=` of a header the SDK has just verified, read the way the SDK reads it."""
    return int(next(v for k, _, v in (i.partition("=") for i in sig_header.split(",")) if k == "t"))


# -- plumbing ---------------------------------------------------------------------------------
def _client() -> stripe.StripeClient:
    cfg = current_app.config
    api_key = cfg.get("STRIPE_SECRET_KEY")
    if not api_key:
        raise PaymentProviderError("Stripe is not configured")
    base = (cfg.get("STRIPE_API_BASE") or "").rstrip("/") or None
    timeout = float(cfg.get("PAYMENT_PROVIDER_TIMEOUT", TIMEOUT_SECONDS))
    return _build_client(api_key, base, timeout)


@lru_cache(maxsize=8)
def _build_client(api_key: str, api_base: str | None, timeout: float) -> stripe.StripeClient:
    return stripe.StripeClient(
        api_key,
        base_addresses={"api": api_base} if api_base else None,
        max_network_retries=0,
        http_client=stripe.RequestsClient(timeout=timeout),
    )


def _call(operation: str, request: Any) -> dict[str, Any]:
    try:
        return request(_client()).to_dict(for_json=True)  # *_decimal fields stay strings
    except stripe.StripeError as err:
        raise _provider_error(operation, err) from None


def _provider_error(operation: str, err: stripe.StripeError) -> PaymentProviderError:
    if isinstance(err, stripe.APIConnectionError):
        cause = type(err.__cause__).__name__ if err.__cause__ else "network error"
        detail = f"could not reach Stripe ({cause})"
    else:
        detail = err.user_message or type(err).__name__
    message = _redact(f"Stripe {operation} failed: {detail}")
    log.warning("providers.stripe.error",
                extra={"operation": operation, "error_type": type(err).__name__,
                       "http_status": err.http_status, "stripe_code": err.code,
                       "request_id": err.request_id, "detail": message})
    return PaymentProviderError(message, details={
        "provider": "stripe", "http_status": err.http_status, "provider_code": err.code})


def _redact(text: str) -> str:
    cfg = current_app.config
    for secret in (cfg.get("STRIPE_SECRET_KEY"), cfg.get("STRIPE_WEBHOOK_SECRET")):
        if secret:
            text = text.replace(secret, "[redacted]")
    return _SECRET_PATTERN.sub("[redacted]", text)


def _reason(err: Exception) -> str:
    # The SDK's messages name the problem (timestamp, no match); they never hold the secret.
    return _redact(str(err))[:200]


def _metadata(values: dict[str, Any]) -> dict[str, str]:
    # Stripe metadata is strings only: at most 50 keys of 40 chars, values of 500 chars.
    return {str(k)[:40]: "" if v is None else str(v)[:500] for k, v in values.items()}
