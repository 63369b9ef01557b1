"""Tasks: by status with paging, one task with its logs and ledger entries, retry or
cancel-with-refund."""
from __future__ import annotations

from flask import Blueprint, flash, redirect, request, url_for
from flask_login import current_user
from flask_wtf import FlaskForm
from wtforms import TextAreaField
from wtforms.validators import DataRequired, Length

from dashboard import htmx
from dashboard.auth import require
from dashboard.respond import client_ip, int_arg, list_page
from models.task import TASK_STATUSES
from services.core.errors import ServiceError
from services.ledger.rules import Actor
from services.tasks import listing as tasklist
from services.tasks import prepaid as tasks

bp = Blueprint("tasks", __name__, url_prefix="/tasks")
PAGE = 50


class CancelForm(FlaskForm):
    reason = TextAreaField("Reason", validators=[DataRequired("Say why the task is cancelled."),
                                                 Length(min=3, max=500)])


@bp.get("/")
@require("tasks.view")
def index():
    filters, before = tasklist.Filters.parse(request.args), int_arg("before")
    return list_page("tasks/index.html", before, target="results", f=filters, before=before,
                     p=tasklist.page(filters, before_id=before, limit=PAGE), statuses=TASK_STATUSES)


def _detail(task_id: int, **extra):
    return htmx.render("tasks/detail.html", extra.pop("block", None),
                       d=tasklist.detail(task_id), retryable=tasks.RETRYABLE, open_=tasks.OPEN,
                       **extra)


@bp.get("/<int:task_id>")
@require("tasks.view")
def detail(task_id: int):
    return _detail(task_id)


@bp.post("/<int:task_id>/retry")
@require("tasks.manage")
def retry(task_id: int):
    try:
        task = tasks.retry(task_id=task_id, actor=Actor.of_staff(current_user), staff=current_user,
                           ip=client_ip())
    except ServiceError as err:
        if err.status in (403, 404):
            raise
        flash(str(err), "error")
        return redirect(url_for("tasks.detail", task_id=task_id)), 303
    flash(f"Task #{task.id} is pending again; {task.charged_credits:,} credits charged.", "success")
    return redirect(url_for("tasks.detail", task_id=task_id)), 303


@bp.get("/<int:task_id>/cancel")
@require("tasks.manage")
def confirm_cancel(task_id: int):
    """The confirmation step: what will be refunded, and a reason."""
    return _detail(task_id, block="cancel_box", form=CancelForm(), confirming=True)


@bp.post("/<int:task_id>/cancel")
@require("tasks.manage")
def cancel(task_id: int):
    form = CancelForm()
    if form.validate_on_submit():
        try:
            task = tasks.cancel_by_staff(task_id=task_id, reason=form.reason.data,
                                         staff=current_user, ip=client_ip())
        except ServiceError as err:
            form.form_errors.append(str(err))
            status = err.status
        else:
            flash(f"Task #{task.id} cancelled; {task.refunded_credits:,} credits refunded.", "success")
            return redirect(url_for("tasks.detail", task_id=task_id)), 303
    else:
        status = 422
    return _detail(task_id, block="cancel_box", form=form, confirming=True), status
