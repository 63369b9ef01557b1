"""grant.expiring: once per grant, N days before it expires (services/ledger/expiry_notices.py)."""
from __future__ import annotations

import threading

from sqlalchemy import select

import jobs
from models import CreditGrant, JobRun, OutboxEvent, db
from services.core import settings as app_settings
from services.ledger import expiry_notices


def _notices() -> list[dict]:
    db.session.rollback()
    return [e.data for e in db.session.scalars(select(OutboxEvent).where(
        OutboxEvent.type == "grant.expiring").order_by(OutboxEvent.id))]


def test_a_grant_expiring_within_the_notice_days_is_notified_once(app, make):
    c = make.customer()
    soon = make.grant(c, credits=40, expires_in_days=3)
    make.grant(c, credits=50, expires_in_days=30)  # later than 7 days
    make.grant(c, credits=60, expires_in_days=3, source="purchase")  # paid: never expires
    make.grant(c, credits=70, expires_in_days=-1)  # already past: the expiry job's
    make.grant(c, credits=80)  # no expiry
    res = expiry_notices.run_pass()
    assert (res.grants, res.credits) == (1, 40)
    [data] = _notices()
    assert data == {"external_id": c.external_id, "grant_id": soon.id, "credits": 40,
                    "expires_at": expiry_notices.iso(soon.expires_at), "source": "promo"}
    assert db.session.get(CreditGrant, soon.id).expiry_notice_at is not None
    assert expiry_notices.run_pass().grants == 0 and len(_notices()) == 1


def test_the_notice_carries_what_is_left_and_skips_empty_buckets(app, make):
    from services.ledger import posting as ledger

    c = make.customer()
    g = make.grant(c, credits=40, expires_in_days=2)
    ledger.debit(customer_id=c.id, credits=15, feature="chat")
    empty = make.customer()
    make.grant(empty, credits=10, expires_in_days=2)
    ledger.debit(customer_id=empty.id, credits=10, feature="chat")
    expiry_notices.run_pass()
    assert [(d["grant_id"], d["credits"]) for d in _notices()] == [(g.id, 25)]


def test_zero_days_turns_it_off_and_a_later_setting_picks_up(app, make):
    c = make.customer()
    make.grant(c, credits=40, expires_in_days=10)
    app_settings.update(key="expiry_notice_days", value=0, reason="off")
    assert expiry_notices.run_pass().grants == 0
    app_settings.update(key="expiry_notice_days", value=14, reason="longer")
    assert expiry_notices.run_pass().grants == 1
    assert len(_notices()) == 1


def test_two_concurrent_runs_notify_each_grant_once(app, make, monkeypatch):
    monkeypatch.setattr(expiry_notices, "CHUNK", 7)  # many chunks, so that the runs interleave
    ids = set()
    for i in range(4):
        c = make.customer()
        for d in range(10):
            ids.add(make.grant(c, credits=1 + d, expires_in_days=1 + (d + i) % 5).id)
    start = threading.Barrier(2)
    results, errors = [], []

    def run():
        with app.app_context():
            start.wait()
            try:
                results.append(expiry_notices.run_pass().grants)
            except Exception as err:  # collected; the test fails on any
                errors.append(repr(err))
            finally:
                db.session.remove()

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    notified = [d["grant_id"] for d in _notices()]
    assert sorted(notified) == sorted(ids) and sum(results) == 40


def test_the_scheduled_job_records_its_run(app, make):
    c = make.customer()
    make.grant(c, credits=40, expires_in_days=3)
    run = jobs.run("expiry_notices")
    db.session.rollback()
    row = db.session.get(JobRun, run.id)
    assert (row.status, row.processed_count, row.details["credits"]) == ("succeeded", 1, 40)
