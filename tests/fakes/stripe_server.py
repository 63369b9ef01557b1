"""A Stripe API double: form-encoded requests, Stripe's JSON objects and errors, idempotency keys.

Covers what Creditdesk calls: Checkout Sessions (create, retrieve), Refunds, Customers (create),
off-session PaymentIntents (create with confirm + off_session; the outcome chosen by the test
payment method, as Stripe's test cards: `pm_card_visa` pays, `pm_card_chargeDeclined` and
`pm_card_insufficientFunds` are declined with a card_error, `pm_card_authenticationRequired`
needs the customer), and retrieval of the objects a completed session leaves behind (payment
intents, payment methods, charges, customers, prices, subscriptions, invoices). Idempotency
keys: the same key and parameters answer the first answer (402 card errors included, as in
Stripe). Point the SDK at it with `STRIPE_API_BASE = server.url`.
"""
from __future__ import annotations

import copy
import html
import re
import time
from typing import Any
from urllib.parse import parse_qsl

from tests.fakes import FakeServer, RecordedRequest, Reply, random_id
from tests.fakes.signing import (
    STRIPE_API_VERSION,
    checkout_session_object,
    invoice_object,
    invoice_payments,
    price_object,
    subscription_object,
)

TEST_SECRET_KEY = "sk_test_creditdeskFAKE0000000000"
TEST_WEBHOOK_SECRET = "whsec_creditdeskFAKE0000000000"
_RETRIEVABLE = {
    "checkout/sessions": "sessions", "payment_intents": "payment_intents",
    "charges": "charges", "refunds": "refunds", "customers": "customers",
    "prices": "prices", "subscriptions": "subscriptions", "invoices": "invoices",
    "payment_methods": "payment_methods",
}
_EXPANDABLE = {
    "payment_intent": "payment_intents", "customer": "customers", "charge": "charges",
    "latest_charge": "charges", "subscription": "subscriptions", "invoice": "invoices",
    "payment_method": "payment_methods",
}
# Stripe's test payment methods: (brand, last4, card_error code, decline_code, message).
TEST_CARDS = {
    "pm_card_visa": ("visa", "4242", None, None, None),
    "pm_card_mastercard": ("mastercard", "4444", None, None, None),
    "pm_card_chargeDeclined": ("visa", "0002", "card_declined", "generic_decline",
                               "Your card was declined."),
    "pm_card_insufficientFunds": ("visa", "9995", "card_declined", "insufficient_funds",
                                  "Your card has insufficient funds."),
    "pm_card_authenticationRequired": ("visa", "3184", "authentication_required",
                                       "authentication_required",
                                       "Your card was declined. This transaction requires "
                                       "authentication."),
}


def parse_form(raw: str) -> dict:
    """Invert stripe-python's encoding: `line_items[0][price_data][currency]=usd` -> nested."""
    return parse_pairs(parse_qsl(raw, keep_blank_values=True))


def parse_pairs(pairs: Any) -> dict:
    """Nest flat `(key, value)` pairs with bracketed keys; all-digit keys become lists."""
    root: dict = {}
    for key, value in pairs:
        head, _, rest = key.partition("[")
        parts = [head] + (re.findall(r"([^\[\]]*)\]", rest) if rest else [])
        node = root
        for i, part in enumerate(parts):
            if part == "":
                part = str(len(node))
            if i == len(parts) - 1:
                node[part] = value
            else:
                node = node.setdefault(part, {})
    return _listify(root)


def _listify(node: Any) -> Any:
    if not isinstance(node, dict):
        return node
    if node and all(k.isdigit() for k in node):
        return [_listify(node[k]) for k in sorted(node, key=int)]
    return {k: _listify(v) for k, v in node.items()}


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def error(status: int, message: str, *, type_: str = "invalid_request_error",
          code: str | None = None, param: str | None = None) -> Reply:
    """A Stripe error answer: {"error": {"type", "message", "code"?, "param"?}}."""
    body: dict[str, Any] = {"type": type_, "message": message}
    if code:
        body["code"] = code
        body["doc_url"] = f"https://stripe.com/docs/error-codes/{code.replace('_', '-')}"
    if param:
        body["param"] = param
    return Reply(status, {"error": body})


