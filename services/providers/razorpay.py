"""Razorpay through its official SDK; the only module of ours that imports `razorpay`.

Orders, payments and refunds go through `razorpay.Client`; signatures are checked here with
`hmac.compare_digest` (the SDK's helpers want `str` bodies and raise their own error type).
SDK, HTTP and network failures become `PaymentProviderError` (502, retryable) with a message
free of secrets; bad signatures become `InvalidSignature`.
"""
from __future__ import annotations

import hashlib
import hmac
import logging
import re
from typing import Any

import razorpay
import requests
from flask import current_app
from razorpay.errors import BadRequestError, GatewayError, ServerError

from services.core.errors import InvalidSignature, PaymentProviderError
from services.providers.inputs import check_minor, currency_code

log = logging.getLogger(__name__)

TIMEOUT_SECONDS = 10.0
_SDK_ERRORS = (
    BadRequestError,
    GatewayError,
    ServerError,
    requests.RequestException,  # connection refused or reset, timeouts, non-JSON answers
    ValueError,
)
_IDEMPOTENCY_KEY = re.compile(r"[A-Za-z0-9_-]{10,}")


def configured() -> bool:
    """Whether Razorpay API keys are set."""
    cfg = current_app.config
    return bool(cfg.get("RAZORPAY_KEY_ID") and cfg.get("RAZORPAY_KEY_SECRET"))


def key_id() -> str:
    """The public key id that Razorpay Checkout in the browser needs."""
    value = current_app.config.get("RAZORPAY_KEY_ID")
    if not value:
        raise PaymentProviderError("Razorpay is not configured")
    return value


def create_order(
    *, amount_minor: int, currency: str, receipt: str, notes: dict[str, Any]
) -> dict[str, Any]:
    """Create an order for Checkout; answers the order with `id`, `amount`, `currency`."""
    check_minor(amount_minor)
    data = {"amount": amount_minor, "currency": currency_code(currency).upper(), "receipt": receipt[:40],
            "notes": _notes(notes)}
    order = _call("order.create", lambda c, t: c.order.create(data, timeout=t))
    log.info("providers.razorpay.order_created",
             extra={"order_id": order.get("id"), "amount_minor": amount_minor})
    return order


def fetch_order(order_id: str) -> dict[str, Any]:
    """Fetch an order (`status` is `paid` once a payment of it is captured)."""
    return _call("order.fetch", lambda c, t: c.order.fetch(order_id, {}, timeout=t))


def fetch_payment(payment_id: str) -> dict[str, Any]:
    """Fetch a payment (`status`, `order_id`, `amount`, `currency`, `amount_refunded`)."""
    return _call("payment.fetch", lambda c, t: c.payment.fetch(payment_id, {}, timeout=t))


