"""The runner's loops as scheduled jobs: run_tasks (every 5 s) and poll_tasks (every 30 s)."""
from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select

from jobs import JOBS, scheduler, schedules
from jobs import run as run_job
from models import JobRun, JobRunError, db
from services.tasks import prepaid as tasks
from tests.tasks.helpers import chat_input, fresh


def runs() -> list[JobRun]:
    db.session.rollback()
    return list(db.session.scalars(select(JobRun).order_by(JobRun.id)))


def test_the_loops_are_jobs_with_second_schedules(app):
    sched = schedules.schedules(app)
    assert (sched["run_tasks"].cron, sched["poll_tasks"].cron) == ("*/5 * * * * *", "*/30 * * * * *")
    now = datetime(2026, 3, 1, 12, 0, 2, tzinfo=UTC)
    assert sched["run_tasks"].next_fire(now) == now.replace(second=5)
    assert sched["poll_tasks"].next_fire(now) == now.replace(second=30)
    assert sched["run_tasks"].misfire == timedelta(minutes=1)
    app.config["JOBS_RUN_TASKS_CRON"] = "off"
    assert not schedules.schedules(app)["run_tasks"].enabled


def test_a_run_by_hand_records_what_the_loop_did(ai, make):
    c = make.customer(credits=100)
    t = tasks.create(customer_id=c.id, type="chat", estimated_credits=10, input=chat_input())
    r = run_job("run_tasks", trigger="manual")
    assert (r.status, r.users_count, r.processed_count, r.error_count) == ("succeeded", 1, 1, 0)
    assert r.details["succeeded"] == 1 and fresh(t.id).status == "succeeded"
    # By hand, an empty run is recorded too.
    assert run_job("poll_tasks", trigger="manual").processed_count == 0


def test_a_scheduled_tick_with_nothing_due_records_no_run(ai, app, make):
    sched = scheduler.JobScheduler(app)
    sched._fire("run_tasks")
    sched._fire("poll_tasks")
    assert runs() == []
    c = make.customer(credits=100)
    t = tasks.create(customer_id=c.id, type="video", mode="async", estimated_credits=10,
                     input={"prompt": "x"})
    sched._fire("run_tasks")
    assert [(r.job, r.trigger, r.processed_count) for r in runs()] == [("run_tasks", "schedule", 1)]
    assert fresh(t.id).status == "processing"
    sched._fire("poll_tasks")
    assert [(r.job, r.processed_count) for r in runs()][-1] == ("poll_tasks", 1)
    assert fresh(t.id).status == "succeeded"


def test_a_job_whose_endpoint_went_away_is_reported_in_the_run(ai, app, make):
    c = make.customer(credits=100)
    t = tasks.create(customer_id=c.id, type="video", mode="async", estimated_credits=10,
                     input={"prompt": "x"})
    run_job("run_tasks", trigger="manual")
    app.config["AI_PROVIDERS"] = [ai.fallback.app_config("fallback")]  # primary removed
    r = run_job("poll_tasks", trigger="manual")
    assert (r.status, r.error_count) == ("succeeded", 1)
    err = db.session.scalar(select(JobRunError).where(JobRunError.run_id == r.id))
    assert f"task {t.id}: provider 'primary' not configured" in err.error
    assert fresh(t.id).status == "processing"  # left for the timeout sweep, not refunded blindly


def test_run_job_cli_and_the_jobs_page(ai, app, login):
    out = app.test_cli_runner().invoke(args=["run-job", "run-tasks"])
    assert out.exit_code == 0 and "run_tasks period" in out.output
    page = login("admin").get("/jobs/").get_data(as_text=True)
    assert "JOBS_RUN_TASKS_CRON" in page and "JOBS_POLL_TASKS_CRON" in page
    assert "Task runner: main loop" in page
    assert set(JOBS) >= {"run_tasks", "poll_tasks"}
    assert db.session.scalar(select(func.count()).select_from(JobRun)) == 1
