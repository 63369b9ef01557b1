"""Customers over the API: upsert, profile, ledger paging, grants, refund eligibility, catalogue."""
from __future__ import annotations

from datetime import timedelta

from models import CreditGrant, db, utcnow
from services.ledger import customers
from services.ledger import posting as ledger
from tests.api.helpers import counts
from tests.helpers import ApiClient, assert_error


def test_upsert_creates_then_updates(api, make):
    plan = make.plan(code="pro")
    status, body, _ = api.put("/api/v1/customers/u-1", {"email": "ada@example.com", "name": "Ada"})
    assert status == 201 and body["data"]["created"] is True and body["data"]["balance"] == 0
    status, body, _ = api.put("/api/v1/customers/u-1", {"email": "ada@lovelace.dev", "plan": "pro"})
    assert status == 200 and body["data"]["created"] is False
    c = customers.get_by_external_id("u-1")
    assert (c.email, c.name, c.plan_id) == ("ada@lovelace.dev", "Ada", plan.id)


def test_upsert_refuses_unknown_plan_and_bad_email(api):
    assert_error(*api.put("/api/v1/customers/u-2", {"email": "a@b.c", "plan": "nope"})[:2],
                 "VALIDATION_ERROR", 422)
    status, body, _ = api.put("/api/v1/customers/u-2", {"email": "not-an-email"})
    assert_error(status, body, "VALIDATION_ERROR", 422)
    assert "email" in body["details"]


def test_profile_shows_balance_and_live_grants(api, make):
    c = make.customer(external_id="p-1")
    make.grant(c, credits=30, expires_in_days=5)
    make.grant(c, credits=20)
    status, body, _ = api.get("/api/v1/customers/p-1")
    data = body["data"]
    assert status == 200 and data["balance"] == 50
    assert [(g["amount"], g["remaining"]) for g in data["grants"]] == [(30, 30), (20, 20)]
    assert data["grants"][0]["expires_at"].endswith("Z") and data["grants"][1]["expires_at"] is None


def test_scopes_of_customer_routes(api_as, make):
    make.customer(external_id="sc")
    writer = api_as("customers:write")
    assert_error(*writer.get("/api/v1/customers/sc")[:2], "AUTH_FORBIDDEN", 403)
    reader = api_as("customers:read")
    assert_error(*reader.put("/api/v1/customers/sc", {"email": "x@y.z"})[:2], "AUTH_FORBIDDEN", 403)


def test_ledger_pages_newest_first_with_an_opaque_cursor(api, make):
    c = make.customer(external_id="l-1", credits=100)
    for i in range(6):
        ledger.debit(customer_id=c.id, credits=1, feature="chat", reference=f"r{i}")
    seen, cursor, pages = [], None, 0
    while True:
        url = "/api/v1/customers/l-1/ledger?limit=3" + (f"&cursor={cursor}" if cursor else "")
        status, body, _ = api.get(url)
        assert status == 200
        seen += [e["id"] for e in body["data"]["entries"]]
        cursor, pages = body["data"]["next_cursor"], pages + 1
        if cursor is None:
            break
        assert cursor.isascii() and not cursor.isdigit()
    assert pages == 3 and len(seen) == 7 and seen == sorted(seen, reverse=True)
    first = api.get("/api/v1/customers/l-1/ledger?limit=1")[1]["data"]["entries"][0]
    assert first["type"] == "debit" and first["reference"] == "r5" and first["balance_after"] == 94


def test_ledger_rejects_bad_limit_and_cursor(api, make):
    make.customer(external_id="l-2")
    for q in ["limit=0", "limit=201", "limit=abc", "cursor=%%%", "cursor=ZTE5OTk5OTk5OTk5OTk5OTk5OTk5OQ",
              "cursor=bm9wZQ", "other=1"]:
        status, body, _ = api.get(f"/api/v1/customers/l-2/ledger?{q}")
        assert_error(status, body, "VALIDATION_ERROR", 422)
    assert api.get("/api/v1/customers/l-2/ledger?limit=200")[0] == 200


