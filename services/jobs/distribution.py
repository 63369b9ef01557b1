"""The monthly credit distribution (seed 000): expire first, then grant each eligible customer
the monthly credits of their segment, exactly once per (period, customer).

Segments (docs/jobs.md has the table):
- free: no plan or a free plan -> the `free_monthly_credits` setting;
- yearly: a yearly plan, subscription none/active -> the plan's monthly_credits;
- lifetime: a lifetime plan -> the plan's monthly_credits;
- monthly: nothing here (the paid invoice grants them);
- held: past_due on a paid plan -> nothing until the payment recovers;
- cancelled: still paid through current_period_end (yearly) -> plan credits, monthly -> nothing;
  once the paid term is over (or a cancelled lifetime) -> the free tier.

Exactly once: the run claims job_runs (distribute_credits, period); every grant carries the
idempotency key `distribution:<period>:<customer_id>` (UNIQUE), and each chunk selects only
customers without that key, so a rerun or a resumed crashed run grants only what is missing.
Errors: a customer whose grant fails is recorded in job_run_errors and the run goes on; a
customer whose expiry failed is recorded as an expiry error and not granted in that attempt (the
expired bucket is still live). A run with either ends `partial`; triggering the period again
retries it: the same pass, which takes up exactly the due customers still without their key.
services/jobs/attempts.py keeps each attempt's record and tells fixed errors from failing ones.
Set-based: a chunk of up to CHUNK customers is one transaction of a few statements. On PostgreSQL
(services/jobs/distribution_pg.py): lock the accounts in id order, then one statement that
re-checks the keys under those locks and writes grants, entries, allocations, grant.created events
and balances, built by the server from the chunk's arrays; then the run's counts. On SQLite:
lock, re-check, rows built by services.ledger.bulk and inserted, balances, counts.
"""
from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import String, and_, case, cast, func, literal, not_, or_, select

from models import CreditGrant, Customer, LedgerEntry, Plan, db, utcnow
from services.core import settings as app_settings
from services.core.db import among, atomic
from services.core.errors import ValidationFailed
from services.jobs import attempts
from services.jobs import distribution_pg as pgchunk
from services.jobs import runs as jobruns
from services.ledger import bulk as bulkledger
from services.ledger import expiry
from services.ledger.rules import Actor

log = logging.getLogger("creditdesk.jobs")

JOB = "distribute_credits"
# Customers per grant chunk (one transaction): 2,000 hold their account locks ~150 ms on PostgreSQL
# (1,000: ~85 ms, 5,000: ~350 ms); docs/performance.md has the measurements.
CHUNK = 2000
ACTOR = Actor("job", JOB)
PERIOD_RE = re.compile(r"^\d{4}-(0[1-9]|1[0-2])$")
GRANTING = ("free", "yearly", "lifetime")
SEGMENTS = ("free", "yearly", "lifetime", "monthly", "held")


@dataclass
class DistributionResult:
    """What the run did (or, for a dry run, would do). Counts match the job_runs row."""

    period: str
    users_count: int = 0
    processed_count: int = 0
    error_count: int = 0
    run_id: int | None = None
    status: str = "succeeded"
    dry_run: bool = False
    already_done: bool = False  # the period had been claimed before: nothing was done now
    resumed: bool = False
    attempt: str = "run"  # run | resume | retry (of a partial run: its customers without a grant)
    expiry_error_count: int = 0  # customers whose expiry failed (held back if a grant was due)
    retried: int = 0  # due customers without their grant that this attempt took up
    fixed: int = 0  # customers that failed in an earlier attempt and no longer do
    # dry run: what a trigger would do now (run | retry | resume | nothing) and, for a period
    # that has a run, that run's figures (status, usersCount, processedCount, errorCount, ...)
    would: str = "run"
    previous: dict | None = None
    credits: int = 0
    expired: dict = field(default_factory=dict)
    segments: dict = field(default_factory=dict)  # segment -> {"customers": n, "credits": c}
    rows: list[dict] = field(default_factory=list)  # dry run: per-customer preview
    rows_truncated: bool = False
    seconds: dict = field(default_factory=dict)  # {"expiry": s, "grants": s}

    def as_dict(self) -> dict:
        return {"usersCount": self.users_count, "processedCount": self.processed_count,
                "errorCount": self.error_count}


def current_period(now: datetime | None = None) -> str:
    return (now or utcnow()).strftime("%Y-%m")


