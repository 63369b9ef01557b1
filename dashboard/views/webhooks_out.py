"""Webhooks out: the product's endpoints (create, rotate, delete, enable again) and each
endpoint's deliveries with their attempts and a Resend button. Admins only."""
from __future__ import annotations

from flask import Blueprint, url_for
from flask_login import current_user
from flask_wtf import FlaskForm
from wtforms import SelectMultipleField, StringField
from wtforms.validators import DataRequired, Length, Optional
from wtforms.widgets import CheckboxInput, ListWidget

from dashboard import htmx
from dashboard.auth import require
from dashboard.respond import changed, client_ip, int_arg, list_page, refused, with_trigger
from services.core.errors import ServiceError
from services.events import delivery, endpoints, signing
from services.events.outbox import EVENT_TYPES

bp = Blueprint("webhooks_out", __name__, url_prefix="/webhooks-out")
PAGE = 50
PERM = "webhooks_out.manage"


class CreateForm(FlaskForm):
    url = StringField("URL", validators=[DataRequired(), Length(max=2000)],
                      description="https://… of the product backend; a public address.")
    description = StringField("Description", validators=[Optional(), Length(max=200)])
    events = SelectMultipleField(
        "Events", choices=[(e, e) for e in EVENT_TYPES], widget=ListWidget(prefix_label=False),
        option_widget=CheckboxInput(),
        validators=[DataRequired(message="Choose at least one event type.")])


def _ctx(**extra) -> dict:
    rows, more = endpoints.page(cursor=int_arg("before"), limit=PAGE)
    return dict(endpoints=rows, next_before=more, event_help=EVENT_TYPES, **extra)


@bp.get("/")
@require(PERM)
def index():
    return list_page("webhooks_out/index.html", int_arg("before"), form=CreateForm(), **_ctx())


def _panel(form: CreateForm, status: int, **extra):
    return htmx.render("webhooks_out/index.html", "create_panel", form=form,
                       **_ctx(**extra)), status


@bp.post("/")
@require(PERM)
def create():
    form = CreateForm()
    if not form.validate_on_submit():
        return _panel(form, 422)
    try:
        made = endpoints.create(url=form.url.data, events=form.events.data,
                                description=form.description.data or "", staff=current_user,
                                ip=client_ip())
    except ServiceError as err:
        form.form_errors.append(str(err))
        return _panel(form, err.status)
    # The only answer that carries the plain secret (besides a rotation).
    resp, status = _panel(CreateForm(formdata=None), 201, created=made.endpoint,
                          secret=made.secret)
    return with_trigger(resp, "endpoints-changed"), status


def _detail_ctx(endpoint_id: int, **extra) -> dict:
    ep = endpoints.get(endpoint_id)
    rows, more = delivery.deliveries(endpoint_id=ep.id, cursor=int_arg("before"), limit=PAGE)
    events = delivery.events_of(rows)
    return dict(ep=ep, deliveries=rows, next_before=more, events=events,
                attempts=delivery.attempts_of(rows),
                bodies={d.id: signing.body(events[d.outbox_event_id]).decode() for d in rows},
                **extra)


@bp.get("/<int:endpoint_id>")
@require(PERM)
def detail(endpoint_id: int):
    return list_page("webhooks_out/detail.html", int_arg("before"), **_detail_ctx(endpoint_id))


@bp.post("/<int:endpoint_id>/rotate")
@require(PERM)
def rotate(endpoint_id: int):
    endpoints.get(endpoint_id)  # a guessed id is a 404
    made = endpoints.rotate(endpoint_id=endpoint_id, staff=current_user, ip=client_ip())
    # Rendered (never flashed into the session cookie): the secret is shown this once.
    return htmx.render("webhooks_out/detail.html", "endpoint_panel",
                       **_detail_ctx(endpoint_id, secret=made.secret))


@bp.post("/<int:endpoint_id>/enable")
@require(PERM)
def enable(endpoint_id: int):
    endpoints.get(endpoint_id)
    endpoints.enable(endpoint_id=endpoint_id, staff=current_user, ip=client_ip())
    return changed(template="webhooks_out/detail.html", block="endpoint_panel",
                   back=url_for("webhooks_out.detail", endpoint_id=endpoint_id),
                   message="Endpoint enabled: new events are delivered again. Resend the "
                           "deliveries it missed below.", **_detail_ctx(endpoint_id))


@bp.post("/<int:endpoint_id>/delete")
@require(PERM)
def delete(endpoint_id: int):
    ep = endpoints.get(endpoint_id)
    endpoints.delete(endpoint_id=endpoint_id, staff=current_user, ip=client_ip())
    back = url_for("webhooks_out.index")
    resp = changed(template="webhooks_out/index.html", block="results", back=back,
                   message=f"Endpoint {ep.url} deleted; nothing more is sent to it.",
                   events=("endpoints-changed",), **_ctx())
    if htmx.is_htmx():
        resp.headers["HX-Redirect"] = back
    return resp


@bp.post("/deliveries/<int:delivery_id>/resend")
@require(PERM)
def resend(delivery_id: int):
    d = delivery.get_delivery(delivery_id)
    back = url_for("webhooks_out.detail", endpoint_id=d.endpoint_id)
    try:
        d = delivery.resend(delivery_id=delivery_id, staff=current_user, ip=client_ip())
    except ServiceError as err:
        return refused(err, template="webhooks_out/detail.html", block="delivery_status",
                       back=back, d=d)
    return changed(template="webhooks_out/detail.html", block="delivery_status", back=back, d=d,
                   message="Queued: it is sent again within a few seconds.")