def test_usage_sums_spending_per_feature_and_day_net_of_refunds(api, make):
    c = make.customer(external_id="u-1", credits=100)
    make.customer(external_id="u-other", credits=100)
    chat = [ledger.debit(customer_id=c.id, credits=n, feature="chat") for n in (10, 5)]
    ledger.debit(customer_id=c.id, credits=7, feature="image")
    ledger.refund(entry_id=chat[0].id, credits=4, reason="partial failure")
    ledger.debit(external_id="u-other", credits=50, feature="chat")
    status, body, _ = api.get("/api/v1/customers/u-1/usage")
    assert status == 200, body
    u, today = body["data"], utcnow().date()
    assert (u["from"], u["to"]) == ((today - timedelta(days=29)).isoformat(), today.isoformat())
    assert u["totals"] == {"spent": 22, "refunded": 4, "net": 18, "debits": 3}
    assert u["by_feature"] == [
        {"feature": "chat", "spent": 15, "refunded": 4, "net": 11, "debits": 2},
        {"feature": "image", "spent": 7, "refunded": 0, "net": 7, "debits": 1}]
    assert u["by_day"] == [{"day": today.isoformat(), "spent": 22, "refunded": 4, "net": 18,
                            "debits": 3}]
    past = api.get("/api/v1/customers/u-1/usage?from=2020-01-01&to=2020-01-31")[1]["data"]
    assert past["totals"]["spent"] == 0 and past["by_feature"] == [] and past["by_day"] == []


def test_usage_refuses_bad_periods(api, make):
    make.customer(external_id="u-2")
    for q in ["from=2026-02-01&to=2026-01-01", "from=2024-01-01&to=2026-01-01", "from=x",
              "to=2026-13-01", "days=3", "to=0", "from=1700000000", "to=2026-1-1"]:
        status, body, _ = api.get(f"/api/v1/customers/u-2/usage?{q}")
        assert_error(status, body, "VALIDATION_ERROR", 422)
    status, body, _ = api.get("/api/v1/customers/nobody/usage")
    assert_error(status, body, "CUSTOMER_NOT_FOUND", 404)


def test_grant_adds_a_bucket_with_expiry(api, make):
    c = make.customer(external_id="g-1")
    when = (utcnow() + timedelta(days=30)).replace(microsecond=0)
    status, body, _ = api.post("/api/v1/customers/g-1/grants",
                               {"credits": 40, "source": "promo", "reason": "launch week",
                                "expires_at": when.isoformat() + "Z"}, headers={"Idempotency-Key": "gr-1"})
    assert status == 201 and body["data"]["balance"] == 40 and body["data"]["credits"] == 40
    g = db.session.get(CreditGrant, body["data"]["grant_id"])
    assert (g.source, g.remaining, g.expires_at) == ("promo", 40, when)
    again = api.post("/api/v1/customers/g-1/grants",
                     {"credits": 40, "source": "promo", "reason": "launch week",
                      "expires_at": when.isoformat() + "Z"}, headers={"Idempotency-Key": "gr-1"})
    assert again[1] == body and ledger.balance(c.id) == 40


def test_grant_validation_and_scope(api, api_as, make):
    make.customer(external_id="g-2")
    before = counts()
    for bad in [{"credits": 10, "source": "purchase", "reason": "x"},
                {"credits": 0, "source": "promo", "reason": "x"},
                {"credits": 10, "source": "promo", "reason": "  "},
                {"credits": 10, "source": "promo", "reason": "x", "expires_at": "2001-01-01T00:00:00Z"},
                {"credits": 10, "source": "promo", "reason": "x", "expires_at": "soon"},
                {"credits": 10, "source": "promo"}]:
        assert_error(*api.post("/api/v1/customers/g-2/grants", bad)[:2], "VALIDATION_ERROR", 422)
    assert_error(*api.post("/api/v1/customers/nobody/grants",
                           {"credits": 1, "source": "promo", "reason": "x"})[:2], "CUSTOMER_NOT_FOUND", 404)
    assert_error(*api_as("debits:write").post("/api/v1/customers/g-2/grants",
                                              {"credits": 1, "source": "promo", "reason": "x"})[:2],
                 "AUTH_FORBIDDEN", 403)
    assert counts() == before