def check_period(period: str | None) -> str:
    period = period or current_period()
    if not PERIOD_RE.match(period):
        raise ValidationFailed("period must look like YYYY-MM", details={"period": "invalid"})
    return period


def _key_prefix(period: str) -> str:
    return f"distribution:{period}:"


# --- classification, in SQL so that a chunk is one query --------------------------------------

def _segment_columns(now: datetime, free_credits: int):
    """(segment, credits, expiry_days) as SQL expressions over customers LEFT JOIN plans."""
    paid_through = and_(Customer.current_period_end.is_not(None), Customer.current_period_end > now)
    cancelled = Customer.subscription_status == "cancelled"
    past_due = Customer.subscription_status == "past_due"
    free_tier = or_(Plan.id.is_(None), Plan.interval == "free",
                    and_(cancelled, Plan.interval == "lifetime"),
                    and_(cancelled, Plan.interval.in_(("month", "year")), not_(paid_through)))
    segment = case(
        (free_tier, literal("free")),
        (Plan.interval == "month", literal("monthly")),
        (past_due, literal("held")),
        (Plan.interval == "year", literal("yearly")),
        (Plan.interval == "lifetime", literal("lifetime")),
        else_=literal("held"))
    credits = case((free_tier, literal(free_credits)),
                   (Plan.interval.in_(("year", "lifetime")), Plan.monthly_credits), else_=literal(0))
    days = case((free_tier & Plan.id.is_not(None) & (Plan.interval == "free"),
                 Plan.credit_expiry_days), (free_tier, literal(None)),
                else_=Plan.credit_expiry_days)
    return segment.label("segment"), credits.label("credits"), days.label("expiry_days")


def _candidates(now: datetime, after: int, limit: int, free_credits: int,
                period: str | None = None):
    """The next `limit` live customers after a keyset cursor, classified; with `period`, also
    whether each holds that period's key already (`granted`: one unique-index probe per row, in
    the select list so that it stays a probe: an anti-join in WHERE would scan the whole ledger)."""
    seg, credits, days = _segment_columns(now, free_credits)
    cols = [Customer.id, Customer.external_id, Customer.email, Customer.plan_id, seg, credits,
            days]
    if period is not None:
        key = literal(_key_prefix(period), String) + cast(Customer.id, String)
        # a scalar subquery with LIMIT: an EXISTS here may be planned as a hashed subplan, a scan
        # of the whole ledger for each chunk
        cols.append(select(LedgerEntry.id).where(LedgerEntry.idempotency_key == key).limit(1)
                    .scalar_subquery().label("granted"))
    q = (select(*cols)
         .select_from(Customer).outerjoin(Plan, Plan.id == Customer.plan_id)
         .where(Customer.deleted_at.is_(None), Customer.id > after, Customer.created_at <= now)
         .order_by(Customer.id).limit(limit))
    return db.session.execute(q).all()


def _granted(s, period: str, customer_ids: list[int]) -> set[int]:
    """Which of these customers hold this period's distribution key already (index lookups)."""
    prefix = _key_prefix(period)
    keys = [prefix + str(c) for c in customer_ids]
    done = set()
    for k in range(0, len(keys), 1000):
        done.update(s.scalars(select(LedgerEntry.idempotency_key).where(
            among(s, LedgerEntry.idempotency_key, keys[k:k + 1000], String))))
    return {int(key[len(prefix):]) for key in done}


def _expires(now: datetime, days: int | None) -> datetime | None:
    if days is None:
        days = int(app_settings.get("default_expiry_days"))
    return now + timedelta(days=days) if days else None


# --- the run --------------------------------------------------------------------------------

def run(*, period: str | None = None, trigger: str = "schedule",
        dry_run: bool = False, preview_limit: int = 500) -> DistributionResult:
    """Distribute this period's monthly credits, exactly once per customer; dry_run writes nothing.

    A period whose run succeeded (or runs now) is a no-op that reports that run; a `partial` run
    is retried (only its customers still without their grant), a failed or crashed one resumed."""
    period = check_period(period)
    if dry_run:
        return preview(period=period, limit=preview_limit)
    claim = jobruns.claim(job=JOB, period=period, trigger=trigger)
    if not claim.acquired:
        r = claim.run
        log.info("distribution.skipped", extra={"job_run_id": r.id, "period": period,
                                                "status": r.status})
        d = r.details or {}
        return DistributionResult(period=period, users_count=r.users_count,
                                  processed_count=r.processed_count, error_count=r.error_count,
                                  run_id=r.id, status=r.status, already_done=True,
                                  credits=int(d.get("credits", 0)),
                                  expiry_error_count=int(d.get("expiry_errors", 0)))
    return execute(run_id=claim.run_id, resumed=claim.resumed)


