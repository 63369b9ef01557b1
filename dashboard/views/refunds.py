"""Refunds: list by status, one refund with its timeline, request from a customer's purchases,
approve/reject/process/retry (htmx row refresh), and refund by reference with a preview."""
from __future__ import annotations

from uuid import uuid4

from flask import Blueprint, flash, redirect, request, url_for
from flask_login import current_user
from flask_wtf import FlaskForm
from wtforms import HiddenField, IntegerField, SelectField, StringField, TextAreaField
from wtforms.validators import DataRequired, Length, NumberRange, Optional

from dashboard import htmx
from dashboard.auth import require
from dashboard.respond import back_to, client_ip, hx_target, int_arg, list_page, with_trigger
from models.payment import REFUND_STATUSES
from services.core.errors import PaymentProviderError, ServiceError
from services.ledger import customers
from services.refunds import by_reference as refund_reference
from services.refunds import eligibility
from services.refunds import listing as refundlist
from services.refunds import requests as refunds

bp = Blueprint("refunds", __name__, url_prefix="/refunds")
PAGE = 50


class RequestForm(FlaskForm):
    payment_id = SelectField("Purchase", coerce=int, validate_choice=False,
                             validators=[DataRequired("Choose the purchase to refund.")])
    credits = IntegerField("Credits", validators=[Optional(), NumberRange(min=1, max=10**9)])
    reason = TextAreaField("Reason", validators=[DataRequired("Say why the purchase is refunded."),
                                                 Length(min=3, max=refunds.MAX_REASON)])
    key = HiddenField()

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if not self.key.data:
            self.key.data = uuid4().hex  # one per rendered form: a double submit files once


class ReferenceForm(FlaskForm):
    reference = StringField("Reference", validators=[DataRequired("Enter the reference."),
                                                     Length(max=refund_reference.MAX_REFERENCE)])
    reason = StringField("Reason", validators=[Optional(), Length(max=500)])
    customers = IntegerField(validators=[Optional()])
    debits = IntegerField(validators=[Optional()])
    credits = IntegerField(validators=[Optional()])


@bp.get("/")
@require("refunds.request")
def index():
    filters, before = refundlist.Filters.parse(request.args), int_arg("before")
    return list_page("refunds/index.html", before, target="results", f=filters, before=before,
                     p=refundlist.page(filters, before_id=before, limit=PAGE),
                     statuses=REFUND_STATUSES)


@bp.get("/<int:refund_id>")
@require("refunds.request")
def detail(refund_id: int):
    return htmx.render("refunds/detail.html", None, d=refundlist.detail(refund_id))


# --- request -----------------------------------------------------------------------------------

def _new_ctx(form: RequestForm, customer_ref: str) -> dict:
    customer = customers.resolve(customer_ref) if customer_ref else None
    purchases = eligibility.for_customer(customer_id=customer.id) if customer else []
    form.payment_id.choices = [
        (e.payment_id, f"#{e.payment_id} · {e.provider} · up to {e.refundable_credits:,} credits")
        for e in purchases if e.eligible]
    return dict(form=form, customer=customer, customer_ref=customer_ref, purchases=purchases,
                window=eligibility.window_days())


@bp.get("/new")
@require("refunds.request")
def new():
    form = RequestForm(formdata=None)
    chosen = int_arg("payment")
    if chosen:
        form.payment_id.data = chosen
    return htmx.render("refunds/new.html", None,
                       **_new_ctx(form, (request.args.get("customer") or "").strip()[:320]))


@bp.post("/")
@require("refunds.request")
def create():
    form = RequestForm()
    customer_ref = (request.form.get("customer") or "").strip()[:320]
    ctx = _new_ctx(form, customer_ref)
    status = 422
    if form.validate_on_submit():
        try:
            refund = refunds.request(payment_id=form.payment_id.data, credits=form.credits.data,
                                     reason=form.reason.data, staff=current_user,
                                     key=form.key.data or None, ip=client_ip())
        except ServiceError as err:
            if err.status == 404:
                raise
            form.form_errors.append(str(err))
            status = err.status
        else:
            flash(f"Refund #{refund.id} requested: {refund.credits:,} credits. It now waits for "
                  "approval by finance or an admin.", "success")
            return redirect(url_for("refunds.detail", refund_id=refund.id), code=303)
    return htmx.render("refunds/new.html", None, **ctx), status


# --- decisions and processing (one row refreshed for htmx, else back to the page) -------------