def test_refund_eligibility_per_purchase(api, make):
    from services.core import settings

    c = make.customer(external_id="r-1")
    spent = make.payment(c, amount_minor=1000, credits=100, currency="USD")
    old = make.payment(c, amount_minor=500, credits=50, paid_at=utcnow() - timedelta(days=30))
    partly = make.payment(c, amount_minor=2000, credits=200, currency="INR")
    refunded = make.payment(c, amount_minor=300, credits=30, status="refunded", refunded_minor=300)
    for p in (spent, old, partly, refunded):
        make.grant(c, credits=p.credits, source="purchase", payment_id=p.id)
    ledger.debit(customer_id=c.id, credits=230, feature="chat")  # 100 of spent, 50 of old, 80 of partly
    status, body, _ = api.get("/api/v1/customers/r-1/refund-eligibility")
    assert status == 200
    data = body["data"]
    assert data["window_days"] == settings.get("refund_window_days") and data["eligible"] is True
    rows = {p["payment_id"]: (p["eligible"], p["refundable_credits"], p["refundable_amount"],
                              p["currency"], p["reason"]) for p in data["purchases"]}
    assert rows == {
        spent.id: (False, 0, 0, "USD", "all credits of this purchase are used or expired"),
        old.id: (False, 0, 0, "USD", "outside the 14-day refund window"),
        partly.id: (True, 120, 1200, "INR", "eligible"),
        refunded.id: (False, 0, 0, "USD", "already refunded in full"),
    }
    assert_error(*api.get("/api/v1/customers/nobody/refund-eligibility")[:2], "CUSTOMER_NOT_FOUND", 404)


def test_refund_eligibility_partly_used_purchase_is_pro_rata(api, make):
    c = make.customer(external_id="r-2")
    p = make.payment(c, amount_minor=999, credits=100)
    make.grant(c, credits=100, source="purchase", payment_id=p.id)
    ledger.debit(customer_id=c.id, credits=37, feature="chat")
    row = api.get("/api/v1/customers/r-2/refund-eligibility")[1]["data"]["purchases"][0]
    assert (row["eligible"], row["refundable_credits"], row["refundable_amount"]) == (True, 63, 629)
    ledger.debit(customer_id=c.id, credits=63, feature="chat")
    row = api.get("/api/v1/customers/r-2/refund-eligibility")[1]["data"]["purchases"][0]
    assert (row["eligible"], row["refundable_credits"]) == (False, 0) and "used" in row["reason"]


def test_catalogue_lists_active_packages_and_plans(api, api_as, make):
    from models import utcnow as now

    make.package(code="small", credits=100, price_minor=500, sort_order=1)
    make.package(code="big", credits=1000, price_minor=4000, sort_order=2)
    make.package(code="retired", archived_at=now())
    make.plan(code="free", interval="free", price_minor=0)
    make.plan(code="old", archived_at=now())
    status, body, _ = api_as("customers:read").get("/api/v1/packages")
    assert status == 200 and [p["code"] for p in body["data"]["packages"]] == ["small", "big"]
    assert body["data"]["packages"][0] == {"id": body["data"]["packages"][0]["id"], "code": "small",
                                           "name": body["data"]["packages"][0]["name"], "credits": 100,
                                           "price_minor": 500, "currency": "USD", "expiry_days": None,
                                           "pricing": "fixed", "discount_bp": 0}
    plans = api.get("/api/v1/plans")[1]["data"]["plans"]
    assert [p["code"] for p in plans] == ["free"]
    assert_error(*ApiClient(api.client.application, None).get("/api/v1/plans")[:2],
                 "AUTH_UNAUTHORIZED", 401)
