"""A Razorpay API double: JSON bodies, Basic auth, Razorpay's entities and error layout.

Covers orders (create, fetch, their payments), payments (fetch, refund with the
`X-Refund-Idempotency` header) and refunds (fetch). Point the SDK at it with
`RAZORPAY_API_BASE = server.url`; `pay_order()` plays the customer paying in Checkout.
"""
from __future__ import annotations

import base64
import copy
import re
from typing import Any

from tests.fakes import FakeServer, RecordedRequest, Reply
from tests.fakes.signing import (
    order_entity,
    payment_entity,
    razorpay_payment_signature,
    refund_entity,
)

TEST_KEY_ID = "rzp_test_CreditdeskFake1"
TEST_KEY_SECRET = "creditdeskFakeKeySecret000"
TEST_WEBHOOK_SECRET = "creditdeskFakeWebhookSecret"
CURRENCIES = {"INR", "USD", "EUR", "GBP", "SGD", "AED", "MYR"}


def error(status: int, description: str, *, code: str = "BAD_REQUEST_ERROR",
          field: str | None = None, reason: str = "NA") -> Reply:
    """A Razorpay error answer: {"error": {"code", "description", "source", ...}}."""
    body: dict[str, Any] = {"code": code, "description": description, "source": "NA",
                            "step": "NA", "reason": reason, "metadata": {}}
    if field:
        body.update(field=field, source="business", step="payment_initiation",
                    reason="input_validation_failed")
    return Reply(status, {"error": body})


