"""Debits over the API: one debit priced from the feature price table, or a batch of up to 1,000."""
from __future__ import annotations

from flask import Blueprint, current_app, g

from dashboard.api import limits
from dashboard.api import schemas as sc
from dashboard.api.auth import Forbidden, api_key_required, has_scope
from dashboard.api.core import describe, ok, parse, path_text
from dashboard.api.idempotency import idempotent, key_from_header, key_scope, reply_of, scoped
from services.catalog import pricing
from services.core.errors import RateLimited
from services.ledger import batch, sqldebit
from services.ledger import posting as ledger

bp = Blueprint("api_debits", __name__, url_prefix="/api/v1")

DEBIT_ERRORS = ("CUSTOMER_NOT_FOUND", "INSUFFICIENT_CREDITS", "IDEMPOTENCY_KEY_REUSED",
                "IDEMPOTENCY_KEY_IN_USE")


def _explicit_credits_allowed() -> None:
    if not has_scope("grants:write"):
        raise Forbidden("Sending credits explicitly needs the scope grants:write as well.",
                        details={"required": ["debits:write", "grants:write"],
                                 "missing": ["grants:write"]})


@bp.post("/customers/<external_id>/debits")
@describe(summary="Spend a customer's credits on a feature", body=sc.DebitIn, response=sc.DebitOut,
          status=201, scopes=("debits:write",), idempotent=True, errors=DEBIT_ERRORS, tag="credits",
          description="Priced from the feature price table (credits_per_unit x quantity, quantity "
                      "1 by default) unless `credits` is sent, which needs scope grants:write too. "
                      "The Idempotency-Key is also the ledger key `api-debit:k<api key id>:<key>`, "
                      "shared with this key's batch items.")
@api_key_required("debits:write")
def debit(external_id: str):
    key = key_from_header()
    body = parse(sc.DebitIn)
    path_text(external_id)
    if body.credits is not None:
        _explicit_credits_allowed()
    if current_app.config["API_SQL_DEBIT"] and sqldebit.available():
        # The everyday debit in one statement (services/ledger/sqldebit.py); what it leaves, and
        # an over-limit call (which may be a replay), takes the general path below.
        try:
            limits.check_customer(external_id)
        except RateLimited:
            return _debit(external_id=external_id)
        g.idempotency_key = key
        posted = sqldebit.debit(
            external_id=external_id, credits=body.credits, feature=body.feature,
            quantity=body.quantity, reference=body.reference, meta=body.metadata,
            ledger_key=batch.ledger_key(scoped(key)) if key else None, actor=g.actor,
            reply=reply_of(key, {"external_id": external_id}))
        if posted is not None:
            return ok(posted, 201)
    return _debit(external_id=external_id)


@idempotent(one_transaction=True)
def _debit(external_id: str):
    """The general path: the reply store, the ledger's Python rules (services.ledger.posting)."""
    body = parse(sc.DebitIn)
    limits.check_customer(external_id)
    if body.credits is not None:
        credits = body.credits
    else:
        credits = pricing.credits_for(feature=body.feature, quantity=body.quantity or 1)
    key = scoped(g.get("idempotency_key"))
    entry = ledger.debit(external_id=external_id, credits=credits, feature=body.feature,
                         quantity=body.quantity, reference=body.reference, meta=body.metadata,
                         key=batch.ledger_key(key) if key else None, actor=g.actor,
                         write_at_commit=True)
    return ok({"entry_id": entry.id, "credits": -entry.amount, "balance": entry.balance_after}, 201)


@bp.post("/debits/batch")
@describe(summary="Up to 1,000 debits in one call, one result per item in order",
          body=sc.BatchIn, response=sc.BatchOut, scopes=("debits:write",), idempotent=True,
          errors=("IDEMPOTENCY_KEY_REUSED", "IDEMPOTENCY_KEY_IN_USE"), tag="credits",
          description="Each item's idempotency_key makes it safe to retry the whole batch: applied "
                      "items replay (`replayed: true`), the others run. A failing item "
                      "(CUSTOMER_NOT_FOUND, INSUFFICIENT_CREDITS, VALIDATION_ERROR for an unpriced "
                      "feature, IDEMPOTENCY_KEY_REUSED) does not stop the others. Items with "
                      "`credits` need scope grants:write.")
@api_key_required("debits:write")
@idempotent(one_transaction=True)
def debit_batch():
    body = parse(sc.BatchIn)
    if any(it.credits is not None for it in body.debits):
        _explicit_credits_allowed()
    refused = limits.check_batch([it.customer for it in body.debits])
    items = [batch.Item(customer=it.customer, feature=it.feature, quantity=it.quantity,
                        credits=it.credits, idempotency_key=it.idempotency_key,
                        reference=it.reference, scope=key_scope(), refused=refused.get(i))
             for i, it in enumerate(body.debits)]
    results = batch.debit_many(items, actor=g.actor)
    won = sum(1 for r in results if r["success"])
    return ok({"results": results, "succeeded": won, "failed": len(results) - won})
