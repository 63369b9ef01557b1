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
from models import Staff
from services.staff import accounts as staff_service

log = logging.getLogger("creditdesk.auth")

PERMISSIONS = (
    "customers.view", "credits.adjust", "plans.manage", "pricing.manage", "settings.manage",
    "refunds.request", "refunds.approve", "transactions.view", "transactions.export",
    "analytics.view", "jobs.view", "jobs.run", "staff.manage", "apikeys.manage", "audit.view",
    "webhooks.view", "webhooks.replay", "tasks.view", "tasks.manage",
)
# Least privilege: support helps customers, finance watches money; only admins change the
# catalogue, settings, staff, keys, run jobs, move task money or replay webhooks.
ROLE_PERMISSIONS: dict[str, frozenset[str]] = {
    "admin": frozenset(PERMISSIONS),
    "support": frozenset({"customers.view", "credits.adjust", "refunds.request", "tasks.view"}),
    "finance": frozenset({"customers.view", "transactions.view", "transactions.export",
                          "analytics.view", "refunds.request", "refunds.approve", "jobs.view",
                          "audit.view", "tasks.view", "webhooks.view"}),
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


def client_ip() -> str:
    """The peer address (a proxy in front must be declared with ProxyFix, never trusted blindly)."""
    return request.remote_addr or "?"


# --- login throttling: per account and per IP, moving window, never a permanent lock-out -----

class LoginThrottle:
    """Failed sign-ins counted per email and per IP in a moving window (Redis when configured).

    Only failures count; a success clears the account's counter. When the window has moved on,
    the account or address may try again: there is no lock-out an admin has to lift.
    """

    def __init__(self, app: Flask):
        cfg = app.config
        uri = cfg.get("LOGIN_THROTTLE_STORAGE") or cfg.get("REDIS_URL") or "memory://"
        self.limiter = strategies.MovingWindowRateLimiter(storage.storage_from_string(uri))
        window = int(cfg.get("LOGIN_THROTTLE_WINDOW_SECONDS", 300))
        self.account = parse(f"{int(cfg.get('LOGIN_MAX_FAILURES_PER_ACCOUNT', 5))} per {window} seconds")
        self.ip = parse(f"{int(cfg.get('LOGIN_MAX_FAILURES_PER_IP', 20))} per {window} seconds")

    def wait(self, email: str, ip: str) -> int:
        """Seconds before this email from this address may try again (0: go ahead)."""
        now = time.time()
        wait = 0.0
        for item, key in ((self.account, email), (self.ip, ip)):
            if not self.limiter.test(item, "login", key):
                reset = self.limiter.get_window_stats(item, "login", key).reset_time
                wait = max(wait, reset - now, 1)
        return int(wait + 0.999)

    def failed(self, email: str, ip: str) -> None:
        self.limiter.hit(self.account, "login", email)
        self.limiter.hit(self.ip, "login", ip)

    def succeeded(self, email: str) -> None:
        self.limiter.clear(self.account, "login", email)


def throttle() -> LoginThrottle:
    return current_app.extensions["login_throttle"]


class LoginForm(FlaskForm):
    email = EmailField("Email", validators=[DataRequired(), Length(max=320)])
    password = PasswordField("Password", validators=[DataRequired(), Length(max=200)])


bp = Blueprint("auth", __name__)


def _safe_next(target: str) -> str:
    """Only same-site relative paths: never an open redirect (//host, /\\host, scheme:)."""
    if not target.startswith("/") or target.startswith(("//", "/\\")) or "\\" in target[:3]:
        return url_for("overview.index")
    return target


def _fresh_session() -> None:
    """Empty the session, and forget this request's cached CSRF token so a new one is issued."""
    session.clear()
    g.pop("csrf_token", None)


@bp.route("/login", methods=["GET", "POST"])
@require(PUBLIC)
def login():
    if current_user.is_authenticated:
        return redirect(url_for("overview.index"))
    form = LoginForm()
    status = 200
    if form.validate_on_submit():
        email, ip = form.email.data.strip().lower(), client_ip()
        wait = throttle().wait(email, ip)
        if wait:
            log.warning("auth.login.throttled", extra={"ip": ip})
            form.form_errors.append(f"Too many failed attempts. Try again in {wait} seconds.")
            status = 429
        else:
            user = staff_service.authenticate(email, form.password.data)
            if user is None:
                throttle().failed(email, ip)
                staff_service.login_failed(email=email, ip=ip)
                form.form_errors.append("Email or password is incorrect.")
                status = 401
            else:
                throttle().succeeded(email)
                _fresh_session()  # nothing from before sign-in survives it
                session.permanent = True  # idle expiry after PERMANENT_SESSION_LIFETIME
                login_user(user)
                session["signed_in_at"] = int(time.time())
                staff_service.login_succeeded(staff=user, ip=ip)
                return redirect(_safe_next(request.args.get("next", "")))
    elif request.method == "POST":
        status = 422
    resp = htmx.render("auth/login.html", None, form=form)
    if status == 429:
        resp.headers["Retry-After"] = str(wait)
    return resp, status


@bp.post("/logout")
@require(PUBLIC)
def logout():
    if current_user.is_authenticated:
        staff_service.logged_out(staff=current_user._get_current_object(), ip=client_ip())
    logout_user()
    _fresh_session()
    flash("You have been signed out.", "info")
    return redirect(url_for("auth.login"))


def init_app(app: Flask) -> None:
    app.extensions["login_throttle"] = LoginThrottle(app)
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
            logout_user()
            _fresh_session()
            flash("Your session has ended; please sign in again.", "info")

    @app.context_processor
    def _perms():
        return {"can": lambda perm: can(current_user, perm)}

    app.register_blueprint(bp)
