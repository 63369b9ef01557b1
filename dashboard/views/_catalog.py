"""The routes shared by plans, credit packages and feature pricing (one blueprint each).

Each area lists, creates, edits (with an impact preview before a change of what customers pay
or receive is saved), archives, unarchives and deletes (a referenced item is archived instead).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

from flask import Blueprint, flash, make_response, redirect, request, url_for
from flask_login import current_user
from flask_wtf import FlaskForm
from wtforms import BooleanField

from dashboard import htmx
from dashboard.auth import require
from dashboard.respond import client_ip, errors_on_fields, int_arg
from services.catalog import edit as catalog
from services.core import money as minor
from services.core.errors import ServiceError

PAGE = 50
STATUSES = ("active", "archived", "all")


def to_minor(value, currency: str) -> int | None:
    """19.99 USD -> 1999; 500 JPY -> 500. None for an empty or unreadable amount."""
    if value is None or value == "":
        return None
    try:
        d = Decimal(str(value).replace(",", "").strip())
    except InvalidOperation:
        return None
    return minor.to_minor(d, currency) if d.is_finite() else None


def from_minor(value: int | None, currency: str) -> Decimal | None:
    return None if value is None else minor.from_minor(value, currency)


class ConfirmMixin:
    confirm = BooleanField("I have reviewed the impact")


@dataclass
class Area:
    name: str  # blueprint name and URL prefix: plans | packages | pricing
    kind: str  # catalog kind: plan | package | price
    permission: str
    form: type[FlaskForm]
    to_data: Callable[[FlaskForm], dict]  # form -> service fields
    from_obj: Callable[[object], dict]  # item -> form data
    title: str
    noun: str
    blurb: str  # what a new one is, on its edit page
    impact_hint: str  # what changes the impact preview
    create_label: str  # the create button
    key_attr: str = "code"  # the item's fixed key (crumbs, read-only field)
    label_attr: str = "name"  # the item's display name
    extra: Callable[[], dict] | None = None  # more context for the list page


def _template(area: Area, page: str) -> str:
    """The list page is the area's own; the edit page is shared (catalog/edit.html), with the
    area's fields from <area>/_fields.html."""
    return "catalog/edit.html" if page == "edit" else f"{area.name}/{page}.html"


def micros(value: int | None, currency: str = "USD") -> str:
    """Provider costs in millionths: 2000 -> $0.002 (at least two decimals, no trailing zeros)."""
    if value is None:
        return "—"
    text = f"{Decimal(value) / 1_000_000:,.6f}".rstrip("0")
    if len(text.split(".")[1]) < 2:
        text = f"{Decimal(value) / 1_000_000:,.2f}"
    return money_text(text, currency)


def money_text(text: str, currency: str) -> str:
    from dashboard.filters import SYMBOLS
    sym = SYMBOLS.get((currency or "USD").upper(), "")
    return f"{sym}{text}" if sym else f"{text} {currency}"


def catalog_value(value, field: str, currency: str = "USD") -> str:
    """One field's value as staff read it (money, credits, days, text)."""
    from dashboard.filters import credits, money
    if value is None or value == "":
        return "none"
    if field == "pricing":
        return {"fixed": "fixed price", "per_credit": "price per credit"}.get(value, str(value))
    if field.endswith("_bp"):
        text = f"{Decimal(value) / 100:f}"
        return (text.rstrip("0").rstrip(".") if "." in text else text) + "%"
    if field.endswith("_minor"):
        return money(value, currency)
    if field.endswith("_micros"):
        return micros(value, currency)
    if isinstance(value, int) and not isinstance(value, bool):
        return credits(value)
    return str(value)


