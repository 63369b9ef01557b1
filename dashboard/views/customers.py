"""Customers: live search; a customer's balance, grants, statement, tasks, payments, refunds;
credit adjustments with a reason (maker-checker above the support limit)."""
from __future__ import annotations

from uuid import uuid4

from flask import Blueprint, flash, redirect, request, url_for
from flask_login import current_user
from flask_wtf import FlaskForm
from wtforms import BooleanField, HiddenField, IntegerField, SelectField, TextAreaField
from wtforms.validators import DataRequired, InputRequired, Length, NumberRange, Optional

from dashboard import htmx
from dashboard.auth import require
from dashboard.respond import (
    back_to,
    client_ip,
    errors_on_fields,
    form_status,
    hx_target,
    int_arg,
    list_page,
)
from dashboard.views.autotopup import card_ctx as autotopup_card
from models.ledger import ENTRY_TYPES
from services.core.errors import ServiceError
from services.ledger import crossings, customers, statement
from services.ledger import posting as ledger
from services.staff import adjustments

bp = Blueprint("customers", __name__, url_prefix="/customers")
PAGE = 25
STATEMENT_PAGE = 25


@bp.app_template_filter()
def reason_label(code: str) -> str:
    return adjustments.REASON_LABELS.get(code, code or "")


class AdjustForm(FlaskForm):
    direction = SelectField("Action", choices=[("add", "Add credits"), ("remove", "Remove credits")],
                            default="add")
    credits = IntegerField("Credits", validators=[InputRequired("Enter how many credits."),
                                                  NumberRange(min=1, max=10**9)])
    reason_code = SelectField("Reason code", choices=[("", "Choose a reason…"), *adjustments.REASON_CODES],
                              validators=[DataRequired("Choose a reason code.")])
    note = TextAreaField("Note", validators=[DataRequired("Write a short note for the audit log."),
                                             Length(min=3, max=adjustments.MAX_NOTE)])
    allow_negative = BooleanField("Allow the balance to go below zero")
    key = HiddenField()

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if not self.key.data:
            self.key.data = uuid4().hex  # one per rendered form: a double submit applies once

    @property
    def signed_credits(self) -> int:
        return -self.credits.data if self.direction.data == "remove" else self.credits.data


class ThresholdForm(FlaskForm):
    low_balance_threshold = IntegerField("Low-balance threshold (credits)",
                                         [Optional(), NumberRange(min=0, max=10**12)])


def _filters() -> statement.Filters:
    return statement.Filters.parse(type=request.args.getlist("type"),
                                   feature=request.args.get("feature"))


def _detail_ctx(customer_id: int, *, filters: statement.Filters | None = None,
                before: int | None = None, full: bool = True, form: AdjustForm | None = None) -> dict:
    """What the customer page shows; `full=False` only what the balance and statement need."""
    customer = customers.get(customer_id)
    filters = filters or statement.Filters()
    ctx = dict(customer=customer, st=statement.page(customer_id=customer_id, filters=filters,
                                                    before_id=before, limit=STATEMENT_PAGE),
               before=before, grants=ledger.live_grants(customer_id),
               features=statement.features(customer_id), totals=statement.totals(customer_id),
               requests=adjustments.pending(customer_id=customer_id),
               activity=customers.activity(customer_id),
               low_threshold=crossings.effective_threshold(customer),
               threshold_form=ThresholdForm(formdata=None,
                                            low_balance_threshold=customer.low_balance_threshold),
               limit=adjustments.limit_for(current_user),
               form=form or AdjustForm(formdata=None), entry_types=ENTRY_TYPES)
    if full:
        ctx.update(autotopup_card(customer_id))
        ctx.update(tasks=customers.recent_tasks(customer_id),
                   payments=customers.recent_payments(customer_id),
                   refunds=customers.recent_refunds(customer_id))
    return ctx


@bp.get("/")
@require("customers.view")
def index():
    q = request.args.get("q", "").strip()[:200]
    after = int_arg("after")
    rows = customers.search(q=q, limit=PAGE + 1, after_id=after)
    more = len(rows) > PAGE
    rows = rows[:PAGE]
    total = customers.count() if not q and not after and not htmx.is_htmx() else None
    return list_page("customers/index.html", after, q=q, customers=rows, more=more, after=after,
                     total=total, next_after=rows[-1].id if rows and more else None,
                     threshold_of=crossings.effective_threshold)