class FakeRazorpay(FakeServer):
    """The fake; entities live in public dicts keyed by id (`orders`, `payments`, `refunds`)."""

    name = "razorpay"

    def __init__(self, key_id: str = TEST_KEY_ID, key_secret: str = TEST_KEY_SECRET,
                 webhook_secret: str = TEST_WEBHOOK_SECRET, *, port: int = 0) -> None:
        super().__init__(port)
        self.key_id, self.key_secret, self.webhook_secret = key_id, key_secret, webhook_secret
        self.orders: dict[str, dict] = {}
        self.payments: dict[str, dict] = {}
        self.refunds: dict[str, dict] = {}
        self.idempotency: dict[str, tuple[Any, Reply]] = {}
        self.refund_status = "processed"  # "pending" mimics a refund still at the bank

    def app_config(self) -> dict[str, str]:
        """The Flask config keys that point the app at this fake."""
        return {"RAZORPAY_KEY_ID": self.key_id, "RAZORPAY_KEY_SECRET": self.key_secret,
                "RAZORPAY_WEBHOOK_SECRET": self.webhook_secret, "RAZORPAY_API_BASE": self.url}

    # -- test controls ----------------------------------------------------------------------
    def pay_order(self, order_id: str, *, method: str = "upi", captured: bool = True) -> str:
        """The customer paid the order in Checkout; returns the new payment id."""
        with self.lock:
            order = self.orders[order_id]
            payment = payment_entity(amount=order["amount"], currency=order["currency"],
                                     order_id=order_id, method=method,
                                     status="captured" if captured else "authorized",
                                     notes=order["notes"] or None)
            self.payments[payment["id"]] = payment
            order["attempts"] += 1
            if captured:
                order.update(status="paid", amount_paid=order["amount"], amount_due=0)
            else:
                order["status"] = "attempted"
            return payment["id"]

    def payment_signature(self, order_id: str, payment_id: str) -> str:
        """What Checkout hands the browser as `razorpay_signature` for this payment."""
        return razorpay_payment_signature(order_id, payment_id, self.key_secret)

    # -- routing ----------------------------------------------------------------------------
    def error_body(self, status: int) -> dict:
        if status == 429:
            return error(429, "Too many requests").body
        if status >= 500:
            return error(status, "The server encountered an error. The incident has been "
                         "reported to admins.", code="SERVER_ERROR").body
        return error(status, "Fake failure").body

    def route(self, req: RecordedRequest) -> Reply:
        if req.method == "POST" and (m := re.fullmatch(r"/checkout/orders/([^/]+)/pay", req.path)):
            return self._checkout_pay(m.group(1), req.body if isinstance(req.body, dict) else {})
        if not self._authorized(req.header("Authorization") or ""):
            return error(401, "Authentication failed")
        p = req.body if isinstance(req.body, dict) else {}
        if req.method == "POST" and req.path == "/v1/orders":
            return self._create_order(p)
        if m := re.fullmatch(r"/v1/orders/([^/]+)/payments", req.path):
            if m.group(1) not in self.orders:
                return error(400, "The id provided does not exist")
            items = [x for x in self.payments.values() if x["order_id"] == m.group(1)]
            return Reply(200, {"entity": "collection", "count": len(items), "items": items})
        if req.method == "POST" and (m := re.fullmatch(r"/v1/payments/([^/]+)/refund", req.path)):
            return self._idempotent(req, lambda: self._create_refund(m.group(1), p))
        if req.method == "GET" and (m := re.fullmatch(r"/v1/(orders|payments|refunds)/([^/]+)",
                                                      req.path)):
            found = getattr(self, m.group(1)).get(m.group(2))
            if found is None:
                return error(400, "The id provided does not exist")
            return Reply(200, found)
        return error(404, "The requested URL was not found on the server.")

    def _checkout_pay(self, order_id: str, p: dict) -> Reply:
        """The customer pays in Checkout (the browser widget, which knows only the public key
        id): answers what Checkout hands the page's handler. The sandbox's way in."""
        if p.get("key_id") != self.key_id:
            return error(401, "Authentication failed")
        order = self.orders.get(order_id)
        if order is None:
            return error(400, "The id provided does not exist")
        if order["status"] == "paid":
            return error(400, "Order has already been paid")
        payment_id = self.pay_order(order_id, method=str(p.get("method") or "upi"))
        return Reply(200, {"razorpay_order_id": order_id, "razorpay_payment_id": payment_id,
                           "razorpay_signature": self.payment_signature(order_id, payment_id)})

    def _authorized(self, header: str) -> bool:
        scheme, _, encoded = header.partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            user, _, password = base64.b64decode(encoded).decode().partition(":")
        except ValueError:
            return False
        return (user, password) == (self.key_id, self.key_secret)

    def _idempotent(self, req: RecordedRequest, operation: Any) -> Reply:
        key = req.header("X-Refund-Idempotency")
        if key is None:
            return operation()
        if not re.fullmatch(r"[A-Za-z0-9_-]{10,}", key):
            return error(400, "The idempotency key must be at least 10 characters long and "
                         "contain only alphabets, numbers, hyphens and underscores.")
        if key in self.idempotency:
            seen, reply = self.idempotency[key]
            if seen != (req.path, req.body):
                return error(400, "Different request with the same idempotency key has "
                             "already been processed.")
            return reply
        reply = operation()
        if reply.status < 400:
            saved = Reply(reply.status, copy.deepcopy(reply.body), dict(reply.headers))
            self.idempotency[key] = ((req.path, req.body), saved)
        return reply

    # -- API operations ---------------------------------------------------------------------
    def _create_order(self, p: dict) -> Reply:
        amount, currency = p.get("amount"), p.get("currency", "INR")
        if "amount" not in p:
            return error(400, "The amount field is required.", field="amount")
        if not isinstance(amount, int) or isinstance(amount, bool):
            return error(400, "The amount must be an integer.", field="amount")
        if currency not in CURRENCIES:
            return error(400, "The currency is invalid.", field="currency")
        if amount < 100:
            return error(400, f"The amount must be atleast {currency} 1.00", field="amount")
        receipt, notes = p.get("receipt"), p.get("notes") or {}
        if receipt is not None and len(str(receipt)) > 40:
            return error(400, "The receipt may not be greater than 40 characters.",
                         field="receipt")
        if not isinstance(notes, dict) or len(notes) > 15:
            return error(400, "Number of notes cannot be more than 15", field="notes")
        if any(len(str(v)) > 256 for v in notes.values()):
            return error(400, "Notes value may not be greater than 256 characters",
                         field="notes")
        order = order_entity(amount=amount, currency=currency, receipt=receipt, notes=notes)
        self.orders[order["id"]] = order
        return Reply(200, order)

    def _create_refund(self, payment_id: str, p: dict) -> Reply:
        payment = self.payments.get(payment_id)
        if payment is None:
            return error(400, "The id provided does not exist")
        if payment["status"] not in ("captured", "refunded"):
            return error(400, "The payment has not been captured and cannot be refunded")
        left = payment["amount"] - payment["amount_refunded"]
        amount = p.get("amount", left)
        if not isinstance(amount, int) or isinstance(amount, bool) or amount < 100:
            return error(400, "The amount must be atleast INR 1.00", field="amount")
        if left == 0:
            return error(400, "The payment has been fully refunded already")
        if amount > left:
            return error(400, "The refund amount provided is greater than amount captured",
                         field="amount")
        receipt = p.get("receipt")
        if receipt is not None and len(str(receipt)) > 40:
            return error(400, "The receipt may not be greater than 40 characters.",
                         field="receipt")
        refund = refund_entity(payment_id=payment_id, amount=amount,
                               currency=payment["currency"], receipt=receipt,
                               notes=p.get("notes") or None, status=self.refund_status,
                               speed=p.get("speed", "normal"))
        payment["amount_refunded"] += amount
        payment["refund_status"] = "full" if payment["amount_refunded"] == payment["amount"] \
            else "partial"
        if payment["refund_status"] == "full":
            payment["status"] = "refunded"
        self.refunds[refund["id"]] = refund
        return Reply(200, refund)


if __name__ == "__main__":  # python -m tests.fakes.razorpay_server
    FakeRazorpay().run_standalone()