def create_refund(
    *,
    payment_id: str,
    amount_minor: int,
    idempotency_key: str,
    receipt: str | None = None,
    notes: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Refund part or all of a captured payment; answers the refund with `id` and `status`.

    `idempotency_key` travels as `X-Refund-Idempotency` (same key and body: the same refund)
    and, cut to 40 characters, as the default `receipt`.
    """
    check_minor(amount_minor)
    data = {"amount": amount_minor, "receipt": (receipt or idempotency_key)[:40],
            "notes": _notes({"idempotency_key": idempotency_key, **(notes or {})})}
    headers = {"X-Refund-Idempotency": _refund_idempotency_key(idempotency_key)}
    refund = _call("refund.create", lambda c, t: c.payment.refund(
        payment_id, data, headers=headers, timeout=t))
    log.info("providers.razorpay.refund_created",
             extra={"refund_id": refund.get("id"), "status": refund.get("status"),
                    "amount_minor": amount_minor})
    return refund


def verify_payment_signature(*, order_id: str, payment_id: str, signature: str) -> None:
    """Check Checkout's `razorpay_signature`: HMAC-SHA256 of `order_id|payment_id`."""
    secret = current_app.config.get("RAZORPAY_KEY_SECRET")
    if not secret:
        raise InvalidSignature("Razorpay payments are not configured")
    if not (order_id and payment_id and signature):
        raise InvalidSignature("Missing Razorpay payment signature")
    if not _matches(secret, f"{order_id}|{payment_id}".encode(), signature):
        log.warning("providers.razorpay.payment_signature_rejected",
                    extra={"order_id": order_id, "payment_id": payment_id})
        raise InvalidSignature("Invalid Razorpay payment signature")


def verify_webhook_signature(*, body: bytes, signature: str | None) -> None:
    """Check `X-Razorpay-Signature`: HMAC-SHA256 hex of the raw body with the webhook secret."""
    secret = current_app.config.get("RAZORPAY_WEBHOOK_SECRET")
    if not secret:
        raise InvalidSignature("Razorpay webhooks are not configured")
    if not signature:
        raise InvalidSignature("Missing X-Razorpay-Signature header")
    if not _matches(secret, body, signature):
        log.warning("providers.razorpay.webhook_rejected")
        raise InvalidSignature("Invalid Razorpay webhook signature")


# -- plumbing ---------------------------------------------------------------------------------
def _matches(secret: str, message: bytes, signature: str) -> bool:
    expected = hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected.encode(), signature.strip().encode())


def _client() -> razorpay.Client:
    cfg = current_app.config
    key, secret = cfg.get("RAZORPAY_KEY_ID"), cfg.get("RAZORPAY_KEY_SECRET")
    if not (key and secret):
        raise PaymentProviderError("Razorpay is not configured")
    options: dict[str, Any] = {}
    if base := (cfg.get("RAZORPAY_API_BASE") or "").rstrip("/"):
        options["base_url"] = base
    client = razorpay.Client(auth=(key, secret), **options)
    client.set_app_details({"title": "Creditdesk"})
    return client


def _call(operation: str, request: Any) -> dict[str, Any]:
    timeout = float(current_app.config.get("PAYMENT_PROVIDER_TIMEOUT", TIMEOUT_SECONDS))
    try:
        answer = request(_client(), timeout)
    except _SDK_ERRORS as err:
        raise _provider_error(operation, err) from None
    if not isinstance(answer, dict):
        raise _provider_error(operation, ValueError("unexpected answer"))
    if answer.get("notes") == []:  # Razorpay writes an empty notes object as []
        answer["notes"] = {}
    return answer


def _provider_error(operation: str, err: Exception) -> PaymentProviderError:
    if isinstance(err, requests.Timeout):
        detail = "Razorpay did not answer in time"
    elif isinstance(err, requests.RequestException):
        detail = f"could not reach Razorpay ({type(err).__name__})"
    else:
        detail = str(err) or type(err).__name__
    message = _redact(f"Razorpay {operation} failed: {detail}")
    log.warning("providers.razorpay.error",
                extra={"operation": operation, "error_type": type(err).__name__,
                       "detail": message})
    return PaymentProviderError(message, details={"provider": "razorpay",
                                                  "error_type": type(err).__name__})


def _redact(text: str) -> str:
    cfg = current_app.config
    for secret in (cfg.get("RAZORPAY_KEY_SECRET"), cfg.get("RAZORPAY_WEBHOOK_SECRET")):
        if secret:
            text = text.replace(secret, "[redacted]")
    return text


def _refund_idempotency_key(key: str) -> str:
    # Razorpay wants >= 10 of [A-Za-z0-9_-]; anything else maps to a stable digest of it.
    if _IDEMPOTENCY_KEY.fullmatch(key):
        return key
    return "cd_" + hashlib.sha256(key.encode()).hexdigest()[:40]


def _notes(values: dict[str, Any]) -> dict[str, str]:
    # Razorpay notes: at most 15 pairs, values of at most 256 characters.
    return {str(k): "" if v is None else str(v)[:256] for k, v in list(values.items())[:15]}
