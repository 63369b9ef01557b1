"""Jobs: schedules, next fire times, the leader, runs with their errors, run now, dry-run preview."""
from __future__ import annotations

from flask import Blueprint, abort, current_app, flash, redirect, request, url_for
from flask_login import current_user

from dashboard import htmx
from dashboard.auth import require
from dashboard.respond import int_arg
from jobs import JOBS, scheduler
from jobs import retry as retry_job
from jobs import start as start_job
from services.core.errors import ServiceError
from services.jobs import attempts, distribution
from services.jobs import runs as jobruns

bp = Blueprint("jobs", __name__, url_prefix="/jobs")
PAGE = 25


@bp.get("/")
@require("jobs.view")
def index():
    job = request.args.get("job") or None
    if job not in JOBS:
        job = None
    before = int_arg("before")
    runs = jobruns.recent(job=job, limit=PAGE + 1, before_id=before)
    more = len(runs) > PAGE
    runs = runs[:PAGE]
    ctx = dict(runs=runs, more=more, job=job, next_before=runs[-1].id if runs else None)
    if before:
        return htmx.render("jobs/index.html", "run_rows", **ctx)
    return htmx.render("jobs/index.html", None, status=scheduler.status(current_app), **ctx)


@bp.get("/runs/<int:run_id>")
@require("jobs.view")
def run(run_id: int):
    r = jobruns.get(run_id) or abort(404)
    after = int_arg("after")
    errors = jobruns.errors(run_id=run_id, limit=PAGE + 1, after_id=after)
    more = len(errors) > PAGE
    errors = errors[:PAGE]
    ctx = dict(run=r, spec=JOBS.get(r.job), errors=errors, more=more,
               next_after=errors[-1].id if errors else None,
               states=attempts.error_states(r, errors), kind_of=attempts.kind_of)
    if after:
        return htmx.render("jobs/run.html", "error_rows", **ctx)
    return htmx.render("jobs/run.html", "summary" if request.args.get("fragment") == "summary"
                       else None, **ctx)


@bp.get("/distribute_credits/preview")
@require("jobs.view")
def preview():
    try:
        result = distribution.preview(period=request.args.get("period") or None, limit=200)
    except ServiceError as err:
        flash(str(err), "error")
        return redirect(url_for("jobs.index"))
    return htmx.render("jobs/preview.html", None, result=result)


@bp.post("/<name>/run")
@require("jobs.run")
def run_now(name: str):
    if name not in JOBS:
        abort(404)
    try:
        claim = start_job(current_app._get_current_object(), name,
                          period=request.form.get("period") or None, trigger="manual",
                          staff=current_user, ip=request.remote_addr)
    except ServiceError as err:
        flash(str(err), "error")
        return redirect(url_for("jobs.index"))
    if claim.acquired:
        flash(f"{JOBS[name].title} started for {claim.run.period} (run {claim.run.id}).", "success")
    elif claim.run.status == "running":
        flash(f"{JOBS[name].title} for {claim.run.period} is running already (run {claim.run.id}).",
              "info")
    else:
        flash(f"{JOBS[name].title} for {claim.run.period} has run already (run {claim.run.id}); "
              "a period runs once.", "info")
    return redirect(url_for("jobs.run", run_id=claim.run.id))


@bp.post("/runs/<int:run_id>/retry")
@require("jobs.run")
def retry(run_id: int):
    try:
        claim = retry_job(current_app._get_current_object(), run_id, staff=current_user,
                          ip=request.remote_addr)
    except ServiceError as err:
        if err.status == 404:
            abort(404)
        flash(str(err), "error")
        return redirect(url_for("jobs.run", run_id=run_id))
    if claim.acquired:
        flash(f"Retrying the customers of run {run_id} still without their {claim.run.period} "
              "grant.", "success")
    else:
        flash(f"Run {run_id} is {claim.run.status}; nothing was retried.", "info")
    return redirect(url_for("jobs.run", run_id=claim.run.id))
