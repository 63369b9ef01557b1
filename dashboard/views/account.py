"""Your account: any signed-in staff member changes their own password."""
from __future__ import annotations

from flask import Blueprint, flash, redirect, request, url_for
from flask_login import current_user
from flask_wtf import FlaskForm
from wtforms import PasswordField
from wtforms.validators import DataRequired, EqualTo, Length

from dashboard import htmx
from dashboard.auth import end_session, require, start_session
from dashboard.respond import client_ip, errors_on_fields
from services.core.errors import ServiceError
from services.staff import signin

bp = Blueprint("account", __name__, url_prefix="/account")


class PasswordForm(FlaskForm):
    current_password = PasswordField("Current password", [DataRequired(), Length(max=200)])
    new_password = PasswordField("New password", [DataRequired(), Length(max=200)],
                                 description="At least 12 characters; a passphrase is easiest.")
    confirm = PasswordField("New password again", [
        DataRequired(), EqualTo("new_password", message="The two new passwords differ.")])


@bp.route("/password", methods=["GET", "POST"])
@require("account.password")
def password():
    """Change one's own password; every other session of the account ends, this one goes on."""
    form = PasswordForm()
    status = 200
    if form.validate_on_submit():
        try:
            member = signin.change_password(staff=current_user._get_current_object(),
                                            current=form.current_password.data,
                                            new=form.new_password.data, ip=client_ip())
        except signin.AccountLocked as err:
            # Five wrong current passwords: whoever holds this session may not be its owner.
            end_session()
            flash(str(err), "error")
            return redirect(url_for("auth.login"), code=303)
        except ServiceError as err:
            # the length rule names the field "password"
            errors_on_fields(form, err, rename={"password": "new_password"})
            status = err.status
        else:
            start_session(member)  # this session goes on under the new session version
            flash("Your password is changed. Every other session of yours is signed out.",
                  "success")
            return redirect(url_for("overview.index"), code=303)
    elif request.method == "POST":
        status = 422
    return htmx.render("account/password.html", None, form=form), status
