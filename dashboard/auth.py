"""Login, roles -> permissions, and @require: every page and fragment declares its permission."""
from __future__ import annotations

import functools
import logging
import time

from flask import (
    Blueprint,
    Flask,
    abort,
    current_app,
    flash,
    g,
    redirect,
    request,
    session,
    url_for,
)
from flask_login import current_user, login_user, logout_user
from flask_wtf import FlaskForm
from limits import parse, storage, strategies
from wtforms import EmailField, PasswordField
from wtforms.validators import DataRequired, Length

from dashboard import htmx
from dashboard.extensions import db, login_manager
from dashboard.respond import client_ip, safe_next
from models import Staff
from services.staff import accounts as staff_service
from services.staff import signin

log = logging.getLogger("creditdesk.auth")

PERMISSIONS = (
    "customers.view", "credits.adjust", "plans.manage", "pricing.manage", "settings.manage",
    "refunds.request", "refunds.approve", "transactions.view", "transactions.export",
    "analytics.view", "jobs.view", "jobs.run", "staff.manage", "apikeys.manage", "audit.view",
    "webhooks.view", "webhooks.replay", "tasks.view", "tasks.manage", "webhooks_out.manage",
    "sandbox.use", "autotopup.manage", "account.password",
)
# Least privilege: support helps customers, finance watches money; only admins change the
# catalogue, settings, staff, keys, run jobs, move task money or replay webhooks.
ROLE_PERMISSIONS: dict[str, frozenset[str]] = {
    "admin": frozenset(PERMISSIONS),
    "support": frozenset({"customers.view", "credits.adjust", "refunds.request", "tasks.view",
                          "account.password"}),
    "finance": frozenset({"customers.view", "transactions.view", "transactions.export",
                          "analytics.view", "refunds.request", "refunds.approve", "jobs.view",
                          "audit.view", "tasks.view", "webhooks.view", "account.password"}),
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


# --- per-address guard: coarse, so that an office behind one NAT is never locked out -----------

class AddressThrottle:
    """Failed sign-ins per client address in a moving window (Redis when configured, else this
    process's memory). Accounts are protected by the lock in services/signin.py; this only slows
    a spray of many accounts from one address, so its limit is high (100 per 15 minutes)."""

    def __init__(self, app: Flask):
        cfg = app.config
        uri = cfg.get("LOGIN_THROTTLE_STORAGE") or cfg.get("REDIS_URL") or "memory://"
        self.limiter = strategies.MovingWindowRateLimiter(storage.storage_from_string(uri))
        self.item = parse(f"{int(cfg.get('LOGIN_MAX_FAILURES_PER_IP', 100))} per "
                          f"{int(cfg.get('LOGIN_IP_WINDOW_SECONDS', 900))} seconds")

    def wait(self, ip: str) -> int:
        """Seconds before this address may try again (0: go ahead)."""
        if self.limiter.test(self.item, "login-ip", ip):
            return 0
        reset = self.limiter.get_window_stats(self.item, "login-ip", ip).reset_time
        return max(1, int(reset - time.time() + 0.999))

    def failed(self, ip: str) -> None:
        self.limiter.hit(self.item, "login-ip", ip)


class AddressThrottled(Exception):
    def __init__(self, seconds: int):
        super().__init__(f"Too many failed sign-ins from this address. Try again in {seconds} seconds.")
        self.retry_after = seconds


def throttle() -> AddressThrottle:
    return current_app.extensions["login_throttle"]


class LoginForm(FlaskForm):
    email = EmailField("Email", validators=[DataRequired(), Length(max=320)])
    password = PasswordField("Password", validators=[DataRequired(), Length(max=200)])


bp = Blueprint("auth", __name__)


def fresh_session() -> None:
    """Empty the session, and forget this request's cached CSRF token so a new one is issued."""
    session.clear()
    g.pop("csrf_token", None)


def end_session() -> None:
    """Sign out of this session: the user and everything the session held (sign-out, the
    absolute lifetime, signing oneself out everywhere, a lock met while signed in)."""
    logout_user()
    fresh_session()


def start_session(user: Staff) -> None:
    """A new signed-in session for `user` under its current session version: nothing from the
    session before survives it (sign-in, and one's own password change)."""
    fresh_session()
    session.permanent = True  # idle expiry after PERMANENT_SESSION_LIFETIME
    login_user(user)
    session["signed_in_at"] = int(time.time())


@bp.route("/login", methods=["GET", "POST"])
@require(PUBLIC)
def login():
    if current_user.is_authenticated:
        return redirect(url_for("overview.index"))
    form = LoginForm()
    status, retry_after = 200, 0
    if form.validate_on_submit():
        ip = client_ip() or "?"  # the throttle's key
        try:
            if wait := throttle().wait(ip):
                log.warning("auth.login.throttled", extra={"ip": ip})
                raise AddressThrottled(wait)
            user = signin.sign_in(email=form.email.data, password=form.password.data, ip=ip)
        except (signin.AccountLocked, AddressThrottled) as err:
            if getattr(err, "checked", False):  # refusals during a lock check no password
                throttle().failed(ip)
                log.warning("auth.login.locked", extra={"ip": ip})
            form.form_errors.append(str(err))
            status, retry_after = 429, err.retry_after
        else:
            if user is None:
                throttle().failed(ip)
                form.form_errors.append("Email or password is incorrect.")
                status = 401
            else:
                target = safe_next(request.args.get("next"), url_for("overview.index"))
                start_session(user)
                return redirect(target)
    elif request.method == "POST":
        status = 422
    resp = htmx.render("auth/login.html", None, form=form)
    if retry_after:
        resp.headers["Retry-After"] = str(retry_after)
    return resp, status


@bp.post("/logout")
@require(PUBLIC)
def logout():
    if current_user.is_authenticated:
        staff_service.logged_out(staff=current_user._get_current_object(), ip=client_ip())
    end_session()
    flash("You have been signed out.", "info")
    return redirect(url_for("auth.login"))


def init_app(app: Flask) -> None:
    app.extensions["login_throttle"] = AddressThrottle(app)
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

    def _per_request_state():
        """Forget the user and CSRF token cached on `g`: g belongs to the app context, which
        tests (and CLI code) keep across requests, and a cached user must never leak into the
        next request. In production each request has its own context, so this costs nothing."""
        g.pop("_login_user", None)
        g.pop("csrf_token", None)

    app.before_request_funcs.setdefault(None, []).insert(0, _per_request_state)

    @app.before_request
    def _absolute_lifetime():
        """Sessions end after SESSION_ABSOLUTE_HOURS however active they are."""
        started = session.get("signed_in_at")
        limit = app.config.get("SESSION_ABSOLUTE_HOURS", 12) * 3600
        if started is not None and time.time() - started > limit:
            end_session()
            flash("Your session has ended; please sign in again.", "info")

    @app.context_processor
    def _perms():
        return {"can": lambda perm: can(current_user, perm)}

    app.register_blueprint(bp)
