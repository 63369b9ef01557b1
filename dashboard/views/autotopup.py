"""Auto top-up on the customer page (admins): the card, the setting form, resume after a pause.

The card is a block of customers/detail.html (`auto_topup`); these routes answer that block for
htmx and redirect to the customer page without JavaScript.
"""
from __future__ import annotations

from flask import Blueprint, flash, redirect, url_for
from flask_login import current_user
from flask_wtf import FlaskForm
from wtforms import BooleanField, IntegerField, SelectField
from wtforms.validators import InputRequired, NumberRange

from dashboard import htmx
from dashboard.auth import can, require
from dashboard.respond import client_ip, form_status
from services.core.errors import ServiceError
from services.ledger import customers
from services.payments import autotopup

bp = Blueprint("autotopup", __name__, url_prefix="/customers")


class AutoTopupForm(FlaskForm):
    enabled = BooleanField("Enabled")
    threshold = IntegerField("Threshold (credits)", validators=[
        InputRequired("Enter a threshold."), NumberRange(min=0, max=10**12)])
    package_id = SelectField("Package", coerce=int, validators=[InputRequired("Choose a package.")])
    monthly_limit = IntegerField("Top-ups per month", validators=[
        InputRequired("Enter a monthly limit."),
        NumberRange(min=1, max=autotopup.MAX_MONTHLY_LIMIT)])


def _choices() -> list[tuple[int, str]]:
    return [(p.id, f"{p.name} · {p.credits:,} credits") for p in autotopup.packages()]


def _form(summary: autotopup.Summary) -> AutoTopupForm:
    """The form filled from the saved setting (or sensible defaults)."""
    row = summary.row
    form = AutoTopupForm(formdata=None, data={
        "enabled": row.enabled if row else False, "threshold": row.threshold if row else 100,
        "package_id": row.package_id if row else None,
        "monthly_limit": row.monthly_limit if row else 1})
    form.package_id.choices = _choices()
    return form


def card_ctx(customer_id: int, form: AutoTopupForm | None = None) -> dict:
    """What the customer page's auto top-up card needs (nothing for roles that cannot see it)."""
    if not can(current_user, "autotopup.manage"):
        return {}
    summary = autotopup.summary(customer_id=customer_id)
    return {"auto": summary, "auto_form": form or _form(summary)}


def _answer(customer_id: int, status: int = 200, form=None, error: str | None = None,
            message: str | None = None):
    customer = customers.get(customer_id)
    ctx = card_ctx(customer_id, form)
    if not htmx.is_htmx():
        if error:
            flash(error, "error")
        elif message:
            flash(message, "success")
        return redirect(url_for("customers.detail", customer_id=customer_id))
    return htmx.render("customers/detail.html", "auto_topup", customer=customer,
                       auto_error=error, auto_message=message, **ctx), form_status(status)


@bp.post("/<int:customer_id>/auto-topup")
@require("autotopup.manage")
def update(customer_id: int):
    customers.get(customer_id)  # 404 first
    form = AutoTopupForm()
    form.package_id.choices = _choices()
    if not form.validate_on_submit():
        return _answer(customer_id, 422, form, error="Check the highlighted fields.")
    try:
        autotopup.configure(customer_id=customer_id, enabled=bool(form.enabled.data),
                            threshold=form.threshold.data, package_id=form.package_id.data,
                            monthly_limit=form.monthly_limit.data, staff=current_user,
                            ip=client_ip())
    except ServiceError as err:
        return _answer(customer_id, err.status, form, error=str(err))
    return _answer(customer_id, message="Auto top-up saved.")


@bp.post("/<int:customer_id>/auto-topup/resume")
@require("autotopup.manage")
def resume(customer_id: int):
    customers.get(customer_id)
    try:
        autotopup.resume(customer_id=customer_id, staff=current_user, ip=client_ip())
    except ServiceError as err:
        return _answer(customer_id, err.status, error=str(err))
    return _answer(customer_id, message="Auto top-up resumed.")
