"""The monthly distribution: segment rules, exactly once per (period, customer), dry run, errors."""
from __future__ import annotations

import logging
from datetime import timedelta

from sqlalchemy import func, select, text

from models import CreditGrant, JobRun, JobRunError, LedgerEntry, db, utcnow
from services.core import settings as app_settings
from services.jobs import distribution
from services.ledger import posting as ledger
from services.ledger import reconcile

PERIOD = "2031-05"


def _plans(make):
    return {
        "month": make.plan(interval="month", monthly_credits=1000, credit_expiry_days=31),
        "year": make.plan(interval="year", monthly_credits=800, credit_expiry_days=40),
        "lifetime": make.plan(interval="lifetime", monthly_credits=600, credit_expiry_days=None),
        "free": make.plan(interval="free", monthly_credits=0, credit_expiry_days=10),
    }


def _granted(customer) -> list[int]:
    return list(db.session.scalars(select(CreditGrant.amount).where(
        CreditGrant.customer_id == customer.id, CreditGrant.source == "distribution")))


def _set_period_end(customer, when):
    db.session.execute(text("UPDATE customers SET current_period_end = :w WHERE id = :i"),
                       {"w": when, "i": customer.id})
    db.session.commit()


def test_segment_rules(make, app):
    app_settings.update(key="free_monthly_credits", value=50)
    p = _plans(make)
    later, earlier = utcnow() + timedelta(days=100), utcnow() - timedelta(days=1)
    c = {
        "no_plan": make.customer(),
        "free_plan": make.customer(plan=p["free"]),
        "monthly": make.customer(plan=p["month"], subscription_status="active"),
        "monthly_past_due": make.customer(plan=p["month"], subscription_status="past_due"),
        "monthly_cancelled_paid": make.customer(plan=p["month"], subscription_status="cancelled"),
        "monthly_cancelled_over": make.customer(plan=p["month"], subscription_status="cancelled"),
        "yearly": make.customer(plan=p["year"], subscription_status="active"),
        "yearly_none": make.customer(plan=p["year"]),
        "yearly_past_due": make.customer(plan=p["year"], subscription_status="past_due"),
        "yearly_cancelled_paid": make.customer(plan=p["year"], subscription_status="cancelled"),
        "yearly_cancelled_over": make.customer(plan=p["year"], subscription_status="cancelled"),
        "lifetime": make.customer(plan=p["lifetime"], subscription_status="active"),
        "lifetime_cancelled": make.customer(plan=p["lifetime"], subscription_status="cancelled"),
    }
    _set_period_end(c["monthly_cancelled_paid"], later)
    _set_period_end(c["monthly_cancelled_over"], earlier)
    _set_period_end(c["yearly_cancelled_paid"], later)
    _set_period_end(c["yearly_cancelled_over"], earlier)
    deleted = make.customer()
    db.session.execute(text("UPDATE customers SET deleted_at = :t WHERE id = :i"),
                       {"t": utcnow(), "i": deleted.id})
    db.session.commit()

    preview = distribution.run(period=PERIOD, dry_run=True)
    assert db.session.scalar(select(func.count(JobRun.id))) == 0  # the dry run wrote nothing

    result = distribution.run(period=PERIOD, trigger="manual")
    expected = {
        "no_plan": [50], "free_plan": [50], "monthly": [], "monthly_past_due": [],
        "monthly_cancelled_paid": [], "monthly_cancelled_over": [50],
        "yearly": [800], "yearly_none": [800], "yearly_past_due": [],
        "yearly_cancelled_paid": [800], "yearly_cancelled_over": [50],
        "lifetime": [600], "lifetime_cancelled": [50],
    }
    assert {k: _granted(v) for k, v in c.items()} == expected
    assert _granted(deleted) == []
    n = sum(len(v) for v in expected.values())
    assert (result.users_count, result.processed_count, result.error_count) == (n, n, 0)
    assert result.credits == sum(sum(v) for v in expected.values())
    # The preview said exactly this, per customer and per segment.
    assert {r["customer_id"]: [r["credits"]] for r in preview.rows} == \
        {v.id: expected[k] for k, v in c.items() if expected[k]}
    assert preview.users_count == n and preview.credits == result.credits
    assert preview.segments["monthly"]["customers"] == 3
    assert preview.segments["held"]["customers"] == 1
    assert result.segments == {"free": {"customers": 5, "credits": 250},
                               "yearly": {"customers": 3, "credits": 2400},
                               "lifetime": {"customers": 1, "credits": 600}}

    # Expiry: the plan's days, the free plan's days, the default setting for the rest.
    run = db.session.get(JobRun, result.run_id)
    def expiry_days(customer):
        g = db.session.scalar(select(CreditGrant).where(CreditGrant.customer_id == customer.id,
                                                        CreditGrant.source == "distribution"))
        return round((g.expires_at - run.started_at).total_seconds() / 86400)
    assert expiry_days(c["yearly"]) == 40
    assert expiry_days(c["free_plan"]) == 10
    assert expiry_days(c["no_plan"]) == app_settings.get("default_expiry_days")
    assert expiry_days(c["lifetime"]) == app_settings.get("default_expiry_days")
    assert reconcile.run().ok


