"""API keys for the product backend: create (the key is shown once), scopes, rate limit, revoke."""
from __future__ import annotations

from flask import Blueprint, request, url_for
from flask_login import current_user
from flask_wtf import FlaskForm
from wtforms import SelectMultipleField, StringField
from wtforms.validators import DataRequired, Length, Optional
from wtforms.widgets import CheckboxInput, ListWidget

from dashboard import htmx
from dashboard.auth import client_ip, require
from dashboard.respond import changed, int_arg, refused, str_arg, with_trigger
from services.core.errors import ServiceError
from services.staff import accounts as staff_service

bp = Blueprint("apikeys", __name__, url_prefix="/api-keys")
PAGE = 50
SCOPE_HELP = {
    "customers:read": "read profiles, balances, ledgers, refund eligibility",
    "customers:write": "create and update customers",
    "debits:write": "spend credits (single and batch debits)",
    "grants:write": "grant credits",
    "tasks:write": "create, complete and fail prepaid tasks",
    "payments:write": "start purchases and verify payments",
}


RATE_LIMIT_HELP = ("Empty: not throttled (customers still have their own limit). "
                   "Or e.g. “100 per minute”, “10/second; 5000/hour”.")


class CreateForm(FlaskForm):
    name = StringField("Name", validators=[DataRequired(), Length(max=120)],
                       description="Where the key is used, e.g. “Production backend”.")
    scopes = SelectMultipleField(
        "Scopes", choices=[(s, s) for s in staff_service.API_SCOPES],
        default=list(staff_service.API_SCOPES), widget=ListWidget(prefix_label=False),
        option_widget=CheckboxInput(), validators=[DataRequired(message="Choose at least one scope.")])
    rate_limit = StringField("Rate limit", validators=[Optional(), Length(max=64)],
                             description=RATE_LIMIT_HELP)


def _ctx(**extra) -> dict:
    status = str_arg("status")
    status = status if status in ("active", "revoked") else ""
    page = staff_service.list_api_keys(status=status or None, after_id=int_arg("after"), limit=PAGE)
    creators = staff_service.emails_by_id(k.created_by_id for k in page.rows)
    return dict(status=status, keys=page.rows, next_after=page.next_cursor, creators=creators,
                scope_help=SCOPE_HELP, **extra)


@bp.get("/")
@require("apikeys.manage")
def index():
    block = "rows" if int_arg("after") else "results"
    return htmx.render("apikeys/index.html", block, form=CreateForm(), **_ctx())


@bp.post("/")
@require("apikeys.manage")
def create():
    form = CreateForm()
    if not form.validate_on_submit():
        return htmx.render("apikeys/index.html", "create_panel", form=form, **_ctx()), 422
    try:
        key, plain = staff_service.create_api_key(name=form.name.data, scopes=form.scopes.data,
                                                  rate_limit=form.rate_limit.data, by=current_user,
                                                  ip=client_ip())
    except ServiceError as err:
        form.form_errors.append(str(err))
        return htmx.render("apikeys/index.html", "create_panel", form=form, **_ctx()), err.status
    # The only response that ever carries the plain key (Cache-Control: no-store).
    resp = htmx.render("apikeys/index.html", "create_panel", form=CreateForm(formdata=None),
                       created=key, plain_key=plain, **_ctx())
    return with_trigger(resp, "apikeys-changed"), 201


@bp.post("/<int:key_id>/revoke")
@require("apikeys.manage")
def revoke(key_id: int):
    staff_service.get_api_key(key_id)  # a guessed id is a 404
    back = url_for("apikeys.index")
    try:
        key = staff_service.revoke_api_key(key_id=key_id, by=current_user, ip=client_ip())
    except ServiceError as err:
        return refused(err, template="apikeys/index.html", block="row", back=back,
                       k=staff_service.get_api_key(key_id), creators={})
    creators = staff_service.emails_by_id([key.created_by_id])
    return changed(template="apikeys/index.html", block="row", back=back, k=key, creators=creators,
                   message=f"API key “{key.name}” ({key.prefix}) is revoked; requests with it now get 401.")


@bp.post("/<int:key_id>/rate-limit")
@require("apikeys.manage")
def rate_limit(key_id: int):
    staff_service.get_api_key(key_id)  # a guessed id is a 404
    back = url_for("apikeys.index")
    try:
        key = staff_service.set_api_key_rate_limit(key_id=key_id, by=current_user, ip=client_ip(),
                                                   rate_limit=request.form.get("rate_limit", "")[:200])
    except ServiceError as err:
        return refused(err, template="apikeys/index.html", block="row", back=back,
                       k=staff_service.get_api_key(key_id), creators={})
    creators = staff_service.emails_by_id([key.created_by_id])
    limit = key.rate_limit or "not throttled"
    return changed(template="apikeys/index.html", block="row", back=back, k=key, creators=creators,
                   message=f"API key “{key.name}” ({key.prefix}): rate limit {limit}.")
