"""Analytics: every figure equals a direct sum over the ledger; rollups equal live reads."""
from __future__ import annotations

from datetime import date, datetime, time, timedelta

from sqlalchemy import select

from bench import ledger_data
from models import Allocation, CreditGrant, JobRun, LedgerEntry, Payment, db, utcnow
from services.core import settings as app_settings
from services.ledger import posting as ledger
from services.ledger import rollup as ledger_rollup
from services.ledger import rules
from services.reporting import analytics


def _world(make):
    """Purchases in two currencies, promotional credits, spend on priced features, a task refund,
    a negative adjustment, a claw-back and an expiry — all today."""
    make.feature_price(feature="chat", credits_per_unit=1, provider_cost_micros=2000)
    make.feature_price(feature="video", credits_per_unit=40, provider_cost_micros=300_000)
    a, b = make.customer(), make.customer()
    pa = make.payment(a, amount_minor=1800, credits=2000)  # 0.9 cents a credit
    pb = make.payment(b, provider="razorpay", currency="INR", amount_minor=84_000, credits=1000)
    ledger.grant(customer_id=a.id, credits=2000, source="purchase", cost_minor=1800, currency="USD",
                 payment_id=pa.id, key="pay-a")
    ledger.grant(customer_id=b.id, credits=1000, source="purchase", cost_minor=84_000,
                 currency="INR", payment_id=pb.id, key="pay-b")
    make.grant(a, credits=100, expires_in_days=3, source="promo")  # drawn first
    make.grant(b, credits=50, source="promo")
    d1 = ledger.debit(customer_id=a.id, credits=130, feature="chat", quantity=130, key="d1")
    ledger.debit(customer_id=a.id, credits=80, feature="video", key="d2")
    d3 = ledger.debit(customer_id=b.id, credits=120, feature="video", key="d3")
    ledger.debit(customer_id=b.id, credits=7, feature="chat", key="d4")
    ledger.refund(entry_id=d3.id, credits=40, reason="task failed", key="r3")
    ledger.refund(entry_id=d1.id, credits=10, reason="settled below estimate", key="r1")
    ledger.adjust(customer_id=a.id, credits=-15, reason="correction", actor=rules.SYSTEM, key="adj")
    ledger.adjust(customer_id=b.id, credits=25, reason="goodwill", actor=rules.SYSTEM, key="adj2")
    grant_a = db.session.scalar(select(CreditGrant).where(CreditGrant.payment_id == pa.id))
    ledger.clawback(grant_id=grant_a.id, credits=300, reason="refund", key="claw", payment_id=pa.id)
    old = make.grant(b, credits=30, source="promo")
    # An expiry entry of a bucket due now (paid credits never expire by default).
    stale = ledger.grant(customer_id=b.id, credits=12, source="promo", reason="short",
                         expires_at=utcnow() - timedelta(seconds=1))
    ledger.expire_grant(grant_id=stale.grant_id)
    return a, b, old


def _direct():
    """The figures computed by hand from entries, allocations and grants (Python, no SQL sums)."""
    entries = {e.id: e for e in db.session.scalars(select(LedgerEntry))}
    grants = {g.id: g for g in db.session.scalars(select(CreditGrant))}
    out = {"purchased": 0, "granted": 0, "spent": 0, "expired": 0, "clawed": 0,
           "features": {}, "paid_by_feature": {}, "value": {}}
    for e in entries.values():
        related = entries.get(e.related_entry_id)
        if e.type == "grant":
            paid = grants[e.grant_id].source in ("purchase", "subscription")
            out["purchased" if paid else "granted"] += e.amount
        elif e.type == "adjustment" and e.amount > 0:
            out["granted"] += e.amount
        elif e.type == "debit" or (e.type == "refund" and related and related.type == "debit"):
            out["spent"] -= e.amount
            out["features"][e.feature] = out["features"].get(e.feature, 0) - e.amount
        elif e.type == "expiry":
            out["expired"] -= e.amount
        elif e.type == "clawback":
            out["clawed"] -= e.amount
    for al in db.session.scalars(select(Allocation)):
        e, g = entries[al.entry_id], grants[al.grant_id]
        related = entries.get(e.related_entry_id)
        spend = e.type == "debit" or (e.type == "refund" and related and related.type == "debit")
        if spend and g.source in ("purchase", "subscription"):
            key = (e.feature, g.currency)
            out["paid_by_feature"][key] = out["paid_by_feature"].get(key, 0) - al.credits
            # cost_minor x 10,000 micros per minor unit / amount: exact for these buckets
            assert (al.credits * g.cost_minor * 10_000) % g.amount == 0
            out["value"][key] = out["value"].get(key, 0) - al.credits * g.cost_minor * 10_000 // g.amount
    return out


def _today_range():
    today = utcnow().date()
    return analytics.Range(today, today)