class FakeStripe(FakeServer):
    """The fake; objects live in public dicts keyed by id (`sessions`, `payment_intents`...)."""

    name = "stripe"

    def __init__(self, api_key: str = TEST_SECRET_KEY,
                 webhook_secret: str = TEST_WEBHOOK_SECRET, *, port: int = 0) -> None:
        super().__init__(port)
        self.api_key, self.webhook_secret = api_key, webhook_secret
        self.sessions: dict[str, dict] = {}
        self.payment_intents: dict[str, dict] = {}
        self.charges: dict[str, dict] = {}
        self.refunds: dict[str, dict] = {}
        self.payment_methods: dict[str, dict] = {}
        self.customers: dict[str, dict] = {}
        self.prices: dict[str, dict] = {}
        self.subscriptions: dict[str, dict] = {}
        self.invoices: dict[str, dict] = {}
        self.invoice_payments: dict[str, dict] = {}  # invoice id -> includable `payments`
        self.session_prices: dict[str, list[str]] = {}  # session id -> its line items' prices
        self.session_params: dict[str, dict] = {}  # the create params, for assertions
        self.idempotency: dict[str, tuple[tuple, Reply]] = {}
        self.refund_status = "succeeded"  # set "pending" to mimic slow payment methods

    def app_config(self) -> dict[str, str]:
        """The Flask config keys that point the app at this fake."""
        return {"STRIPE_SECRET_KEY": self.api_key, "STRIPE_WEBHOOK_SECRET": self.webhook_secret,
                "STRIPE_API_BASE": self.url}

    # -- test controls ----------------------------------------------------------------------
    def add_price(self, *, unit_amount: int, currency: str = "usd",
                  interval: str | None = "month") -> str:
        """Create a Price (recurring by default) that sessions can reference; returns its id."""
        with self.lock:
            price = price_object(unit_amount=unit_amount, currency=currency, interval=interval)
            self.prices[price["id"]] = price
            return price["id"]

    def complete_session(self, session_id: str, *, email: str = "buyer@example.com",
                         payment_method: str = "pm_card_visa") -> str:
        """The customer paid: mark the session complete and return the PaymentIntent id.

        Payment mode fills `session.payment_intent`. Subscription mode, as in Stripe, leaves it
        null and fills `subscription` and `invoice`; the returned id is the invoice's payment.
        """
        with self.lock:
            s, params = self.sessions[session_id], self.session_params[session_id]
            if s["status"] != "open":
                raise ValueError(f"session {session_id} is {s['status']}")
            now = int(time.time())
            customer = s["customer"]
            if s["mode"] == "subscription" and customer is None:
                customer = self._customer(email)
            done = checkout_session_object(amount_total=s["amount_total"], email=email)
            s.update(status="complete", payment_status="paid", customer=customer, url=None,
                     customer_details=done["customer_details"])
            if s["mode"] == "payment":
                pid = params.get("payment_intent_data", {})
                pi = self._payment_intent(s["amount_total"], s["currency"], customer,
                                          pid.get("metadata", {}))
                pi["payment_method"] = self._payment_method(payment_method, customer)
                if pid.get("setup_future_usage") and customer:
                    # Checkout attaches the card to the Customer for later off-session use.
                    pi["setup_future_usage"] = pid["setup_future_usage"]
                s["payment_intent"] = pi["id"]
                return pi["id"]
            price = self.prices[self.session_prices[session_id][0]]
            sub_md = params.get("subscription_data", {}).get("metadata", {})
            sub = subscription_object(customer=customer, price=price, metadata=sub_md, start=now)
            pi = self._payment_intent(s["amount_total"], s["currency"], customer, {})
            inv = invoice_object(subscription=sub, amount=s["amount_total"],
                                 billing_reason="subscription_create")
            self.invoice_payments[inv["id"]] = invoice_payments(inv, pi["id"])
            sub["latest_invoice"] = inv["id"]
            self.subscriptions[sub["id"]], self.invoices[inv["id"]] = sub, inv
            s.update(subscription=sub["id"], invoice=inv["id"])
            return pi["id"]

    def expire_session(self, session_id: str) -> None:
        """The customer walked away: the session expires."""
        with self.lock:
            self.sessions[session_id].update(status="expired", url=None)

    # -- routing ----------------------------------------------------------------------------
    def parse_body(self, raw: bytes, content_type: str) -> Any:
        if "x-www-form-urlencoded" in content_type:
            return parse_form(raw.decode())
        return super().parse_body(raw, content_type)

    def error_body(self, status: int) -> dict:
        if status == 429:
            return error(429, "Request rate limit exceeded.", code="rate_limit").body
        if status >= 500:
            return error(status, "An unknown error occurred", type_="api_error").body
        return error(status, "Fake failure").body

    def route(self, req: RecordedRequest) -> Reply:
        if req.path.startswith("/c/pay/"):
            return self._hosted_page(req)
        token = (req.header("Authorization") or "").removeprefix("Bearer ").strip()
        if token != self.api_key:
            shown = f"{token[:8]}****{token[-4:]}" if len(token) > 12 else "****"
            return error(401, f"Invalid API Key provided: {shown}")
        key = req.header("Idempotency-Key") if req.method == "POST" else None
        fingerprint = (req.path, sorted(parse_qsl(req.raw.decode(), keep_blank_values=True)))
        if key and key in self.idempotency:
            seen, reply = self.idempotency[key]
            if seen != fingerprint:
                return error(400, "Keys for idempotent requests can only be used with the same "
                             f"parameters they were first used with. Try using a key other "
                             f"than '{key}' if you meant to execute a different request.",
                             type_="idempotency_error")
            return Reply(reply.status, reply.body, {**reply.headers,
                                                    "Idempotent-Replayed": "true"})
        reply = self._dispatch(req)
        reply.headers.update({"Request-Id": random_id("req_", 14),
                              "Stripe-Version": req.header("Stripe-Version") or STRIPE_API_VERSION})
        if key:
            reply.headers["Idempotency-Key"] = key
            if reply.status < 400 or reply.status == 402:  # as Stripe: not validation errors
                saved = Reply(reply.status, copy.deepcopy(reply.body), dict(reply.headers))
                self.idempotency[key] = (fingerprint, saved)  # the answer as first given
        return reply

    def _dispatch(self, req: RecordedRequest) -> Reply:
        if req.method == "POST" and req.path == "/v1/checkout/sessions":
            return self._create_session(req.body)
        if req.method == "POST" and req.path == "/v1/refunds":
            return self._create_refund(req.body)
        if req.method == "POST" and req.path == "/v1/customers":
            p = req.body
            cid = self._customer(p.get("email"))
            self.customers[cid].update(name=p.get("name"), metadata=p.get("metadata", {}))
            return Reply(200, self.customers[cid])
        if req.method == "POST" and req.path == "/v1/payment_intents":
            return self._create_payment_intent(req.body)
        match = re.fullmatch(r"/v1/(.+)/([^/]+)", req.path)
        if req.method == "GET" and match and match.group(1) in _RETRIEVABLE:
            store = getattr(self, _RETRIEVABLE[match.group(1)])
            obj = store.get(match.group(2))
            if obj is None:
                noun = {"checkout/sessions": "checkout.session"}.get(
                    match.group(1), match.group(1).removesuffix("s"))
                return error(404, f"No such {noun}: '{match.group(2)}'",
                             code="resource_missing", param="id")
            return Reply(200, self._expand(obj, parse_pairs(req.query.items())))
        return error(404, f"Unrecognized request URL ({req.method}: {req.path}). Please see "
                     "https://stripe.com/docs or we can help at https://support.stripe.com/.")

    def _expand(self, obj: dict, params: dict) -> dict:
        out = dict(obj)
        for name in params.get("expand", []):
            if name == "payments" and obj["id"] in self.invoice_payments:
                out["payments"] = self.invoice_payments[obj["id"]]
            elif name in _EXPANDABLE and isinstance(out.get(name), str):
                out[name] = getattr(self, _EXPANDABLE[name]).get(out[name], out[name])
        return out

    # -- API operations ---------------------------------------------------------------------
    def _create_session(self, p: dict) -> Reply:
        mode, items = p.get("mode"), p.get("line_items")
        if mode is None:
            return error(400, "Missing required param: mode.", code="parameter_missing",
                         param="mode")
        if mode not in ("payment", "subscription", "setup"):
            return error(400, "Invalid mode: must be one of payment, setup, or subscription",
                         param="mode")
        for other, allowed in (("payment_intent_data", "payment"),
                               ("subscription_data", "subscription")):
            if other in p and mode != allowed:
                return error(400, f"You can not pass `{other}` in `{mode}` mode.", param=other)
        if p.get("customer") and p.get("customer_email"):
            return error(400, "You may only specify one of these parameters: customer, "
                         "customer_email.", param="customer_email")
        if not items:
            return error(400, "Missing required param: line_items.", code="parameter_missing",
                         param="line_items")
        total, currency, prices = 0, None, []
        for i, item in enumerate(items):
            price = self._session_price(item, i)
            if isinstance(price, Reply):
                return price
            prices.append(price)
            quantity = _int(item.get("quantity"))
            if quantity is None or quantity < 1:
                return error(400, f"Missing required param: line_items[{i}][quantity].",
                             code="parameter_missing", param=f"line_items[{i}][quantity]")
            if mode == "payment" and price["recurring"]:
                return error(400, "You specified `payment` mode but passed a recurring price. "
                             "Either switch to `subscription` mode or use only one-time prices.")
            if mode == "subscription" and not price["recurring"]:
                return error(400, "You must provide at least one recurring price in "
                             "`subscription` mode when using prices.", param="line_items")
            total, currency = total + price["unit_amount"] * quantity, price["currency"]
        for item, price in zip(items, prices, strict=True):
            if "price_data" in item:  # Stripe keeps inline prices as Price objects too
                self.prices[price["id"]] = price
        if p.get("customer") and p["customer"] not in self.customers:
            self._customer(None, p["customer"])
        sid = random_id("cs_test_a1", 56)
        session = checkout_session_object(
            session_id=sid, amount_total=total, currency=currency, mode=mode, status="open",
            client_reference_id=p.get("client_reference_id"), metadata=p.get("metadata"),
            customer=p.get("customer"), url=f"{self.url}/c/pay/{sid}")
        session.update(customer_email=p.get("customer_email"),
                       success_url=p.get("success_url"), cancel_url=p.get("cancel_url"))
        self.sessions[sid], self.session_params[sid] = session, p
        self.session_prices[sid] = [price["id"] for price in prices]
        return Reply(200, session)

    def _session_price(self, item: dict, i: int) -> dict | Reply:
        if "price" in item:
            price = self.prices.get(item["price"])
            if price is None:
                return error(400, f"No such price: '{item['price']}'", code="resource_missing",
                             param=f"line_items[{i}][price]")
            return price
        data, where = item.get("price_data") or {}, f"line_items[{i}][price_data]"
        amount = _int(data.get("unit_amount"))
        if not data.get("currency") or amount is None or amount < 0:
            return error(400, f"Missing required param: {where}[unit_amount].",
                         code="parameter_missing", param=where)
        if not (data.get("product") or data.get("product_data", {}).get("name")):
            return error(400, f"Missing required param: {where}[product_data][name].",
                         code="parameter_missing", param=where)
        interval = (data.get("recurring") or {}).get("interval")
        return price_object(unit_amount=amount, currency=data["currency"], interval=interval)

    def _create_refund(self, p: dict) -> Reply:
        pi_id, charge_id = p.get("payment_intent"), p.get("charge")
        if not pi_id and not charge_id:
            return error(400, "One of the following params should be provided for this request:"
                         " payment_intent or charge.")
        if pi_id and pi_id not in self.payment_intents:
            return error(400, f"No such payment_intent: '{pi_id}'", code="resource_missing",
                         param="payment_intent")
        charge = self.charges.get(charge_id or self.payment_intents[pi_id]["latest_charge"])
        if charge is None:
            return error(400, f"No such charge: '{charge_id}'", code="resource_missing",
                         param="charge")
        left = charge["amount"] - charge["amount_refunded"]
        amount = _int(p.get("amount", left))
        if amount is None or amount < 1:
            return error(400, "Invalid positive integer", param="amount")
        if left == 0:
            return error(400, f"Charge {charge['id']} has already been refunded.",
                         code="charge_already_refunded")
        if amount > left:
            return error(400, f"Refund amount ({_money(amount, charge['currency'])}) is greater "
                         f"than unrefunded amount on charge ({_money(left, charge['currency'])})",
                         param="amount")
        refund = {
            "id": random_id("re_"), "object": "refund", "amount": amount,
            "charge": charge["id"], "payment_intent": charge["payment_intent"],
            "currency": charge["currency"], "metadata": p.get("metadata", {}),
            "reason": p.get("reason"), "status": self.refund_status, "created": int(time.time()),
            "balance_transaction": random_id("txn_"), "receipt_number": None,
            "destination_details": {"type": "card", "card": {"type": "refund"}},
        }
        charge["amount_refunded"] += amount
        charge["refunded"] = charge["amount_refunded"] == charge["amount"]
        self.refunds[refund["id"]] = refund
        return Reply(200, refund)

    def _create_payment_intent(self, p: dict) -> Reply:
        amount = _int(p.get("amount"))
        if amount is None or amount < 1:
            return error(400, "Missing required param: amount.", code="parameter_missing",
                         param="amount")
        if not p.get("currency"):
            return error(400, "Missing required param: currency.", code="parameter_missing",
                         param="currency")
        if p.get("confirm") != "true" or p.get("off_session") != "true":
            return error(400, "This double only confirms off-session PaymentIntents.",
                         param="confirm")
        customer, pm_id = p.get("customer"), p.get("payment_method")
        if customer not in self.customers:
            return error(400, f"No such customer: '{customer}'", code="resource_missing",
                         param="customer")
        if pm_id not in TEST_CARDS and pm_id not in self.payment_methods:
            return error(400, f"No such PaymentMethod: '{pm_id}'", code="resource_missing",
                         param="payment_method")
        pi = self._payment_intent(amount, p["currency"], customer, p.get("metadata", {}))
        pi["payment_method"] = self._payment_method(pm_id, customer)
        pi["off_session"] = True
        _, _, code, decline_code, message = TEST_CARDS.get(pm_id, (None,) * 5)
        if code is None:
            return Reply(200, pi)
        charge = self.charges[pi["latest_charge"]]
        charge.update(paid=False, captured=False, amount_captured=0, status="failed",
                      failure_code=code, failure_message=message)
        last_error = {"type": "card_error", "code": code, "decline_code": decline_code,
                      "message": message, "charge": charge["id"], "payment_method":
                      self.payment_methods[pm_id]}
        pi.update(status="requires_payment_method", amount_received=0,
                  last_payment_error=last_error)
        body = {**last_error, "payment_intent": copy.deepcopy(pi),
                "doc_url": f"https://stripe.com/docs/error-codes/{code.replace('_', '-')}"}
        return Reply(402, {"error": body})

    # -- the hosted Checkout page (for browser tests) ----------------------------------------
    def _hosted_page(self, req: RecordedRequest) -> Reply:
        sid = req.path.removeprefix("/c/pay/")
        session = self.sessions.get(sid)
        if session is None or session["status"] == "expired":
            return Reply(404, "This Checkout Session is no longer active.",
                         content_type="text/html")
        if req.method == "POST" and session["status"] == "open":
            self.complete_session(sid)
        if session["status"] == "complete":
            target = (session["success_url"] or "/").replace("{CHECKOUT_SESSION_ID}", sid)
            return Reply(303, "", {"Location": target}, content_type="text/html")
        page = (f"<!doctype html><title>Fake Stripe Checkout</title><h1>Pay "
                f"{_money(session['amount_total'], session['currency'])}</h1>"
                f'<form method="post"><button type="submit">Pay</button></form>'
                f'<a href="{html.escape(session["cancel_url"] or "/")}">Cancel</a>')
        return Reply(200, page, content_type="text/html")

    # -- object factories -------------------------------------------------------------------
    def _customer(self, email: str | None, customer_id: str | None = None) -> str:
        customer_id = customer_id or random_id("cus_", 14)
        self.customers[customer_id] = {"id": customer_id, "object": "customer", "email": email,
                                       "metadata": {}, "created": int(time.time()),
                                       "livemode": False}
        return customer_id

    def _payment_method(self, pm_id: str, customer: str | None) -> str:
        if pm_id not in self.payment_methods:
            brand, last4 = TEST_CARDS.get(pm_id, ("visa", "4242"))[:2]
            self.payment_methods[pm_id] = {
                "id": pm_id, "object": "payment_method", "type": "card", "customer": customer,
                "card": {"brand": brand, "last4": last4, "exp_month": 12, "exp_year": 2034,
                         "country": "US", "funding": "credit"},
                "created": int(time.time()), "livemode": False}
        return pm_id

    def _payment_intent(self, amount: int, currency: str, customer: str | None,
                        metadata: dict) -> dict:
        now, pi_id, ch_id = int(time.time()), random_id("pi_"), random_id("ch_")
        self.charges[ch_id] = {
            "id": ch_id, "object": "charge", "amount": amount, "amount_captured": amount,
            "amount_refunded": 0, "captured": True, "currency": currency, "customer": customer,
            "metadata": metadata, "paid": True, "payment_intent": pi_id, "refunded": False,
            "status": "succeeded", "created": now, "livemode": False,
            "balance_transaction": random_id("txn_"),
        }
        pi = {
            "id": pi_id, "object": "payment_intent", "amount": amount, "amount_received": amount,
            "currency": currency, "customer": customer, "latest_charge": ch_id,
            "metadata": metadata, "status": "succeeded", "created": now, "livemode": False,
            "payment_method_types": ["card"],
        }
        self.payment_intents[pi_id] = pi
        return pi


def _money(amount: int, currency: str) -> str:
    return f"${amount / 100:.2f}" if currency == "usd" else f"{amount / 100:.2f} {currency}"


if __name__ == "__main__":  # python -m tests.fakes.stripe_server
    FakeStripe().run_standalone()
