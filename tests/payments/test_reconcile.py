"""Provider reconciliation: payments and refunds matched one to one with grants and claw-backs."""
from __future__ import annotations

import csv

from sqlalchemy import select

from models import CreditGrant, Refund, db, utcnow
from services.ledger import posting as ledger
from services.payments import reconcile as payment_reconcile
from services.refunds import requests as refunds


def _paid(make, customer, credits=1000, **kw):
    """A payment and its one grant, as the purchase flow writes them."""
    p = make.payment(customer, credits=credits, amount_minor=credits, **kw)
    ledger.grant(customer_id=customer.id, credits=credits, source="purchase", cost_minor=credits,
                 currency=p.currency, payment_id=p.id, key=f"payment:{p.provider}:{p.provider_payment_id}")
    return p


def _by_status(result):
    out = {}
    for i in result.items:
        out.setdefault(i.status, []).append(i)
    return out


def test_everything_matches_when_the_books_agree(make, app):
    c = make.customer()
    p = _paid(make, c)
    make.payment(c, status="failed", credits=500)  # never paid: nothing to grant
    make.payment(c, credits=0, amount_minor=19000, kind="subscription")  # a yearly plan: no credits
    refunds.apply_provider_refund(payment_id=p.id, refund_key="stripe:ch_1:500", amount_minor=500,
                                  refunded_total_minor=500, provider_refund_id="re_1")
    result = payment_reconcile.run()
    assert result.ok, result.lines()
    assert result.summary() == {"payment": {"matched": 3, "problems": 0},
                                "refund": {"matched": 1, "problems": 0}}
    refund_item = next(i for i in result.items if i.kind == "refund")
    assert refund_item.credits == refund_item.ledger_credits == 500


def test_finds_a_missing_grant_and_a_doubled_one(make, app):
    c = make.customer()
    _paid(make, c)
    missing = make.payment(c, credits=700, amount_minor=700)  # paid, never credited
    doubled = _paid(make, c, credits=300)
    # A second credit of the same payment (say a webhook replay that bypassed the key).
    ledger.grant(customer_id=c.id, credits=300, source="purchase", payment_id=doubled.id, key="again")
    short = make.payment(c, credits=400, amount_minor=400)
    ledger.grant(customer_id=c.id, credits=40, source="purchase", payment_id=short.id, key="short")
    unpaid = make.payment(c, status="created", credits=100)
    ledger.grant(customer_id=c.id, credits=100, source="purchase", payment_id=unpaid.id, key="early")
    ledger.grant(customer_id=c.id, credits=50, source="purchase", key="no-payment")
    found = _by_status(payment_reconcile.run())
    assert [i.payment_id for i in found["missing_grant"]] == [missing.id]
    assert [i.payment_id for i in found["doubled_grant"]] == [doubled.id]
    assert found["doubled_grant"][0].ledger_credits == 600 and len(found["doubled_grant"][0].entry_ids) == 2
    assert [i.payment_id for i in found["credits_mismatch"]] == [short.id]
    assert [i.payment_id for i in found["grant_for_unpaid_payment"]] == [unpaid.id]
    assert [i.ledger_credits for i in found["grant_without_payment"]] == [50]
    assert len(found["matched"]) == 1


def test_finds_refunds_without_claw_back_and_claw_backs_without_refund(make, app):
    c = make.customer()
    ok = _paid(make, c)
    refunds.apply_provider_refund(payment_id=ok.id, refund_key="rk-ok", amount_minor=1000,
                                  refunded_total_minor=1000, provider_refund_id="re_ok")
    # A refund recorded as processed that took credits, but no claw-back reached the ledger.
    lost = _paid(make, c)
    db.session.add(Refund(payment_id=lost.id, customer_id=c.id, status="processed", credits=200,
                          amount_minor=200, currency="USD", idempotency_key="rk-lost",
                          provider_refund_id="re_lost", processed_at=utcnow()))
    lost.refunded_minor = 200
    db.session.commit()
    # Credits clawed back from a payment nobody refunded.
    orphan = _paid(make, c)
    g = db.session.scalar(select(CreditGrant).where(CreditGrant.payment_id == orphan.id))
    ledger.clawback(grant_id=g.id, credits=100, reason="manual", key="claw-orphan", payment_id=orphan.id)
    # A refund clawed back twice.
    twice = _paid(make, c)
    refunds.apply_provider_refund(payment_id=twice.id, refund_key="rk-twice", amount_minor=100,
                                  refunded_total_minor=100, provider_refund_id="re_twice")
    g2 = db.session.scalar(select(CreditGrant).where(CreditGrant.payment_id == twice.id))
    ledger.clawback(grant_id=g2.id, credits=100, reason="again", key="claw-twice", payment_id=twice.id)
    result = payment_reconcile.run()
    found = _by_status(result)
    assert {i.kind for i in found["missing_clawback"]} == {"refund", "clawback"}
    assert {i.payment_id for i in found["missing_clawback"]} == {lost.id}
    assert [i.payment_id for i in found["clawback_without_refund"]] == [orphan.id]
    assert [(i.payment_id, i.credits, i.ledger_credits) for i in found["doubled_clawback"]] == \
        [(twice.id, 100, 200)]
    matched_refunds = [i for i in found["matched"] if i.kind == "refund"]
    assert {i.payment_id for i in matched_refunds} == {ok.id, twice.id}
    assert not result.ok and result.problems[0].ok is False  # problems are listed first


def test_command_page_and_csv(make, app, login, tmp_path):
    c = make.customer()
    _paid(make, c)
    runner = app.test_cli_runner()
    res = runner.invoke(args=["reconcile-payments"])
    assert res.exit_code == 0 and "Payments and refunds match the ledger." in res.output
    missing = make.payment(c, credits=700, amount_minor=700, provider_payment_id="pi_missing")
    out = tmp_path / "recon.csv"
    res = runner.invoke(args=["reconcile-payments", "--csv", str(out)])
    assert res.exit_code == 1
    assert "missing_grant" in res.output and f"payment {missing.id}" in res.output
    rows = list(csv.DictReader(out.open(newline="", encoding="utf-8")))
    assert {(r["status"], r["ok"]) for r in rows} == {("matched", "true"), ("missing_grant", "false")}
    html = login("finance").get("/reports/reconciliation").get_data(as_text=True)
    assert "1 problem(s)" in html and "missing grant" in html and "pi_missing" in html
    csv_resp = login("admin").get("/reports/reconciliation.csv")
    assert csv_resp.status_code == 200 and b"missing_grant" in csv_resp.data