def make_blueprint(area: Area, *, field_map: dict[str, str] | None = None) -> Blueprint:
    """The blueprint of one catalogue area; `field_map` maps service fields to form fields."""
    bp = Blueprint(area.name, __name__, url_prefix=f"/{area.name}")
    bp.add_app_template_filter(micros, "micros")
    bp.add_app_template_filter(catalog_value, "catalog_value")
    fmap = field_map or {}

    def ctx(**kw) -> dict:
        return dict(area=area, **kw)

    @bp.get("/")
    @require(area.permission)
    def index():
        status = request.args.get("status", "active")
        status = status if status in STATUSES else "active"
        after = int_arg("after")
        page = catalog.list_items(area.kind, status=status, after_id=after, limit=PAGE)
        more = area.extra() if area.extra else {}
        return htmx.render(_template(area, "index"), "rows" if after else None,
                           **ctx(page=page, status=status, after=after, **more))

    @bp.get("/new")
    @require(area.permission)
    def new():
        return htmx.render(_template(area, "edit"), None, **ctx(form=area.form(), item=None))

    @bp.post("/")
    @require(area.permission)
    def create():
        form = area.form()
        if form.validate_on_submit():
            try:
                item = catalog.create(area.kind, area.to_data(form), staff=current_user,
                                      ip=client_ip())
            except ServiceError as err:
                errors_on_fields(form, err, rename=fmap, detail_messages=True)
                status = err.status
            else:
                return _done(f"{area.noun} {_label(item)} created.")
        else:
            status = 422
        return htmx.render(_template(area, "edit"), "editor", **ctx(form=form, item=None)), status

    @bp.get("/<int:item_id>")
    @require(area.permission)
    def edit(item_id: int):
        item = catalog.get(area.kind, item_id)
        form = area.form(data=area.from_obj(item))
        return htmx.render(_template(area, "edit"), None,
                           **ctx(form=form, item=item, refs=catalog.references(area.kind, item)))

    @bp.post("/<int:item_id>")
    @require(area.permission)
    def update(item_id: int):
        item = catalog.get(area.kind, item_id)
        form = area.form()
        status = 422
        if form.validate_on_submit():
            data = area.to_data(form)
            try:
                review = catalog.review(area.kind, item_id, data)
                if review.impact is not None and not form.confirm.data:
                    # A change of what customers pay or receive: show its impact first.
                    return htmx.render(_template(area, "edit"), "editor",
                                       **ctx(form=form, item=item, review=review))
                catalog.update(area.kind, item_id, data, staff=current_user, ip=client_ip())
            except ServiceError as err:
                errors_on_fields(form, err, rename=fmap, detail_messages=True)
                status = err.status
            else:
                return _done(f"{area.noun} {_label(item)} saved.")
        return htmx.render(_template(area, "edit"), "editor", **ctx(form=form, item=item)), status

    @bp.get("/<int:item_id>/impact")
    @require(area.permission)
    def impact(item_id: int):
        """The live preview while typing (read-only; the same figures the review step shows)."""
        item = catalog.get(area.kind, item_id)
        form = area.form(request.args, meta={"csrf": False})
        data = area.to_data(form)
        result = catalog.impact(area.kind, item_id, data)
        if not htmx.is_htmx():  # a bookmarked or shared preview: the edit page with it
            form = area.form(data={**area.from_obj(item), **{k: v for k, v in form.data.items()
                                                             if v not in (None, "")}})
        return htmx.render(_template(area, "edit"), "impact",
                           **ctx(item=item, impact=result, form=form,
                                 refs=catalog.references(area.kind, item)))

    @bp.post("/<int:item_id>/archive")
    @require(area.permission)
    def archive(item_id: int):
        item = catalog.archive(area.kind, item_id, staff=current_user, ip=client_ip())
        return _done(f"{area.noun} {_label(item)} archived: hidden from the catalogue.")

    @bp.post("/<int:item_id>/unarchive")
    @require(area.permission)
    def unarchive(item_id: int):
        item = catalog.unarchive(area.kind, item_id, staff=current_user, ip=client_ip())
        return _done(f"{area.noun} {_label(item)} is active again.")

    @bp.get("/<int:item_id>/delete")
    @require(area.permission)
    def confirm_delete(item_id: int):
        """The confirmation step of a delete (a fragment for htmx, a page without)."""
        item = catalog.get(area.kind, item_id)
        refs = {k: v for k, v in catalog.references(area.kind, item).items() if v}
        return htmx.render(_template(area, "edit"), "delete_confirm",
                           **ctx(item=item, refs=refs, form=area.form(data=area.from_obj(item)),
                                 confirming=True))

    @bp.post("/<int:item_id>/delete")
    @require(area.permission)
    def delete(item_id: int):
        item = catalog.get(area.kind, item_id)
        label = _label(item)
        what, refs = catalog.delete(area.kind, item_id, staff=current_user, ip=client_ip())
        if what == "deleted":
            return _done(f"{area.noun} {label} deleted.")
        used = ", ".join(f"{n:,} {k}" for k, n in refs.items())
        return _done(f"{area.noun} {label} is referenced ({used}), so it was archived instead.")

    def _done(message: str):
        flash(message, "success")
        target = url_for(f"{area.name}.index")
        if htmx.is_htmx():
            resp = make_response("", 200)
            resp.headers["HX-Redirect"] = target
            return resp
        return redirect(target)

    return bp


def _label(item) -> str:
    return getattr(item, "name", None) or getattr(item, "label", None) or getattr(item, "feature", "")