def test_a_second_run_of_the_period_is_a_no_op_and_reports_the_same_counts(make):
    customers = [make.customer() for _ in range(5)]
    first = distribution.run(period=PERIOD)
    second = distribution.run(period=PERIOD, trigger="cron")
    assert second.already_done and second.run_id == first.run_id
    assert (second.users_count, second.processed_count, second.error_count) == (5, 5, 0)
    assert db.session.scalar(select(func.count(JobRun.id))) == 1
    assert all(_granted(c) == [50] for c in customers)
    # Another period is another run.
    third = distribution.run(period="2031-06")
    assert third.run_id != first.run_id and third.processed_count == 5
    assert reconcile.run().ok


def test_a_rerun_of_a_failed_run_grants_only_what_is_missing(make):
    customers = [make.customer() for _ in range(4)]
    # Customer 0 got this period's credits already (an earlier, interrupted attempt).
    ledger.grant(customer_id=customers[0].id, credits=50, source="distribution", period=PERIOD,
                 key=f"distribution:{PERIOD}:{customers[0].id}")
    result = distribution.run(period=PERIOD)
    assert [len(_granted(c)) for c in customers] == [1, 1, 1, 1]
    assert result.processed_count == 3
    assert reconcile.run().ok


def test_expiry_runs_before_the_grants(make):
    c = make.customer()
    old = make.grant(c, credits=30, expires_in_days=-1)
    result = distribution.run(period=PERIOD)
    db.session.refresh(old)
    assert old.remaining == 0 and old.expired_at is not None
    assert result.expired == {"grants": 1, "credits": 30}
    types = list(db.session.scalars(select(LedgerEntry.type).where(
        LedgerEntry.customer_id == c.id).order_by(LedgerEntry.id)))
    assert types == ["grant", "expiry", "grant"]
    assert ledger.balance(c.id) == 50
    assert reconcile.run().ok


def test_a_customer_without_an_account_is_an_error_and_the_run_goes_on(make):
    good = [make.customer() for _ in range(3)]
    orphan = make.customer()
    db.session.execute(text("DELETE FROM accounts WHERE customer_id = :i"), {"i": orphan.id})
    db.session.commit()
    result = distribution.run(period=PERIOD)
    assert (result.users_count, result.processed_count, result.error_count) == (4, 3, 1)
    err = db.session.scalar(select(JobRunError))
    assert err.customer_id == orphan.id and "account" in err.error
    assert all(_granted(c) == [50] for c in good)
    assert db.session.get(JobRun, result.run_id).status == "partial" == result.status


def test_run_logs_a_starting_and_a_finished_line(make, caplog):
    make.customer()
    with caplog.at_level(logging.INFO, logger="creditdesk.jobs"):
        result = distribution.run(period=PERIOD)
    lines = [r.getMessage() for r in caplog.records if r.name == "creditdesk.jobs"]
    assert any(m.startswith("distribution.starting") and f"job_run_id={result.run_id}" in m
               for m in lines)
    assert any(m.startswith("distribution.finished") and f"job_run_id={result.run_id}" in m
               and "usersCount=1 processedCount=1 errorCount=0" in m for m in lines)


def test_bad_period_is_refused(app):
    import pytest

    from services.core.errors import ValidationFailed
    with pytest.raises(ValidationFailed):
        distribution.run(period="2031-13")


