"""Settings: every tunable value with validation, and who changed what from what to what, and why."""
from __future__ import annotations

from flask import Blueprint, abort, redirect, request, url_for
from flask_login import current_user
from flask_wtf import FlaskForm
from wtforms import StringField
from wtforms.validators import DataRequired, Length

from dashboard import htmx
from dashboard.auth import require
from dashboard.respond import changed, client_ip, int_arg, refused, str_arg
from services.catalog import packages as package_prices
from services.core import settings as settings_service
from services.core.errors import ServiceError, ValidationFailed
from services.staff import accounts as staff_service

bp = Blueprint("settings", __name__, url_prefix="/settings")
HISTORY_PAGE = 20


class SettingForm(FlaskForm):
    value = StringField("New value", validators=[DataRequired(message="Enter a value."),
                                                 Length(max=20)])
    reason = StringField("Reason", validators=[
        DataRequired(message="Say why (it goes into the change history)."), Length(min=3, max=500)])


def _rows(values: dict, last: dict) -> list[dict]:
    return [{"spec": spec, "value": values[key], "last": last.get(key)}
            for key, spec in settings_service.SPECS.items()]


def _history_ctx() -> dict:
    key = str_arg("key", 64)
    key = key if key in settings_service.SPECS else ""
    rows, next_before = settings_service.history(key=key or None, before_id=int_arg("before"),
                                                 limit=HISTORY_PAGE)
    return dict(history=rows, history_key=key, next_before=next_before)


def _emails(*groups) -> dict[int, str]:
    return staff_service.emails_by_id(c.staff_id for g in groups for c in g if c)


def _per_credit_ctx() -> dict:
    """The packages that follow a price per credit, with what they sell for now."""
    followers = package_prices.following()
    return dict(followers=followers, follower_prices=package_prices.effective_prices(followers),
                price_keys=settings_service.PRICE_PER_CREDIT, specs=settings_service.SPECS)


@bp.get("/")
@require("settings.manage")
def index():
    values, last = settings_service.all_values(), settings_service.last_changes()
    hist = _history_ctx()
    return htmx.render("settings/index.html", None, rows=_rows(values, last),
                       emails=_emails(last.values(), hist["history"]), **hist, **_per_credit_ctx())


@bp.get("/per-credit")
@require("settings.manage")
def per_credit():
    """The packages priced per credit alone (htmx refresh after a change); else the page."""
    if htmx.is_htmx():
        return htmx.render("settings/index.html", "per_credit", **_per_credit_ctx())
    return index()


@bp.get("/impact")
@require("settings.manage")
def impact():
    """Preview of a new price per credit (`?key=&value=`): each package that follows it,
    old -> new price (read-only; htmx while typing, or the whole page with it in its row)."""
    key = str_arg("key", 64)
    spec = settings_service.SPECS.get(key)
    value = (request.args.get("value") or "")[:20]
    preview = package_prices.setting_impact(key, value) if spec else None
    if preview is None:  # no price-per-credit key (a bare or edited link): the settings page
        return redirect(url_for("settings.index"))
    ctx = dict(impact_key=key, impact=preview, impact_value=value)
    if htmx.is_htmx():
        return htmx.render("settings/index.html", "setting_impact",
                           r={"spec": spec}, price_keys=settings_service.PRICE_PER_CREDIT, **ctx)
    values, last = settings_service.all_values(), settings_service.last_changes()
    hist = _history_ctx()
    return htmx.render("settings/index.html", None, rows=_rows(values, last),
                       emails=_emails(last.values(), hist["history"]), **hist, **_per_credit_ctx(), **ctx)


@bp.get("/history")
@require("settings.manage")
def history():
    """The change history alone (htmx refresh and paging); the whole page without htmx."""
    hist = _history_ctx()
    block = "history_rows" if int_arg("before") else "history"
    values, last = settings_service.all_values(), settings_service.last_changes()
    return htmx.render("settings/index.html", block, rows=_rows(values, last),
                       emails=_emails(last.values(), hist["history"]), **hist, **_per_credit_ctx())


@bp.post("/<key>")
@require("settings.manage")
def update(key: str):
    spec = settings_service.SPECS.get(key)
    if spec is None:
        abort(404)
    form = SettingForm()
    back = url_for("settings.index") + f"#setting-{key}"

    def row(**extra):
        value = settings_service.all_values()[key]
        last = settings_service.last_changes().get(key)
        return dict(r={"spec": spec, "value": value, "last": last}, emails=_emails([last]),
                    price_keys=settings_service.PRICE_PER_CREDIT, **extra)

    if not form.validate_on_submit():
        errors = [e for f in (form.value, form.reason) for e in f.errors]
        return refused(ValidationFailed(" ".join(errors)), template="settings/index.html",
                       block="setting_row", back=back, submitted=form, **row())
    try:
        change = settings_service.update(key=key, value=form.value.data, staff=current_user,
                                         reason=form.reason.data.strip(), ip=client_ip())
    except ServiceError as err:
        return refused(err, template="settings/index.html", block="setting_row", back=back,
                       submitted=form, **row())
    if change is None:
        return changed(template="settings/index.html", block="setting_row", back=back,
                       category="info", message=f"{spec.label} already has that value; nothing changed.",
                       **row())
    return changed(template="settings/index.html", block="setting_row", back=back,
                   events=("settings-changed",),
                   message=f"{spec.label} changed from {change.old_value} to {change.new_value}.", **row())