def test_analytics_figures_equal_direct_ledger_sums(make):
    _world(make)
    rng = _today_range()
    a = analytics.build(rng, use_rollup=False)
    want = _direct()
    assert a.total("purchased") == want["purchased"] == 3000
    assert a.total("granted") == want["granted"] == 100 + 50 + 25 + 30 + 12
    assert a.total("spent") == want["spent"] == 130 + 80 + 120 + 7 - 40 - 10
    assert a.total("expired") == want["expired"] == 12
    assert a.total("clawed") == want["clawed"] == 300
    assert {f: c for f, c, _p in a.features} == want["features"] == {"chat": 127, "video": 160}
    assert a.revenue == {"INR": {"providers": {"razorpay": [84_000]}, "total": 84_000, "count": 1},
                         "USD": {"providers": {"stripe": [1800]}, "total": 1800, "count": 1}}
    econ = {r.feature: r for r in a.economics.rows}
    for feature in ("chat", "video"):
        r = econ[feature]
        assert r.paid_credits == want["paid_by_feature"].get((feature, "USD"), 0)
        assert r.revenue_micros == want["value"].get((feature, "USD"), 0)
        assert r.other_revenue == ({"INR": want["value"][(feature, "INR")]}
                                   if (feature, "INR") in want["value"] else {})
    # chat: 127 credits = 127 units x 2,000 micros; video: 160 credits = 4 units x 300,000 micros.
    assert (econ["chat"].cost_micros, econ["video"].cost_micros) == (254_000, 1_200_000)
    assert econ["chat"].margin_micros == econ["chat"].revenue_micros - 254_000
    # a's promo bucket (100, expiring) was drawn first: chat 100 promo + 30 paid - 10 returned.
    assert econ["chat"].paid_credits == 20 and econ["chat"].revenue_micros == 20 * 9000
    # What-if: price the paid credits at 2 cents each.
    what = analytics.build(rng, what_if_price_minor=2, use_rollup=False).economics
    paid = econ["chat"].paid_credits + econ["video"].paid_credits
    assert what.what_if_revenue == paid * 2 * 10_000
    assert what.what_if_margin == what.what_if_revenue - 254_000 - 1_200_000
    assert what.price_setting_minor == app_settings.get("price_per_credit_minor")
    tops = a.top
    assert [(t["customer"].id, t["credits"]) for t in tops] == sorted(
        [(t["customer"].id, t["credits"]) for t in tops], key=lambda x: -x[1])
    assert sum(t["credits"] for t in tops) == want["spent"]


def test_rollup_equals_live_and_catches_late_and_back_dated_entries(make):
    a, _b, _old = _world(make)
    rng = _today_range()
    live = analytics.build(rng, use_rollup=False)
    tomorrow = datetime.combine(rng.last + timedelta(days=1), time(1, 0))
    res = ledger_rollup.refresh(now=tomorrow)
    assert res.rolled_through == rng.last
    rolled = analytics.build(rng)
    assert rolled.rolled_through == rng.last
    for series in ("purchased", "granted", "spent", "expired", "clawed", "features"):
        assert getattr(rolled, series) == getattr(live, series), series
    assert [(r.feature, r.revenue_micros, r.cost_micros) for r in rolled.economics.rows] == \
        [(r.feature, r.revenue_micros, r.cost_micros) for r in live.economics.rows]
    # A late entry in a rolled-up day: stale until the next refresh, which rechecks that day.
    ledger.debit(customer_id=a.id, credits=3, feature="chat", key="late")
    assert analytics.build(rng).total("spent") == live.total("spent")
    ledger_rollup.refresh(now=tomorrow)
    assert analytics.build(rng).total("spent") == live.total("spent") + 3
    # Back-dated bulk rows (a migration, a demo load) ten days ago are found by their ids.
    old_day = rng.last - timedelta(days=10)
    ledger_data.one_customer_many_debits(db.session, debits=5,
                                         start=datetime.combine(old_day, time(12, 0)))
    ledger_rollup.refresh(now=tomorrow)
    past = analytics.Range(old_day, old_day)
    assert analytics.build(past).total("spent") == 5 == analytics.build(past, use_rollup=False).total("spent")
    assert analytics.build(past).total("purchased") == 5


def test_range_parsing():
    today = date(2026, 3, 31)
    r = analytics.Range.parse({}, today)
    assert (r.first, r.last, len(r.days)) == (date(2026, 3, 2), today, 30)
    r = analytics.Range.parse({"from": "2026-03-10", "to": "2026-03-01"}, today)
    assert (r.first, r.last) == (date(2026, 3, 1), date(2026, 3, 10))
    r = analytics.Range.parse({"days": "7"}, today)
    assert (r.first, r.last) == (date(2026, 3, 25), today)
    r = analytics.Range.parse({"from": "yesterday"}, today)
    assert r.errors and len(r.days) == 30
    r = analytics.Range.parse({"from": "2000-01-01"}, today)
    assert len(r.days) == analytics.MAX_DAYS and r.errors


def test_analytics_page_charts_and_what_if(login, make):
    _world(make)
    finance = login("finance")
    html = finance.get("/analytics/").get_data(as_text=True)
    assert "Credits granted vs spent per day" in html and "<svg" in html and "<polyline" in html
    assert "Unit economics" in html and "Top customers" in html and "Breakage" in html
    assert " style=" not in html and "<script>" not in html  # CSP: no inline style or script
    today = utcnow().date().isoformat()
    frag = finance.htmx(f"/analytics/?from={today}&to={today}").get_data(as_text=True)
    assert "<html" not in frag and "Spend by feature" in frag
    econ = finance.htmx(f"/analytics/?from={today}&to={today}&price=3",
                        headers={"HX-Target": "economics"}).get_data(as_text=True)
    assert "<html" not in econ and 'value="3"' in econ and "Top customers" not in econ
    assert login("support").get("/analytics/").status_code == 403


def test_rollup_job_runs_and_records_its_run(app, make):
    _world(make)
    from jobs import run
    r = run("rollup_ledger", trigger="cli")
    assert r.status == "succeeded" and r.details["rolled_through"] is not None
    assert db.session.scalar(select(JobRun).where(JobRun.job == "rollup_ledger")).id == r.id
    state = ledger_rollup.state()
    assert state.rolled_through == (utcnow() - ledger_rollup.SETTLE).date() - timedelta(days=1)
    assert Payment.query.count() == 2
