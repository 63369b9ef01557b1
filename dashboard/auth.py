"""Login, roles -> permissions, and @require: every page and fragment declares its permission."""
from __future__ import annotations

import functools
import threading
import time
from collections import defaultdict, deque

from flask import Blueprint, Flask, abort, current_app, flash, redirect, request, url_for
from flask_login import current_user, login_required, login_user, logout_user
from flask_wtf import FlaskForm
from wtforms import EmailField, PasswordField
from wtforms.validators import DataRequired, Length

from dashboard import htmx
from dashboard.extensions import db, login_manager
from models import Staff
from services import staff as staff_service

PERMISSIONS = (
    "customers.view", "credits.adjust", "plans.manage", "pricing.manage", "settings.manage",
    "refunds.request", "refunds.approve", "transactions.view", "transactions.export",
    "analytics.view", "jobs.view", "jobs.run", "staff.manage", "apikeys.manage", "audit.view",
    "webhooks.view", "tasks.view", "tasks.manage",
)
ROLE_PERMISSIONS: dict[str, frozenset[str]] = {
    "admin": frozenset(PERMISSIONS),
    "support": frozenset({"customers.view", "credits.adjust", "refunds.request",
                          "transactions.view", "tasks.view", "tasks.manage", "webhooks.view"}),
    "finance": frozenset({"customers.view", "transactions.view", "transactions.export",
                          "analytics.view", "refunds.request", "refunds.approve", "jobs.view",
                          "audit.view", "tasks.view"}),
}
PUBLIC = "public"  # marker for the few routes anyone may open (login, health, static)


def can(user, permission: str) -> bool:
    return bool(getattr(user, "is_authenticated", False)) and \
        permission in ROLE_PERMISSIONS.get(user.role, frozenset())


def require(permission: str):
    """Deny by default: the view runs only for a logged-in user whose role has `permission`."""
    if permission != PUBLIC and permission not in PERMISSIONS:
        raise ValueError(f"unknown permission {permission!r}")

    def wrap(view):
        @functools.wraps(view)
        def inner(*args, **kwargs):
            if permission != PUBLIC:
                if not current_user.is_authenticated:
                    return current_app.login_manager.unauthorized()
                if not can(current_user, permission):
                    abort(403)
            return view(*args, **kwargs)

        inner.permission = permission  # read by the route-matrix test and the nav
        return inner

    return wrap


# --- login throttling: per account and per IP, sliding window, never a permanent lock-out -----

class Throttle:
    def __init__(self, limit: int, window: float):
        self.limit, self.window = limit, window
        self.hits: dict[str, deque] = defaultdict(deque)
        self.lock = threading.Lock()

    def blocked(self, key: str) -> float:
        """Seconds to wait before `key` may try again (0 when allowed)."""
        now = time.monotonic()
        with self.lock:
            q = self.hits[key]
            while q and now - q[0] > self.window:
                q.popleft()
            return 0.0 if len(q) < self.limit else self.window - (now - q[0])

    def hit(self, key: str) -> None:
        with self.lock:
            self.hits[key].append(time.monotonic())

    def reset(self, key: str) -> None:
        with self.lock:
            self.hits.pop(key, None)


per_account = Throttle(limit=5, window=300)
per_ip = Throttle(limit=20, window=300)


class LoginForm(FlaskForm):
    email = EmailField("Email", validators=[DataRequired(), Length(max=320)])
    password = PasswordField("Password", validators=[DataRequired(), Length(max=200)])


bp = Blueprint("auth", __name__)


@bp.route("/login", methods=["GET", "POST"])
@require(PUBLIC)
def login():
    if current_user.is_authenticated:
        return redirect(url_for("overview.index"))
    form = LoginForm()
    status = 200
    if form.validate_on_submit():
        email, ip = form.email.data.strip().lower(), request.remote_addr or "?"
        wait = max(per_account.blocked(email), per_ip.blocked(ip))
        if wait:
            form.form_errors.append(f"Too many attempts. Try again in {int(wait) + 1} seconds.")
            status = 429
        else:
            user = staff_service.authenticate(email, form.password.data)
            if user is None:
                per_account.hit(email)
                per_ip.hit(ip)
                staff_service.login_failed(email=email, ip=ip)
                form.form_errors.append("Email or password is incorrect.")
                status = 401
            else:
                per_account.reset(email)
                login_user(user)
                staff_service.login_succeeded(staff=user, ip=ip)
                target = request.args.get("next", "")
                # Only same-site relative paths: never an open redirect.
                if not target.startswith("/") or target.startswith("//"):
                    target = url_for("overview.index")
                return redirect(target)
    elif request.method == "POST":
        status = 422
    return htmx.render("auth/login.html", None, form=form), status


@bp.post("/logout")
@login_required
@require(PUBLIC)
def logout():
    logout_user()
    flash("You have been signed out.", "info")
    return redirect(url_for("auth.login"))


def init_app(app: Flask) -> None:
    login_manager.init_app(app)
    login_manager.login_view = "auth.login"
    login_manager.login_message = "Please sign in to continue."
    login_manager.login_message_category = "info"
    login_manager.session_protection = "strong"

    @login_manager.user_loader
    def load(user_id: str):
        try:
            sid, version = (int(x) for x in user_id.split(":"))
        except ValueError:
            return None
        user = db.session.get(Staff, sid)
        if user is None or not user.active or user.session_version != version:
            return None
        return user

    @login_manager.unauthorized_handler
    def unauthorized():
        if request.headers.get("HX-Request"):
            # htmx cannot follow a redirect to a full page inside a fragment: ask it to navigate.
            resp = current_app.response_class(status=401)
            resp.headers["HX-Redirect"] = url_for("auth.login")
            return resp
        return redirect(url_for("auth.login", next=request.full_path.rstrip("?")))

    @app.context_processor
    def _perms():
        return {"can": lambda perm: can(current_user, perm)}

    app.register_blueprint(bp)
