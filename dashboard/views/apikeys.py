"""API keys for the product backend: create (the key is shown once), scopes, rate limit, revoke."""
from __future__ import annotations

from flask import Blueprint, request, url_for
from flask_login import current_user
from flask_wtf import FlaskForm
from wtforms import SelectMultipleField, StringField
from wtforms.validators import DataRequired, Length, Optional
from wtforms.widgets import CheckboxInput, ListWidget

from dashboard import htmx
from dashboard.auth import require
from dashboard.respond import client_ip, int_arg, list_page, row_change, str_arg, with_trigger
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
    "webhooks:write": "manage webhook endpoints (URLs, events, signing secrets)",
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
    return list_page("apikeys/index.html", int_arg("after"), form=CreateForm(), **_ctx())


def _panel(form: CreateForm, status: int, **extra):
    """The create panel with the list's context (a new key shows up in it)."""
    return htmx.render("apikeys/index.html", "create_panel", form=form, **_ctx(**extra)), status


@bp.post("/")
@require("apikeys.manage")
def create():
    form = CreateForm()
    if not form.validate_on_submit():
        return _panel(form, 422)
    try:
        key, plain = staff_service.create_api_key(name=form.name.data, scopes=form.scopes.data,
                                                  rate_limit=form.rate_limit.data, by=current_user,
                                                  ip=client_ip())
    except ServiceError as err:
        form.form_errors.append(str(err))
        return _panel(form, err.status)
    # The only response that ever carries the plain key (Cache-Control: no-store).
    resp, status = _panel(CreateForm(formdata=None), 201, created=key, plain_key=plain)
    return with_trigger(resp, "apikeys-changed"), status


def _row_change(key_id: int, action, message):
    staff_service.get_api_key(key_id)  # a guessed id is a 404

    def row(key):
        if key is None:  # refused: the row as it stands
            return dict(k=staff_service.get_api_key(key_id), creators={})
        return dict(k=key, creators=staff_service.emails_by_id([key.created_by_id]))
    return row_change(action, template="apikeys/index.html", back=url_for("apikeys.index"), row=row,
                      message=message)


@bp.post("/<int:key_id>/revoke")
@require("apikeys.manage")
def revoke(key_id: int):
    return _row_change(key_id, lambda: staff_service.revoke_api_key(
        key_id=key_id, by=current_user, ip=client_ip()),
        lambda key: f"API key “{key.name}” ({key.prefix}) is revoked; requests with it now get 401.")


@bp.post("/<int:key_id>/rate-limit")
@require("apikeys.manage")
def rate_limit(key_id: int):
    return _row_change(key_id, lambda: staff_service.set_api_key_rate_limit(
        key_id=key_id, by=current_user, ip=client_ip(),
        rate_limit=request.form.get("rate_limit", "")[:200]),
        lambda key: f"API key “{key.name}” ({key.prefix}): rate limit "
                    f"{key.rate_limit or 'not throttled'}.")
