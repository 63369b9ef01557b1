"""Staff: invite with a role, change role, deactivate/reactivate, reset a password, sign out
everywhere, unlock after too many failed sign-ins."""
from __future__ import annotations

from flask import Blueprint, flash, make_response, redirect, request, url_for
from flask_login import current_user
from flask_wtf import FlaskForm
from wtforms import EmailField, PasswordField, SelectField, StringField
from wtforms.validators import DataRequired, Length, Optional, Regexp

from dashboard import htmx
from dashboard.auth import end_session, require
from dashboard.respond import client_ip, int_arg, list_page, refused, row_change, str_arg, with_trigger
from models.staff import ROLES
from services.core.errors import ServiceError, ValidationFailed
from services.staff import accounts as staff_service

bp = Blueprint("staff", __name__, url_prefix="/staff")
PAGE = 50
ROLE_CHOICES = [("support", "Support"), ("finance", "Finance"), ("admin", "Admin")]
ROLE_HELP = {
    "admin": "everything, including settings, staff, API keys and jobs",
    "support": "customers, credit adjustments within the limit, refund requests, tasks",
    "finance": "transactions, exports, analytics, refund approvals, audit log",
}


class CreateForm(FlaskForm):
    email = EmailField("Email", validators=[DataRequired(), Length(max=320), Regexp(
        r"^[^@\s]+@[^@\s]+\.[^@\s]+$", message="Enter an email address like name@company.com.")])
    name = StringField("Name", validators=[Optional(), Length(max=200)])
    role = SelectField("Role", choices=ROLE_CHOICES, default="support")
    password = PasswordField("Password", validators=[
        Optional(), Length(min=12, max=200, message="Passwords need at least 12 characters.")],
                             description="Leave empty to generate a one-time password.")


class RoleForm(FlaskForm):
    role = SelectField("Role", choices=ROLE_CHOICES)


def _filters() -> dict:
    role = str_arg("role")
    status = str_arg("status")
    return {"q": str_arg("q"), "role": role if role in ROLES else "",
            "status": status if status in ("active", "inactive") else ""}


def _page_ctx(**extra) -> dict:
    f = _filters()
    page = staff_service.list_staff(q=f["q"], role=f["role"] or None, status=f["status"] or None,
                                    after_id=int_arg("after"), limit=PAGE)
    return dict(f=f, staff=page.rows, next_after=page.next_cursor, role_help=ROLE_HELP,
                role_choices=ROLE_CHOICES, **extra)


def _panel(form: CreateForm, **extra):
    """The invite panel with the list's context (a new member shows up in it)."""
    return htmx.render("staff/index.html", "create_panel", form=form, **_page_ctx(**extra))


@bp.get("/")
@require("staff.manage")
def index():
    return list_page("staff/index.html", int_arg("after"), form=CreateForm(), **_page_ctx())


@bp.post("/")
@require("staff.manage")
def create():
    form = CreateForm()
    if not form.validate_on_submit():
        return _panel(form), 422
    password = form.password.data or staff_service.generate_password()
    try:
        member = staff_service.create(email=form.email.data, role=form.role.data,
                                      password=password, name=(form.name.data or "").strip(),
                                      by=current_user, ip=client_ip())
    except ServiceError as err:
        form.form_errors.append(str(err))
        return _panel(form), err.status
    # The password is shown once, only when we generated it (never stored, never logged).
    shown = None if form.password.data else password
    resp = _panel(CreateForm(formdata=None), created=member, one_time_password=shown)
    return with_trigger(resp, "staff-changed"), 201


def _row_change(staff_id: int, action, message: str):
    return row_change(action, template="staff/index.html", back=url_for("staff.index"),
                      row=lambda member: dict(s=member or staff_service.get(staff_id),
                                              role_choices=ROLE_CHOICES),
                      message=lambda member: message.format(email=member.email, role=member.role))


@bp.post("/<int:staff_id>/role")
@require("staff.manage")
def change_role(staff_id: int):
    staff_service.get(staff_id)  # 404 before anything else for a guessed id
    form = RoleForm()
    if not form.validate_on_submit():
        return refused(ValidationFailed("Choose one of the roles."), template="staff/index.html",
                       block="row", back=url_for("staff.index"), s=staff_service.get(staff_id),
                       role_choices=ROLE_CHOICES)
    return _row_change(staff_id, lambda: staff_service.change_role(
        staff_id=staff_id, role=form.role.data, by=current_user, ip=client_ip()),
        "{email} is now {role}.")


@bp.post("/<int:staff_id>/deactivate", endpoint="deactivate")
@bp.post("/<int:staff_id>/reactivate", endpoint="reactivate")
@require("staff.manage")
def set_active(staff_id: int):
    staff_service.get(staff_id)
    active = request.endpoint == "staff.reactivate"
    return _row_change(staff_id, lambda: staff_service.set_active(
        staff_id=staff_id, active=active, by=current_user, ip=client_ip()),
        "{email} can sign in again." if active else "{email} is deactivated and signed out everywhere.")


@bp.post("/<int:staff_id>/reset-password")
@require("staff.manage")
def reset_password(staff_id: int):
    staff_service.get(staff_id)
    try:
        member, password = staff_service.reset_password(staff_id=staff_id, by=current_user,
                                                        ip=client_ip())
    except ServiceError as err:
        return refused(err, template="staff/index.html", block="row", back=url_for("staff.index"),
                       s=staff_service.get(staff_id), role_choices=ROLE_CHOICES)
    # Shown once on this response (no-store), never stored in the clear.
    return _panel(CreateForm(formdata=None), created=member, one_time_password=password, reset=True)


@bp.post("/<int:staff_id>/sign-out-everywhere")
@require("staff.manage")
def sign_out_everywhere(staff_id: int):
    staff_service.get(staff_id)
    if staff_id != current_user.id:
        return _row_change(staff_id, lambda: staff_service.sign_out_everywhere(
            staff_id=staff_id, by=current_user, ip=client_ip()),
            "{email} is signed out on every device.")
    # Oneself: this session ends with the others, so go to the sign-in page.
    staff_service.sign_out_everywhere(staff_id=staff_id, by=current_user, ip=client_ip())
    end_session()
    flash("You are signed out on every device.", "info")
    if htmx.is_htmx():
        resp = make_response("", 200)
        resp.headers["HX-Redirect"] = url_for("auth.login")
        return resp
    return redirect(url_for("auth.login"), code=303)


@bp.post("/<int:staff_id>/unlock")
@require("staff.manage")
def unlock(staff_id: int):
    staff_service.get(staff_id)
    return _row_change(staff_id, lambda: staff_service.unlock(
        staff_id=staff_id, by=current_user, ip=client_ip()), "{email} can sign in again.")
