"""The customer's side of the local provider doubles (tests/fakes/), and the providers' webhook
signatures: what `services.payments.sandbox` needs to play a buyer without a real provider.

Nothing here runs unless the provider is a local double: `unavailable()` says why not. A
provider is a double when its API base URL is on 127.0.0.1 / localhost (or, with
`PAYMENT_SANDBOX=1`, any host that is not Stripe's or Razorpay's own) and its keys are test
keys; `PAYMENT_SANDBOX=0` switches the sandbox off everywhere. An unset base URL is the real
API, so a production configuration can never reach this code.
"""
from __future__ import annotations

import hashlib
import hmac
import time
from typing import Any
from urllib.parse import urlsplit

import requests
import stripe
from flask import current_app

from services.core.errors import PaymentProviderError, ServiceError

PROVIDERS = ("stripe", "razorpay")
_LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}
_REAL_DOMAINS = ("stripe.com", "razorpay.com")
_ON, _OFF = {"1", "on", "true", "yes"}, {"0", "off", "false", "no"}
TIMEOUT_SECONDS = 10.0


class SandboxUnavailable(ServiceError, status=404, code="SANDBOX_UNAVAILABLE"):
    """The provider is not a local double: nothing may play its customer."""


def _settings(provider: str) -> tuple[str, str | None, str | None, bool]:
    """(display name, key, API base, whether the key is a live key)."""
    cfg = current_app.config
    if provider == "stripe":
        key = cfg.get("STRIPE_SECRET_KEY")
        return "Stripe", key, cfg.get("STRIPE_API_BASE"), \
            bool(key) and key.startswith(("sk_live_", "rk_live_"))
    key = cfg.get("RAZORPAY_KEY_ID")
    return "Razorpay", key, cfg.get("RAZORPAY_API_BASE"), bool(key) and key.startswith("rzp_live_")


def unavailable(provider: str) -> str | None:
    """Why the sandbox cannot play this provider's customer, or None when it can."""
    if provider not in PROVIDERS:
        return f"unknown provider {provider!r}"
    flag = str(current_app.config.get("PAYMENT_SANDBOX") or "auto").strip().lower()
    name, key, base, live = _settings(provider)
    if flag in _OFF:
        return "the sandbox is switched off (PAYMENT_SANDBOX=0)"
    if not key:
        return f"{name} is not configured"
    if live:
        return f"{name} is configured with live keys"
    host = (urlsplit(base).hostname or "").lower() if base else ""
    if not host or host.endswith(_REAL_DOMAINS):
        return f"{name} points at the real {name} API, not a local double"
    if host in _LOCAL_HOSTS or flag in _ON:
        return None
    return (f"{name}'s API base ({host}) is not on this machine; set PAYMENT_SANDBOX=1 if it "
            "is a provider double")


def available(provider: str) -> bool:
    return unavailable(provider) is None


def any_available() -> bool:
    return any(available(p) for p in PROVIDERS)


def require(provider: str) -> None:
    """Raise SandboxUnavailable unless this provider is a local double."""
    if reason := unavailable(provider):
        raise SandboxUnavailable(f"The sandbox cannot act for {provider}: {reason}.")


# -- the customer at the doubles ---------------------------------------------------------------
def stripe_pay_checkout(session: dict[str, Any]) -> None:
    """Press "Pay" on the double's hosted Checkout page of this (open) session."""
    require("stripe")
    url = session.get("url") or ""
    base = (current_app.config.get("STRIPE_API_BASE") or "").rstrip("/")
    if not base or not url.startswith(base + "/"):  # never post a card form anywhere else
        raise SandboxUnavailable("The session's Checkout page is not on the Stripe double.")
    resp = _post("Stripe checkout.pay", url, data={})
    if resp.status_code != 303:
        raise PaymentProviderError(f"Stripe checkout.pay failed: HTTP {resp.status_code}",
                                   details={"provider": "stripe", "http_status": resp.status_code})


def razorpay_pay_order(order_id: str, *, method: str = "upi") -> dict[str, str]:
    """Pay an order in the double's Checkout; answers what Checkout hands the page
    (`razorpay_order_id`, `razorpay_payment_id`, `razorpay_signature`)."""
    require("razorpay")
    cfg = current_app.config
    url = f"{cfg['RAZORPAY_API_BASE'].rstrip('/')}/checkout/orders/{order_id}/pay"
    resp = _post("Razorpay checkout.pay", url, json={"key_id": cfg["RAZORPAY_KEY_ID"],
                                                      "method": method})
    if resp.status_code != 200:
        try:
            reason = resp.json()["error"]["description"]
        except (ValueError, KeyError, TypeError):
            reason = f"HTTP {resp.status_code}"
        raise PaymentProviderError(f"Razorpay checkout.pay failed: {reason}",
                                   details={"provider": "razorpay", "http_status": resp.status_code})
    return resp.json()


def _post(operation: str, url: str, **kw: Any) -> requests.Response:
    try:
        return requests.post(url, timeout=TIMEOUT_SECONDS, allow_redirects=False, **kw)
    except requests.RequestException as err:
        raise PaymentProviderError(f"{operation} failed: could not reach the double "
                                   f"({type(err).__name__})") from None


def stripe_api_version() -> str:
    """The API version the SDK pins, which Stripe stamps on the events it sends us."""
    return stripe.api_version


# -- what the providers sign -------------------------------------------------------------------
def stripe_signature(body: bytes, *, timestamp: int | None = None) -> str:
    """`Stripe-Signature` for this body: `t=<unix>,v1=hex HMAC-SHA256 of "<t>.<body>"`."""
    require("stripe")
    secret = current_app.config.get("STRIPE_WEBHOOK_SECRET")
    if not secret:
        raise SandboxUnavailable("STRIPE_WEBHOOK_SECRET is not set: Stripe webhooks are refused.")
    t = int(time.time()) if timestamp is None else timestamp
    digest = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={t},v1={digest}"


def razorpay_signature(body: bytes) -> str:
    """`X-Razorpay-Signature` for this body: hex HMAC-SHA256 with the webhook secret."""
    require("razorpay")
    secret = current_app.config.get("RAZORPAY_WEBHOOK_SECRET")
    if not secret:
        raise SandboxUnavailable("RAZORPAY_WEBHOOK_SECRET is not set: Razorpay webhooks are "
                                 "refused.")
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
