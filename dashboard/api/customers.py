"""Customers over the API: upsert (one, or a batch of up to 1,000), profile with balance and
grants, ledger, usage, grants, refund eligibility, auto top-up."""
from __future__ import annotations

import base64
import binascii
from collections import Counter

from flask import Blueprint, g

from dashboard.api import schemas as sc
from dashboard.api.auth import api_key_required
from dashboard.api.core import describe, ok, parse, path_text, query, validate
from dashboard.api.idempotency import idempotent, ledger_key
from models import Customer, LedgerEntry, utcnow
from services.core.errors import ServiceError, ValidationFailed
from services.ledger import crossings, customers, usage
from services.ledger import posting as ledger
from services.payments import autotopup
from services.refunds import eligibility

bp = Blueprint("api_customers", __name__, url_prefix="/api/v1/customers")


def customer_json(c: Customer, created: bool | None = None) -> dict:
    body = {
        "external_id": c.external_id, "email": c.email, "name": c.name,
        "plan": c.plan.code if c.plan else None, "subscription_status": c.subscription_status,
        "balance": c.balance, "low_balance_threshold": crossings.effective_threshold(c),
        "low_balance_threshold_override": c.low_balance_threshold,
        "grants": [{"id": gr.id, "source": gr.source, "amount": gr.amount, "remaining": gr.remaining,
                    "expires_at": sc.iso(gr.expires_at), "created_at": sc.iso(gr.created_at)}
                   for gr in ledger.live_grants(c.id)],
        "created_at": sc.iso(c.created_at), "updated_at": sc.iso(c.updated_at),
    }
    if created is not None:
        body["created"] = created
    return body


def entry_json(e: LedgerEntry) -> dict:
    return {"id": e.id, "type": e.type, "amount": e.amount, "balance_before": e.balance_before,
            "balance_after": e.balance_after, "feature": e.feature, "quantity": e.quantity,
            "reference": e.reference, "reason": e.reason, "task_id": e.task_id,
            "actor_type": e.actor_type, "request_id": e.request_id, "metadata": e.meta,
            "created_at": sc.iso(e.created_at)}


def _customer(external_id: str) -> Customer:
    return customers.get_by_external_id(path_text(external_id))