def execute(*, run_id: int, resumed: bool = False) -> DistributionResult:
    """Carry out a claimed run (fresh, resumed or a retry of a partial one): expiry pass, then the
    grants of every due customer still without this period's grant, chunk by chunk."""
    r = jobruns.get(run_id)
    period, as_of = r.period, r.started_at  # a resumed run keeps the first attempt's clock
    attempt = attempts.begin(run_id=run_id, resumed=resumed)
    log.info("distribution.starting job_run_id=%s period=%s attempt=%s kind=%s", run_id, period,
             attempt.no, attempt.kind, extra={"job_run_id": run_id, "period": period,
                                              "resumed": resumed, "attempt": attempt.kind})
    result = DistributionResult(period=period, run_id=run_id, resumed=resumed, attempt=attempt.kind)
    try:
        t0 = time.perf_counter()
        result.expired, expiry_failed = _expiry_pass(run_id, utcnow())
        t1 = time.perf_counter()
        progress = _grant_all(run_id, period, as_of, hold=expiry_failed)
        seconds = {"expiry": round(t1 - t0, 2), "grants": round(time.perf_counter() - t1, 2)}
        _checkpoint("before-finish")
        totals = _totals(run_id, period)
        out = _outcome(run_id, period, attempt, progress)
        prior = jobruns.get(run_id).details
        details = attempts.close(prior, status=out["status"], attempted=progress.attempted,
                                 granted=progress.granted, errors=out["errors"],
                                 expiry_errors=out["expiry_errors"], fixed=out["fixed"])
        details.update(credits=totals["credits"], segments=totals["segments"],
                       expired=result.expired, seconds=seconds, expiry_errors=out["expiry_errors"],
                       resumed=resumed or bool((prior or {}).get("resumed")))
        done = jobruns.finish(run_id=run_id, status=out["status"], details=details,
                              users_count=totals["processed"] + out["errors"],
                              processed_count=totals["processed"], error_count=out["errors"])
    except Exception as err:
        log.exception("distribution.failed", extra={"job_run_id": run_id, "period": period})
        db.session.rollback()
        jobruns.fail(run_id=run_id, error=err, details=attempts.close(
            jobruns.get(run_id).details, status="failed", error=f"{type(err).__name__}"))
        raise
    result.users_count, result.processed_count = done.users_count, done.processed_count
    result.error_count, result.status = done.error_count, done.status
    result.expiry_error_count = out["expiry_errors"]
    result.retried, result.fixed = progress.attempted, out["fixed"]
    result.credits, result.segments = totals["credits"], totals["segments"]
    result.seconds = seconds
    log.info("distribution.finished job_run_id=%s usersCount=%s processedCount=%s errorCount=%s "
             "expiryErrorCount=%s status=%s", run_id, result.users_count, result.processed_count,
             result.error_count, result.expiry_error_count, result.status, extra={
                 "job_run_id": run_id, "period": period, "usersCount": result.users_count,
                 "processedCount": result.processed_count, "errorCount": result.error_count,
                 "expiryErrorCount": result.expiry_error_count, "credits": result.credits,
                 "status": result.status, "attempt": attempt.kind})
    return result


@dataclass
class _Progress:
    attempted: int = 0  # due customers without their grant that this attempt took up
    granted: int = 0  # grants this attempt wrote
    held: set[int] = field(default_factory=set)  # due, held back: their expiry failed


def _expiry_pass(run_id: int, now: datetime) -> tuple[dict, set[int]]:
    """Expire what is due first; the customers whose expiry failed are not granted this attempt
    (their expired bucket would still be live), and their failure is recorded on its own."""
    def beat(_n, _c):
        with atomic() as s:
            jobruns.heartbeat(s, run_id)
        _checkpoint("expiry")

    res = expiry.run_pass(now=now, actor=ACTOR, job_run_id=run_id, on_chunk=beat)
    for cid, error in res.errors:
        jobruns.record_error(run_id=run_id, customer_id=cid, error=attempts.EXPIRY_PREFIX + error)
    return {"grants": res.grants, "credits": res.credits}, {cid for cid, _ in res.errors}


