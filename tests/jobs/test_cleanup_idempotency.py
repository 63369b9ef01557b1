"""The daily cleanup deletes expired idempotency records and keeps live ones."""
from datetime import timedelta

from sqlalchemy import select

import jobs
from models import IdempotencyRecord, JobRun, db, utcnow


def test_cleanup_job_removes_only_expired_records(app):
    now = utcnow()
    for key, expires in [("old-1", now - timedelta(hours=1)), ("old-2", now - timedelta(days=3)),
                         ("live", now + timedelta(hours=20))]:
        db.session.add(IdempotencyRecord(scope="POST /api/v1/debits", key=key, request_hash="h",
                                         status="completed", expires_at=expires))
    db.session.commit()
    run = jobs.run("cleanup_idempotency", period="2026-11-22", trigger="manual")
    db.session.expire_all()
    assert db.session.get(JobRun, run.id).processed_count == 2
    assert db.session.scalars(select(IdempotencyRecord.key)).all() == ["live"]
    again = jobs.run("cleanup_idempotency", period="2026-11-22", trigger="manual")
    assert again.id == run.id  # the same period is claimed once