def encode_cursor(entry_id: int) -> str:
    return base64.urlsafe_b64encode(f"e{entry_id}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> int:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        if not raw.startswith("e") or not raw[1:].isdigit() or len(raw) > 20:
            raise ValueError
        return int(raw[1:])
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise ValidationFailed("The cursor is not one this API gave out.",
                               details={"cursor": "invalid"}) from None


@bp.put("/<external_id>")
@describe(summary="Create or update a customer", body=sc.CustomerUpsert, response=sc.CustomerOut,
          status=(200, 201), scopes=("customers:write",), tag="customers",
          description="Idempotent by nature: the product's user id is the key. 201 when created.")
@api_key_required("customers:write")
def upsert(external_id: str):
    body = parse(sc.CustomerUpsert)
    extra = ({"low_balance_threshold": body.low_balance_threshold}
             if "low_balance_threshold" in body.model_fields_set else {})
    c, created = customers.upsert(external_id=path_text(external_id), email=body.email,
                                  name=body.name, plan_code=body.plan, **extra)
    return ok(customer_json(c, created), 201 if created else 200)


@bp.post("/batch")
@describe(summary="Create or update up to 1,000 customers, one result per item in order",
          body=sc.CustomerBatchIn, response=sc.CustomerBatchOut, scopes=("customers:write",),
          idempotent=True, tag="customers",
          description="""Each item is what PUT /api/v1/customers/{external_id} takes, with its
          `external_id`, and follows the same rules; its result is `created`, `updated`,
          `unchanged` or `error` with the code, message and details PUT would answer. A bad item
          does not stop the others. An external_id sent twice in one batch is an error for every
          item carrying it. All items are written in one transaction. `batch` itself stays usable
          as an external_id for GET and PUT.""")
@api_key_required("customers:write")
@idempotent(one_transaction=True)
def upsert_batch():
    body = parse(sc.CustomerBatchIn)
    items = [_batch_item(raw) for raw in body.customers]
    outcome = customers.upsert_many(items)
    results = [_batch_result(i, raw, out) for i, (raw, out) in enumerate(zip(body.customers, outcome,
                                                                              strict=True))]
    tally = Counter(r["status"] for r in results)
    return ok({"results": results, "created": tally["created"], "updated": tally["updated"],
               "unchanged": tally["unchanged"], "failed": tally["error"]})


def _batch_item(raw: dict) -> customers.Upsert | ValidationFailed:
    try:
        item = validate(sc.CustomerBatchItem, raw)
    except ValidationFailed as err:
        return err
    extra = ({"low_balance_threshold": item.low_balance_threshold}
             if "low_balance_threshold" in item.model_fields_set else {})
    return customers.Upsert(external_id=item.external_id, email=item.email, name=item.name,
                            plan_code=item.plan, **extra)


def _batch_result(i: int, raw: dict, out: str | ServiceError) -> dict:
    ext = raw.get("external_id")
    res = {"index": i, "external_id": ext.strip() if isinstance(ext, str) else None}
    if not isinstance(out, ServiceError):
        return {**res, "status": out}
    res.update(status="error", code=out.code, error=out.message, retryable=out.retryable)
    if out.details is not None:
        res["details"] = out.details
    return res


@bp.get("/<external_id>")
@describe(summary="A customer's profile, balance and live grants", response=sc.CustomerOut,
          scopes=("customers:read",), errors=("CUSTOMER_NOT_FOUND",), tag="customers")
@api_key_required("customers:read")
def detail(external_id: str):
    return ok(customer_json(_customer(external_id)))


@bp.get("/<external_id>/ledger")
@describe(summary="Ledger entries, newest first, cursor-paged", query=sc.LedgerQuery,
          response=sc.LedgerPage, scopes=("customers:read",), errors=("CUSTOMER_NOT_FOUND",),
          tag="customers")
@api_key_required("customers:read")
def ledger_page(external_id: str):
    args = query(sc.LedgerQuery)
    c = _customer(external_id)
    before = decode_cursor(args.cursor) if args.cursor else None
    rows = ledger.entries_page(customer_id=c.id, before_id=before, limit=args.limit + 1)
    page, more = rows[:args.limit], len(rows) > args.limit
    return ok({"entries": [entry_json(e) for e in page],
               "next_cursor": encode_cursor(page[-1].id) if more else None})


@bp.get("/<external_id>/usage")
@describe(summary="Credits spent per feature and per day, refunds and totals for a period",
          query=sc.UsageQuery, response=sc.UsageOut, scopes=("customers:read",),
          errors=("CUSTOMER_NOT_FOUND",), tag="customers")
@api_key_required("customers:read")
def usage_summary(external_id: str):
    args = query(sc.UsageQuery)
    c = _customer(external_id)
    date_from, date_to = usage.period(args.date_from, args.date_to, today=utcnow().date())
    return ok(usage.summary(customer_id=c.id, date_from=date_from, date_to=date_to))


@bp.post("/<external_id>/grants")
@describe(summary="Grant credits (promo, adjustment, distribution, refund)", body=sc.GrantIn,
          response=sc.GrantCreated, status=201, scopes=("grants:write",), idempotent=True,
          errors=("CUSTOMER_NOT_FOUND", "IDEMPOTENCY_KEY_REUSED", "IDEMPOTENCY_KEY_IN_USE"),
          tag="credits")
@api_key_required("grants:write")
@idempotent
def grant(external_id: str):
    body = parse(sc.GrantIn)
    if body.expires_at is not None and body.expires_at <= utcnow():
        raise ValidationFailed("expires_at must be in the future.", details={"expires_at": "in the past"})
    c = _customer(external_id)
    entry = ledger.grant(customer_id=c.id, credits=body.credits, source=body.source,
                         expires_at=body.expires_at, reason=body.reason, actor=g.actor,
                         key=ledger_key("api-grant"))
    return ok({"entry_id": entry.id, "grant_id": entry.grant_id, "credits": entry.amount,
               "balance": entry.balance_after, "expires_at": sc.iso(body.expires_at)}, 201)


@bp.get("/<external_id>/refund-eligibility")
@describe(summary="Refund eligibility of each purchase", response=sc.EligibilityOut,
          scopes=("customers:read",), errors=("CUSTOMER_NOT_FOUND",), tag="payments")
@api_key_required("customers:read")
def refund_eligibility(external_id: str):
    c = _customer(external_id)
    rows = eligibility.for_customer(customer_id=c.id)
    purchases = [{**r.as_dict(), "paid_at": sc.iso(r.paid_at)} for r in rows]
    return ok({"external_id": c.external_id, "window_days": eligibility.window_days(),
               "eligible": any(r.eligible for r in rows), "purchases": purchases})


@bp.get("/<external_id>/auto-topup")
@describe(summary="A customer's auto top-up", response=sc.AutoTopupOut,
          scopes=("customers:read",), errors=("CUSTOMER_NOT_FOUND",), tag="payments")
@api_key_required("customers:read")
def auto_topup(external_id: str):
    c = _customer(external_id)
    return ok(autotopup.summary(customer_id=c.id).as_dict(c.external_id))


@bp.put("/<external_id>/auto-topup")
@describe(summary="Set a customer's auto top-up (Stripe only)", body=sc.AutoTopupIn,
          response=sc.AutoTopupOut, scopes=("customers:write",),
          errors=("CUSTOMER_NOT_FOUND", "AUTO_TOPUP_STRIPE_ONLY", "AUTO_TOPUP_NO_PAYMENT_METHOD"),
          tag="payments",
          description="When a debit takes the balance below `threshold`, the card saved at the "
                      "customer's last Stripe Checkout is charged off-session for the package, at "
                      "most `monthly_limit` times a calendar month. Enabling needs that saved "
                      "card; enabling again resumes an auto top-up paused after 3 failures.")
@api_key_required("customers:write")
def set_auto_topup(external_id: str):
    body = parse(sc.AutoTopupIn)
    c = _customer(external_id)
    autotopup.configure(customer_id=c.id, enabled=body.enabled, threshold=body.threshold,
                        package_id=body.package_id, monthly_limit=body.monthly_limit,
                        actor=f"api_key:{g.actor.id}" if getattr(g, "actor", None) else None)
    return ok(autotopup.summary(customer_id=c.id).as_dict(c.external_id))