def _grant_all(run_id: int, period: str, as_of: datetime, hold: set[int]) -> _Progress:
    free_credits = int(app_settings.get("free_monthly_credits"))
    after, chunks, writes = 0, 0, 0
    progress = _Progress()
    while True:
        # a resumed run or a retry skips what earlier attempts did, without locking it
        rows = _candidates(as_of, after, CHUNK, free_credits, period)
        db.session.rollback()  # end the read; the chunk writes in its own transaction
        if not rows:
            return progress
        after = rows[-1].id
        todo = [r for r in rows if r.segment in GRANTING and (r.credits or 0) > 0
                and r.granted is None]
        progress.attempted += len(todo)
        progress.held.update(r.id for r in todo if r.id in hold)
        todo = [r for r in todo if r.id not in hold]
        if todo:
            writes += 1
            try:
                progress.granted += _grant_chunk(run_id, period, as_of, todo, writes)
            except Exception as err:
                log.warning("distribution.chunk_failed", extra={
                    "job_run_id": run_id, "error": str(err)[:300], "customers": len(todo)})
                progress.granted += _grant_one_by_one(run_id, period, as_of, todo)
        chunks += 1
        _checkpoint("chunk", chunks)


def _grant_chunk(run_id: int, period: str, as_of: datetime, todo: list, chunk_no: int = 0) -> int:
    prefix = _key_prefix(period)
    if db.engine.dialect.name == "postgresql":  # the same rows, built by the server
        with atomic() as s:
            locked = pgchunk.lock(s, [r.id for r in todo])
            found = {a[0] for a in locked}
            missing = [r.id for r in todo if r.id not in found]
            granted = pgchunk.grant(
                s, todo, locked, period=period, prefix=prefix, now=as_of, run_id=run_id,
                actor=ACTOR, default_days=int(app_settings.get("default_expiry_days")))
            _checkpoint("mid-chunk", chunk_no)
            jobruns.add_counts(s, run_id, processed=granted)
        for cid in missing:
            jobruns.record_error(run_id=run_id, customer_id=cid,
                                 error="customer has no credit account")
        return granted
    with atomic() as s:
        accounts = bulkledger.lock_accounts(s, [r.id for r in todo])
        # Checked under the locks: an earlier attempt or a concurrent run may have granted some.
        done = _granted(s, period, [r.id for r in todo])
        batch = bulkledger.Batch(now=as_of, actor=ACTOR, job_run_id=run_id, accounts=accounts)
        missing = []
        for r in todo:
            key = prefix + str(r.id)
            if r.id in done:
                continue
            if r.id not in accounts:
                missing.append(r.id)
                continue
            batch.grant(r.id, credits=int(r.credits), source="distribution", key=key,
                        expires_at=_expires(as_of, r.expiry_days),
                        reason=f"Monthly credits {period} ({r.segment})",
                        plan_id=r.plan_id if r.segment != "free" else None, period=period)
        batch.flush(s)
        _checkpoint("mid-chunk", chunk_no)
        jobruns.add_counts(s, run_id, processed=len(batch.grants))
    for cid in missing:
        jobruns.record_error(run_id=run_id, customer_id=cid, error="customer has no credit account")
    return len(batch.grants)


def _grant_one_by_one(run_id: int, period: str, as_of: datetime, todo: list) -> int:
    """After a chunk failed: each customer alone, so one failure is recorded and the rest proceed."""
    granted = 0
    for r in todo:
        try:
            granted += _grant_chunk(run_id, period, as_of, [r])
        except Exception as err:
            db.session.rollback()
            jobruns.record_error(run_id=run_id, customer_id=r.id,
                                 error=f"{type(err).__name__}: {err}")
    return granted