def _row(refund_id: int, *, error: str | None = None, status: int = 200, message: str | None = None,
         category: str = "success", block: str = "row"):
    r, staff = refundlist.row(refund_id)
    resp = htmx.render("refunds/_row.html", block, r=r, staff=staff, error=error)
    return with_trigger(resp, "refunds-changed", message=message, category=category), status


def _act(refund_id: int, action, done: str, **kw):
    """Run a decision or processing service on one refund (by this staff member, from this IP)."""
    try:
        refund = action(refund_id=refund_id, staff=current_user, ip=client_ip(), **kw)
    except PaymentProviderError as err:  # recorded as failed: a new state, shown as such
        if htmx.is_htmx():
            return _row(refund_id, error=str(err), message=str(err), category="error")
        flash(str(err), "error")
        return redirect(back_to("refunds.detail", refund_id=refund_id), code=303)
    except ServiceError as err:
        if err.status == 404:
            raise
        if htmx.is_htmx():  # 409 so that htmx swaps the row with the reason in it
            return _row(refund_id, error=str(err), status=409, message=str(err), category="error")
        flash(str(err), "error")
        return redirect(back_to("refunds.detail", refund_id=refund_id), code=303)
    message = f"Refund #{refund.id} {done}."
    if htmx.is_htmx():
        return _row(refund.id, message=message)
    flash(message, "success")
    return redirect(back_to("refunds.detail", refund_id=refund.id), code=303)


@bp.get("/<int:refund_id>/row")
@require("refunds.request")
def row(refund_id: int):
    """One table row (the "Keep it" of a reject confirmation)."""
    return _row(refund_id)


@bp.post("/<int:refund_id>/approve")
@require("refunds.approve")
def approve(refund_id: int):
    return _act(refund_id, refunds.approve, "approved")


@bp.get("/<int:refund_id>/reject")
@require("refunds.approve")
def confirm_reject(refund_id: int):
    """The confirmation step: a note, then the POST (a row for the list, a box on the page)."""
    if request.args.get("row"):
        return _row(refund_id, block="reject_row")
    return htmx.render("refunds/detail.html", "reject_box", d=refundlist.detail(refund_id),
                       confirming=True)


@bp.post("/<int:refund_id>/reject")
@require("refunds.approve")
def reject(refund_id: int):
    note = (request.form.get("note") or "").strip()[:refunds.MAX_REASON]
    return _act(refund_id, refunds.reject, "rejected", note=note)


@bp.post("/<int:refund_id>/process")
@bp.post("/<int:refund_id>/retry", endpoint="retry")  # a failed one again, same idempotency key
@require("refunds.approve")
def process(refund_id: int):
    return _act(refund_id, refunds.process, "processed")


# --- refund by reference ------------------------------------------------------------------------

@bp.get("/by-reference")
@require("refunds.approve")
def by_reference():
    reference = (request.args.get("reference") or "").strip()[:refund_reference.MAX_REFERENCE]
    form = ReferenceForm(formdata=None, reference=reference)
    preview, error = None, None
    if reference:
        try:
            preview = refund_reference.preview(reference=reference)
        except ServiceError as err:
            error = str(err)
    block = "preview" if hx_target() == "preview" else None
    return htmx.render("refunds/by_reference.html", block, form=form, preview=preview, error=error)


@bp.post("/by-reference")
@require("refunds.approve")
def run_by_reference():
    form = ReferenceForm()
    if not form.validate_on_submit():
        return htmx.render("refunds/by_reference.html", None, form=form, preview=None,
                           error="Enter the reference to refund."), 422
    expect = None
    if None not in (form.customers.data, form.debits.data, form.credits.data):
        expect = (form.customers.data, form.debits.data, form.credits.data)
    try:
        result = refund_reference.run(reference=form.reference.data, staff=current_user,
                                      reason=form.reason.data or "", expect=expect, ip=client_ip())
    except ServiceError as err:
        preview = None
        if err.status == 409:  # changed since the preview: show the new figures
            preview = refund_reference.preview(reference=form.reference.data)
        block = "preview" if htmx.is_htmx() else None
        return htmx.render("refunds/by_reference.html", block, form=form, preview=preview,
                           error=str(err)), err.status
    block = "preview" if htmx.is_htmx() else None
    resp = htmx.render("refunds/by_reference.html", block, form=form, preview=None, result=result)
    if htmx.is_htmx():
        with_trigger(resp, message=f"{result.credits:,} credits refunded on {result.debits:,} "
                                   f"debits of {result.customers:,} customers.")
    return resp