@bp.get("/<int:customer_id>")
@require("customers.view")
def detail(customer_id: int):
    before = int_arg("before")
    if htmx.is_htmx() and before:
        return htmx.render("customers/detail.html", "statement_rows",
                           **_detail_ctx(customer_id, filters=_filters(), before=before, full=False))
    if hx_target() == "statement-panel":
        return htmx.render("customers/detail.html", "statement",
                           **_detail_ctx(customer_id, filters=_filters(), full=False))
    return htmx.render("customers/detail.html", None,
                       **_detail_ctx(customer_id, filters=_filters(), before=before))


@bp.post("/<int:customer_id>/adjust")
@require("credits.adjust")
def adjust(customer_id: int):
    customers.get(customer_id)  # 404 before anything else
    form = AdjustForm()
    if form.validate_on_submit():
        try:
            outcome = adjustments.submit(
                customer_id=customer_id, credits=form.signed_credits,
                reason_code=form.reason_code.data, note=form.note.data, staff=current_user,
                ip=client_ip(), key=form.key.data or None,
                allow_negative=bool(form.allow_negative.data) and current_user.role == "admin")
        except ServiceError as err:
            errors_on_fields(form, err)
            status = err.status
        else:
            message = _outcome_message(outcome)
            if not htmx.is_htmx():
                flash(message, "success" if not outcome.pending else "info")
                return redirect(url_for("customers.detail", customer_id=customer_id))
            return htmx.render("customers/detail.html", "adjusted", oob=True, outcome=outcome,
                               message=message, **_detail_ctx(customer_id, full=False))
    else:
        status = 422
    if htmx.is_htmx():
        return htmx.render("customers/detail.html", "adjust_form",
                           **_detail_ctx(customer_id, full=False, form=form)), form_status(status)
    return htmx.render("customers/detail.html", None,
                       **_detail_ctx(customer_id, form=form)), status


@bp.post("/<int:customer_id>/low-balance-threshold")
@require("settings.manage")
def set_threshold(customer_id: int):
    """The customer's own low-balance threshold (empty: the plan's or the setting's applies)."""
    customers.get(customer_id)  # 404 before anything else
    form = ThresholdForm()
    status = 200
    if form.validate_on_submit():
        try:
            customers.set_low_balance_threshold(customer_id=customer_id,
                                                value=form.low_balance_threshold.data,
                                                staff=current_user, ip=client_ip())
        except ServiceError as err:
            form.low_balance_threshold.errors = [str(err)]
            status = err.status
        else:
            if not htmx.is_htmx():
                flash("Low-balance threshold saved.", "success")
                return redirect(url_for("customers.detail", customer_id=customer_id))
            return htmx.render("customers/detail.html", "balance", saved=True,
                               **_detail_ctx(customer_id, full=False))
    else:
        status = 422
    ctx = _detail_ctx(customer_id, full=not htmx.is_htmx())
    ctx["threshold_form"] = form
    if htmx.is_htmx():
        return htmx.render("customers/detail.html", "balance", **ctx), form_status(status)
    return htmx.render("customers/detail.html", None, **ctx), status


def _outcome_message(outcome: adjustments.Outcome) -> str:
    if outcome.pending:
        r = outcome.request
        return (f"{r.credits:+,} credits is above your limit: sent to an admin for approval "
                f"(request #{r.id}).")
    e = outcome.entry
    return f"Adjusted by {e.amount:+,} credits. New balance {e.balance_after:,}."


def _decided(request_id: int, decide):
    try:
        req = decide(request_id=request_id, staff=current_user, ip=client_ip())
    except ServiceError as err:
        if err.status in (403, 404):
            raise  # the error page (app.js reports it for htmx)
        if not htmx.is_htmx():
            flash(str(err), "error")
            return redirect(back_to("overview.index"))
        req = adjustments.get(request_id)
        return htmx.render("customers/detail.html", "decided_row", req=req, error=str(err),
                           show_customer=request.form.get("origin") != "customer"), form_status(err.status)
    if not htmx.is_htmx():
        flash(f"Request #{req.id} {req.status}.", "success")
        return redirect(back_to("overview.index"))
    on_customer = request.form.get("origin") == "customer"
    ctx = _detail_ctx(req.customer_id, full=False) if on_customer else {}
    return htmx.render("customers/detail.html", "decided_row", req=req, oob=on_customer,
                       show_customer=not on_customer, **ctx)


@bp.post("/adjustments/<int:request_id>/approve")
@require("credits.adjust")
def approve_request(request_id: int):
    return _decided(request_id, adjustments.approve)


@bp.post("/adjustments/<int:request_id>/reject")
@require("credits.adjust")
def reject_request(request_id: int):
    return _decided(request_id, adjustments.reject)