def _totals(run_id: int, period: str) -> dict:
    """Final figures from the ledger itself, so that a resumed run reports the whole period."""
    rows = db.session.execute(
        select(CreditGrant.plan_id, func.count(CreditGrant.id), func.sum(CreditGrant.amount))
        .where(CreditGrant.source == "distribution", CreditGrant.period == period,
               CreditGrant.job_run_id == run_id)
        .group_by(CreditGrant.plan_id)).all()
    intervals = dict(db.session.execute(select(Plan.id, Plan.interval)).all())
    segments: dict[str, dict] = {}
    for plan_id, n, credits in rows:
        interval = intervals.get(plan_id, "free")
        name = {"year": "yearly", "lifetime": "lifetime"}.get(interval, "free")
        seg = segments.setdefault(name, {"customers": 0, "credits": 0})
        seg["customers"] += int(n)
        seg["credits"] += int(credits or 0)
    db.session.rollback()
    return {"segments": segments, "processed": sum(v["customers"] for v in segments.values()),
            "credits": sum(v["credits"] for v in segments.values())}


def _outcome(run_id: int, period: str, attempt: attempts.Attempt, progress: _Progress) -> dict:
    """Who is still without this period's grant after this attempt, and the run's status.

    errors: due customers this attempt left without their grant (it failed, or their expiry
    failed so they were held back); expiry_errors: customers whose expiry failed, counted on
    their own (they are users only when a grant was due to them). Any of either: `partial`."""
    grant_failed, expiry_failed = attempts.failing(run_id=run_id, floor=attempt.floor)
    missing = grant_failed | progress.held
    missing -= _granted(db.session, period, sorted(missing))  # granted meanwhile by an invoice
    fixed = attempts.earlier(run_id=run_id, floor=attempt.floor) - missing - expiry_failed
    db.session.rollback()
    status = "partial" if missing or expiry_failed else "succeeded"
    return {"status": status, "errors": len(missing), "expiry_errors": len(expiry_failed),
            "fixed": len(fixed)}


# --- dry run ----------------------------------------------------------------------------------

def preview(*, period: str | None = None, limit: int = 500,
            now: datetime | None = None) -> DistributionResult:
    """What a trigger for `period` would grant now, per segment and per customer; writes nothing.

    A period with a run is previewed on that run's clock (a retry or resume keeps it): the rows
    are the due customers still without their grant, i.e. what a retry would process."""
    period = check_period(period)
    now = now or utcnow()
    free_credits = int(app_settings.get("free_monthly_credits"))
    existing = jobruns.find(job=JOB, period=period)
    result = DistributionResult(period=period, dry_run=True, status="preview")
    clock = now
    if existing is not None:
        clock = existing.started_at
        live = existing.status == "running" and not jobruns.is_stale(existing, now)
        result.run_id, result.already_done = existing.id, existing.status == "succeeded" or live
        result.would = ("nothing" if result.already_done else
                        "retry" if existing.status == "partial" else "resume")
        result.previous = {
            "status": existing.status, "usersCount": existing.users_count,
            "processedCount": existing.processed_count, "errorCount": existing.error_count,
            "expiryErrorCount": int((existing.details or {}).get("expiry_errors", 0)),
            "started_at": existing.started_at}
    result.segments = {s: {"customers": 0, "credits": 0} for s in SEGMENTS}
    result.expired = expiry.due_summary(now=now)
    after = 0
    while True:
        rows = _candidates(clock, after, 5000, free_credits)
        if not rows:
            break
        after = rows[-1].id
        done = _granted(db.session, period, [r.id for r in rows])
        for r in rows:
            if r.id in done:
                continue
            credits = int(r.credits or 0) if r.segment in GRANTING else 0
            seg = result.segments[r.segment]
            seg["customers"] += 1
            seg["credits"] += credits
            if r.segment in GRANTING and credits > 0:
                result.users_count += 1
                result.credits += credits
                if len(result.rows) < limit:
                    exp = _expires(clock, r.expiry_days)
                    result.rows.append({"customer_id": r.id, "external_id": r.external_id,
                                        "email": r.email, "segment": r.segment,
                                        "credits": credits, "expires_at": exp})
                else:
                    result.rows_truncated = True
    db.session.rollback()
    return result


# --- checkpoints -----------------------------------------------------------------------------

# Called at each checkpoint as on_checkpoint(name, n): "expiry" (an expiry chunk committed),
# "chunk" n (grant chunk n done), "mid-chunk" n (inside write n's transaction, before commit),
# "before-finish". None in production; the crash-safety test (tests/test_jobs_crash.py) sets it
# in its child process to SIGKILL the run at one of these points.
on_checkpoint: Callable[[str, int | None], None] | None = None


def _checkpoint(name: str, n: int | None = None) -> None:
    if on_checkpoint is not None:
        on_checkpoint(name, n)