def test_demo_distribution_grants_carry_their_period_run_as_the_job_writes_them(app):
    from services.demo import dataset as demo

    demo.load(customers=60, seed=3, months=3)
    runs = {r.period: r for r in db.session.scalars(
        select(JobRun).where(JobRun.job == "distribute_credits"))}
    grants = list(db.session.scalars(select(CreditGrant).where(
        CreditGrant.source == "distribution")))
    assert grants and runs
    assert all(g.job_run_id == runs[g.period].id for g in grants)
    entries = list(db.session.scalars(select(LedgerEntry).where(
        LedgerEntry.idempotency_key.like("distribution:%"))))
    assert len(entries) == len(grants)
    assert all(e.job_run_id == runs[e.idempotency_key.split(":")[1]].id
               and (e.actor_type, e.actor_id) == ("job", "distribute_credits") for e in entries)
    for period, r in runs.items():
        mine = [g for g in grants if g.period == period]
        assert (r.status, r.processed_count, r.users_count, r.error_count) == \
            ("succeeded", len(mine), len(mine), 0)
        assert r.details["credits"] == sum(g.amount for g in mine)
    # A trigger of a demo period is the no-op of a period that ran.
    period = max(runs)
    again = distribution.run(period=period, trigger="cli")
    assert again.already_done and again.run_id == runs[period].id
    assert reconcile.run().ok


def test_the_rows_of_a_grant_are_the_ones_the_bulk_ledger_builds(make, app):
    """PostgreSQL builds a chunk's rows in one statement, SQLite through services.ledger.bulk:
    both write these columns and values (the request hash is rules.fingerprint)."""
    from models import Account, Allocation, OutboxEvent
    from services.ledger.rules import fingerprint

    app_settings.update(key="free_monthly_credits", value=50)
    year = make.plan(interval="year", monthly_credits=800, credit_expiry_days=40)
    forever = make.plan(interval="lifetime", monthly_credits=600, credit_expiry_days=0)
    free = make.plan(interval="free", monthly_credits=0, credit_expiry_days=10)
    cs = {"none": make.customer(external_id="r-none", credits=30),
          "year": make.customer(external_id="r-year", plan=year, subscription_status="active"),
          "forever": make.customer(external_id="r-forever", plan=forever),
          "free": make.customer(external_id="r-free", plan=free)}
    versions = {c.id: db.session.scalar(select(Account.version).where(Account.customer_id == c.id))
                for c in cs.values()}
    result = distribution.run(period=PERIOD, trigger="manual")
    run = db.session.get(JobRun, result.run_id)
    db.session.expire_all()
    want = {"none": (50, None, "free", 365), "year": (800, year.id, "yearly", 40),
            "forever": (600, forever.id, "lifetime", None), "free": (50, None, "free", 10)}
    for name, c in cs.items():
        credits, plan_id, segment, days = want[name]
        g = db.session.scalar(select(CreditGrant).where(CreditGrant.customer_id == c.id,
                                                        CreditGrant.source == "distribution"))
        assert (g.amount, g.remaining, g.plan_id, g.period, g.job_run_id, g.cost_minor,
                g.currency, g.payment_id, g.expired_at, g.created_at) == \
            (credits, credits, plan_id, PERIOD, run.id, 0, None, None, None, run.started_at)
        assert g.expires_at == (None if days is None else run.started_at + timedelta(days=days))
        key = f"distribution:{PERIOD}:{c.id}"
        e = db.session.scalar(select(LedgerEntry).where(LedgerEntry.idempotency_key == key))
        before = 30 if name == "none" else 0
        assert (e.type, e.amount, e.balance_before, e.balance_after, e.grant_id, e.account_id,
                e.actor_type, e.actor_id, e.reason, e.request_hash, e.job_run_id, e.created_at,
                e.feature, e.reference, e.request_id, e.meta) == \
            ("grant", credits, before, before + credits, g.id, g.account_id, "job",
             "distribute_credits", f"Monthly credits {PERIOD} ({segment})",
             fingerprint("grant", key=key), run.id, run.started_at, None, None, None, None)
        [a] = db.session.scalars(select(Allocation).where(Allocation.entry_id == e.id))
        assert (a.grant_id, a.credits) == (g.id, credits)
        acct = db.session.scalar(select(Account).where(Account.customer_id == c.id))
        assert (acct.balance, acct.version) == (before + credits, versions[c.id] + 1)
        [ev] = [x for x in db.session.scalars(select(OutboxEvent).where(
            OutboxEvent.customer_id == c.id, OutboxEvent.type == "grant.created"))
            if x.data["source"] == "distribution"]
        assert ev.event_id.startswith("msg_") and len(ev.event_id) == 36
        assert ev.created_at == run.started_at and ev.dispatched_at is None
        assert ev.data == {"grant_id": g.id, "credits": credits, "source": "distribution",
                           "expires_at": None if g.expires_at is None
                           else g.expires_at.isoformat(timespec="microseconds") + "Z",
                           "external_id": c.external_id}
    assert reconcile.run().ok
