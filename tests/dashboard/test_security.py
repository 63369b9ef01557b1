"""Dashboard security, generated from the URL map so that a new route is covered the day it lands.

- deny by default: every dashboard route carries @require (view.permission); API routes carry
  API-key scopes or are one of the few machine routes with their own authentication;
- the role x route matrix: anonymous, support, finance and admin against every route and method;
- CSRF: every mutating dashboard route refuses a request without the token (400) and takes it
  with the header token that htmx sends;
- stored XSS: hostile names, reasons and payloads render escaped on every page and fragment;
- security headers, session cookie flags and lifetime, guessed ids -> 404.
"""
from __future__ import annotations

import json
import re
import time
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from html.parser import HTMLParser
from pathlib import Path

import pytest
from werkzeug.routing import IntegerConverter

from dashboard.auth import PERMISSIONS, PUBLIC, ROLE_PERMISSIONS
from models import AdjustmentRequest, AuditLog, JobRun, Staff, WebhookEvent, db
from services.core import audit
from services.core import settings as settings_service
from services.core.db import atomic
from tests.helpers import StaffClient, csrf_from

ROOT = Path(__file__).resolve().parents[2]
ROLES = ("support", "finance", "admin")
XSS = ['<script>alert(1)</script>', '"><img src=x onerror=alert(1)>']
XSS_MARKERS = ("<script>alert(1)", "<img src=x onerror")
MUTATING = {"POST", "PUT", "PATCH", "DELETE"}

# The specification (issue 4), written out independently of dashboard/auth.py: who may do what.
SPEC: dict[str, set[str]] = {
    "customers.view": {"admin", "support", "finance"},
    "credits.adjust": {"admin", "support"},
    "plans.manage": {"admin"},
    "pricing.manage": {"admin"},
    "settings.manage": {"admin"},
    "refunds.request": {"admin", "support", "finance"},
    "refunds.approve": {"admin", "finance"},
    "transactions.view": {"admin", "finance"},
    "transactions.export": {"admin", "finance"},
    "analytics.view": {"admin", "finance"},
    "jobs.view": {"admin", "finance"},
    "jobs.run": {"admin"},
    "staff.manage": {"admin"},
    "apikeys.manage": {"admin"},
    "audit.view": {"admin", "finance"},
    "webhooks.view": {"admin", "finance"},
    "webhooks.replay": {"admin"},
    "tasks.view": {"admin", "support", "finance"},
    "tasks.manage": {"admin"},
    "sandbox.use": {"admin"},
    "autotopup.manage": {"admin"},
    "webhooks_out.manage": {"admin"},
    "account.password": {"admin", "support", "finance"},  # one's own password
}
# Routes that narrow their permission further inside the view (maker-checker: an adjustment
# above the support limit is decided by an admin, never by support).
ENDPOINT_ROLES: dict[str, set[str]] = {
    "customers.approve_request": {"admin"},
    "customers.reject_request": {"admin"},
}
# Machine routes under /api/ that authenticate without an API key, and how.
API_OWN_AUTH = {
    "api_health.health": "public health check",
    "api_openapi.document": "public API description",
    "api_cron.distribute_credits": "HTTP Basic auth (CRON_JOBS_USERNAME/PASSWORD)",
    "api_webhooks.stripe": "Stripe-Signature",
    "api_webhooks.razorpay": "X-Razorpay-Signature",
    "api_webhooks.customers": "X-Creditdesk-Signature",
}


def dashboard_rules(app):
    """(rule, method) for every dashboard route: not static files, not the JSON API."""
    out = []
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static" or rule.endpoint.endswith(".static") or \
                rule.rule.startswith("/api/"):
            continue
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            out.append((rule, method))
    return sorted(out, key=lambda rm: (rm[0].rule, rm[1]))


@pytest.fixture
def world(app, make):
    """Rows for every kind of URL parameter, with hostile text wherever a person can type."""
    # Stripe "on a local double" (nothing listens there): the sandbox pages exist for admins.
    app.config.update(STRIPE_SECRET_KEY="sk_test_world", STRIPE_API_BASE="http://127.0.0.1:9")
    c = make.customer(name=XSS[0], email="xss@example.com", credits=1000)
    make.customer(name=XSS[1], email="img@example.com")
    make.plan(name=XSS[0])
    make.package(name=XSS[1])
    make.feature_price(feature="xss", label=XSS[0])
    target = make.staff(role="support")
    target.name = XSS[1]
    key, _plain = make.api_key(name=XSS[0])
    settings_service.update(key="refund_window_days", value=21, reason=XSS[0])
    with atomic() as s:
        s.add(WebhookEvent(provider="stripe", event_id="evt_xss", type="charge.refunded",
                           payload=json.dumps({"id": "evt_xss", "name": XSS[0], "desc": XSS[1]}),
                           status="failed", error=XSS[1]))
        s.add(JobRun(job="distribute_credits", period="2020-01", status="failed", error=XSS[0]))
        s.add(AdjustmentRequest(customer_id=c.id, credits=5000, reason_code="goodwill", note=XSS[1],
                                requested_by_id=target.id))
        audit.record(action="credits.adjust", actor=XSS[1], target_type="customer",
                     target_id=c.id, before={"note": XSS[0]}, after={"note": XSS[1]}, reason=XSS[0])
    ids = {
        "customer_id": c.id, "staff_id": target.id, "key_id": key.id,
        "row_id": db.session.scalar(db.select(db.func.max(AuditLog.id))),
        "event_id": db.session.scalar(db.select(WebhookEvent.id)),
        "run_id": db.session.scalar(db.select(JobRun.id)),
        "request_id": db.session.scalar(db.select(AdjustmentRequest.id)),
        "name": "distribute_credits", "key": "refund_window_days", "export_type": "csv",
    }
    return ids


def url_for_rule(rule, ids: dict, *, missing: bool = False) -> tuple[str, bool]:
    """A concrete URL for a rule; (url, whether every parameter is a known sample)."""
    known = True
    values = {}
    for arg in rule.arguments:
        is_int = isinstance(rule._converters[arg], IntegerConverter)
        if missing and is_int:
            values[arg] = 987654321
        elif arg in ids:
            values[arg] = ids[arg]
        else:
            known = False
            values[arg] = 1 if is_int else "x"
    url = rule.rule
    for arg, value in values.items():
        url = re.sub(r"<(?:[^:<>]+:)?" + re.escape(arg) + r">", str(value), url)
    return url, known


def flask_admin(rule) -> bool:
    return rule.rule.startswith("/admin/db")


def anonymous(app):
    client = app.test_client()
    token = csrf_from(client.get("/login").get_data(as_text=True))
    return StaffClient(client, None), token


# --- deny by default ---------------------------------------------------------------------------

def test_every_dashboard_route_declares_a_permission(app):
    missing = [f"{r.rule} {m} ({r.endpoint})" for r, m in dashboard_rules(app)
               if not hasattr(app.view_functions[r.endpoint], "permission")]
    assert missing == [], "routes without @require: " + ", ".join(missing)
    unknown = {app.view_functions[r.endpoint].permission for r, _m in dashboard_rules(app)} \
        - set(PERMISSIONS) - {PUBLIC}
    assert unknown == set()
    public = sorted({r.endpoint for r, _m in dashboard_rules(app)
                     if app.view_functions[r.endpoint].permission == PUBLIC})
    assert public == ["auth.login", "auth.logout"]


def test_every_api_route_needs_a_key_or_has_its_own_authentication(app):
    unguarded = [r.rule for r in app.url_map.iter_rules() if r.rule.startswith("/api/")
                 and not hasattr(app.view_functions[r.endpoint], "api_scopes")
                 and r.endpoint not in API_OWN_AUTH]
    assert unguarded == []


def test_role_permissions_are_exactly_the_specification():
    assert set(PERMISSIONS) == set(SPEC)
    for role in ROLES:
        assert ROLE_PERMISSIONS[role] == {p for p, roles in SPEC.items() if role in roles}, role


# --- the role x route matrix -------------------------------------------------------------------

def expected(permission: str, who: str, endpoint: str = "") -> str:
    if permission == PUBLIC:
        return "public"
    if who == "anonymous":
        return "login"
    roles = SPEC[permission] & ENDPOINT_ROLES.get(endpoint, SPEC[permission])
    return "allowed" if who in roles else "forbidden"


def check(outcome: str, resp, *, exact_ok: bool) -> bool:
    status, location = resp.status_code, resp.headers.get("Location", "")
    if outcome == "login":
        return status == 302 and "/login" in location
    if outcome == "forbidden":
        return status == 403
    # allowed: the view ran (any answer of its own, never an auth refusal or a crash)
    if exact_ok:
        return status in (200, 201) or (status in (302, 303) and "/login" not in location)
    return status < 500 and status not in (401, 403, 405) and "/login" not in location


def test_role_route_matrix(app, make, world):
    anon, anon_token = anonymous(app)
    clients = {"anonymous": anon}
    for role in ROLES:
        clients[role] = StaffClient(app.test_client(), make.staff(role=role)).sign_in()
    rows, failures = [], []
    # GETs first, then changes; sign-out is public and checked in its own test.
    order = sorted(dashboard_rules(app), key=lambda rm: (rm[1] in MUTATING, rm[0].rule))
    for rule, method in order:
        if rule.endpoint == "auth.logout":
            continue
        permission = app.view_functions[rule.endpoint].permission
        url, known = url_for_rule(rule, world)
        cells = []
        for who in ("anonymous", *ROLES):
            client = clients[who]
            headers = {"X-CSRFToken": client.token or anon_token}
            resp = client.client.open(url, method=method, headers=headers)
            outcome = expected(permission, who, rule.endpoint)
            if outcome == "public":
                ok = resp.status_code in (200, 302, 401, 422)
            else:
                exact = method == "GET" and known and not flask_admin(rule)
                ok = check(outcome, resp, exact_ok=exact)
            cells.append(f"{who}={resp.status_code}{'' if ok else '!'}")
            if not ok:
                failures.append(f"{method} {url} as {who}: {resp.status_code} (expected {outcome})")
        rows.append(f"{method:5} {url:60} {permission:18} " + " ".join(cells))
    print("\n".join(rows))  # the matrix, visible with -s or on failure
    assert failures == [], "\n".join(failures)
    assert len(rows) > 40  # the map really was walked


def test_sign_out_is_a_post_and_ends_the_session(login):
    staff = login("support")
    assert staff.get("/logout").status_code == 405
    resp = staff.post("/logout")
    assert resp.status_code == 302 and resp.headers["Location"].endswith("/login")
    assert staff.get("/customers/").status_code == 302


def test_htmx_request_without_session_is_told_to_navigate_to_login(client):
    resp = client.get("/customers/", headers={"HX-Request": "true"})
    assert resp.status_code == 401 and resp.headers["HX-Redirect"] == "/login"


# --- guessed ids -------------------------------------------------------------------------------

def test_a_guessed_id_is_404_on_every_route_with_an_id(app, login, world):
    admin = login("admin")
    checked, failures = 0, []
    for rule, method in dashboard_rules(app):
        if flask_admin(rule) or not any(
                isinstance(rule._converters[a], IntegerConverter) for a in rule.arguments):
            continue
        url, _ = url_for_rule(rule, world, missing=True)
        resp = admin.client.open(url, method=method, headers={"X-CSRFToken": admin.token})
        checked += 1
        if resp.status_code != 404:
            failures.append(f"{method} {url}: {resp.status_code}")
        elif method == "GET":
            assert "Not found" in resp.get_data(as_text=True)
    assert failures == []
    assert checked >= 8


# --- CSRF --------------------------------------------------------------------------------------

def test_every_mutating_route_refuses_a_request_without_the_token(app, login, world):
    admin = login("admin")
    failures, checked = [], 0
    for rule, method in dashboard_rules(app):
        if method not in MUTATING:
            continue
        url, _ = url_for_rule(rule, world)
        checked += 1
        without = admin.client.open(url, method=method)
        if without.status_code != 400 or "security token" not in without.get_data(as_text=True):
            failures.append(f"{method} {url} without token: {without.status_code}")
        wrong = admin.client.open(url, method=method, headers={"X-CSRFToken": "forged"})
        if wrong.status_code != 400:
            failures.append(f"{method} {url} with a forged token: {wrong.status_code}")
    assert failures == [], "\n".join(failures)
    assert checked >= 15


def test_every_mutating_route_accepts_the_header_token(app, login, world):
    failures = []
    for rule, method in dashboard_rules(app):
        if method not in MUTATING or rule.endpoint == "auth.logout":
            continue
        admin = login("admin")  # a fresh admin each time: some routes change the signed-in state
        url, _ = url_for_rule(rule, world)
        resp = admin.client.open(url, method=method, headers={"X-CSRFToken": admin.token,
                                                              "HX-Request": "true"})
        if resp.status_code == 400 and "security token" in resp.get_data(as_text=True):
            failures.append(f"{method} {url}: refused with the header token")
    assert failures == []


def test_login_form_needs_its_token(client, make):
    staff = make.staff(role="admin")
    resp = client.post("/login", data={"email": staff.email, "password": staff.plain_password})
    assert resp.status_code == 400


# --- stored XSS --------------------------------------------------------------------------------

class ActiveContent(HTMLParser):
    """Collects what a CSP without 'unsafe-inline' would block: inline scripts, on* handlers."""

    def __init__(self):
        super().__init__()
        self.found: list[str] = []

    def handle_starttag(self, tag, attrs):
        names = {name for name, _v in attrs}
        if tag == "script" and "src" not in names:
            self.found.append("inline <script>")
        self.found += [f"<{tag} {n}=...>" for n in names if n.startswith("on")]
        self.found += [f"<{tag}> javascript: URL" for n, v in attrs if n in ("href", "src", "action")
                       and (v or "").strip().lower().startswith("javascript:")]


def active_content(body: str) -> list[str]:
    parser = ActiveContent()
    parser.feed(body)
    return parser.found


def test_hostile_text_renders_escaped_on_every_page_and_fragment(app, login, world):
    admin = login("admin")
    # A failed sign-in with a hostile "email" lands in the audit log as the actor.
    anon, token = anonymous(app)
    anon.client.post("/login", data={"email": XSS[1], "password": "x" * 12, "csrf_token": token})
    pages = 0
    failures = []
    extra = ["/customers/?q=%3Cscript%3E", "/audit/?actor=%3Cscript%3E", f"/audit/?reason={XSS[0]}",
             "/webhooks/?type=" + XSS[1], "/staff/?q=" + XSS[0]]
    urls = [url_for_rule(r, world)[0] for r, m in dashboard_rules(app) if m == "GET"] + extra
    for url in urls:
        for headers in ({}, {"HX-Request": "true"}):
            resp = admin.client.get(url, headers=headers)
            if resp.status_code >= 500:
                failures.append(f"{url} {headers}: {resp.status_code}")
                continue
            if not resp.mimetype.startswith("text/html"):
                continue
            body = resp.get_data(as_text=True)
            pages += 1
            for marker in XSS_MARKERS:
                if marker in body:
                    failures.append(f"{url} {headers}: unescaped {marker!r}")
            if url.startswith("/admin/db"):
                continue  # Flask-Admin's own templates (escaped above; its scripts are its own)
            failures += [f"{url}: {what}" for what in active_content(body)]
    assert failures == [], "\n".join(failures)
    assert pages > 40
    # The hostile text is really on the pages we looked at (escaped), not absent.
    detail = admin.get(f"/webhooks/{world['event_id']}").get_data(as_text=True)
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in detail


def test_no_unsafe_rendering_in_templates_or_views():
    offenders = []
    for path in (ROOT / "templates").rglob("*.html"):
        text = path.read_text()
        if re.search(r"\|\s*safe\b", text) or "autoescape false" in text:
            offenders.append(str(path.relative_to(ROOT)))
    for path in list((ROOT / "dashboard").rglob("*.py")):
        text = path.read_text()
        if "render_template_string" in text:
            offenders.append(str(path.relative_to(ROOT)))
        if "Markup(" in text and path.name != "filters.py":
            offenders.append(str(path.relative_to(ROOT)))
    assert offenders == []


# --- headers and cookies -----------------------------------------------------------------------

def test_security_headers_on_pages_errors_and_fragments(login, client):
    staff = login("support")
    for resp in (client.get("/login"), staff.get("/customers/"), staff.get("/staff/"),
                 staff.get("/no-such-page"), staff.htmx("/customers/?q=a")):
        h = resp.headers
        csp = h["Content-Security-Policy"]
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "unsafe-eval" not in csp
        assert "frame-ancestors 'none'" in csp and "object-src 'none'" in csp
        assert h["X-Frame-Options"] == "DENY"
        assert h["X-Content-Type-Options"] == "nosniff"
        assert h["Referrer-Policy"] == "same-origin"
        assert h["Cache-Control"] == "no-store"


def test_session_cookie_is_secure_httponly_lax_and_lives_hours(db_url, make):
    from tests.conftest import build_app

    app = build_app(db_url, SESSION_COOKIE_SECURE=True)
    with app.app_context():
        if db_url.startswith("sqlite"):
            db.create_all()
        staff = make.staff(role="admin")
        client = app.test_client()
        page = client.get("/login", base_url="https://localhost")
        token = csrf_from(page.get_data(as_text=True))
        resp = client.post("/login", base_url="https://localhost",
                           headers={"Referer": "https://localhost/login"},  # strict over https
                           data={"email": staff.email, "password": staff.plain_password,
                                 "csrf_token": token})
        assert resp.status_code == 302
        cookie = next(c for c in resp.headers.getlist("Set-Cookie") if c.startswith("session="))
        flags = [p.strip().lower() for p in cookie.split(";")]
        assert "secure" in flags and "httponly" in flags and "samesite=lax" in flags
        expires = parsedate_to_datetime(next(p for p in cookie.split(";")
                                             if p.strip().lower().startswith("expires="))
                                        .split("=", 1)[1])
        hours = (expires - datetime.now(UTC)).total_seconds() / 3600
        assert 1 <= hours <= 12
        db.session.remove()


def test_sessions_end_after_the_absolute_lifetime(db_url, make):
    from tests.conftest import build_app

    app = build_app(db_url, SESSION_ABSOLUTE_HOURS=0)
    with app.app_context():
        if db_url.startswith("sqlite"):
            db.create_all()
        staff = StaffClient(app.test_client(), make.staff(role="admin"))
        page = staff.client.get("/login")
        staff.client.post("/login", data={"email": staff.staff.email,
                                          "password": staff.staff.plain_password,
                                          "csrf_token": csrf_from(page.get_data(as_text=True))})
        time.sleep(1.05)  # the lifetime is counted in whole seconds
        resp = staff.client.get("/customers/")
        assert resp.status_code == 302 and "/login" in resp.headers["Location"]
        db.session.remove()


# --- login ------------------------------------------------------------------------------------

def _attempt(client, email: str, password: str, ip: str = "10.0.0.1"):
    env = {"REMOTE_ADDR": ip}
    token = csrf_from(client.get("/login", environ_base=env).get_data(as_text=True))
    return client.post("/login", data={"email": email, "password": password, "csrf_token": token},
                       environ_base=env)


# Lock-out per account, the per-address guard, the redirect guard, HSTS and ProxyFix:
# tests/dashboard/test_signin.py; across gunicorn workers: tests/server/test_staff_sessions.py.


def test_login_success_failure_and_logout_are_audited_without_secrets(app, make):
    staff = make.staff(role="support")
    client = app.test_client()
    _attempt(client, staff.email, "a-wrong-password-123")
    _attempt(client, staff.email, staff.plain_password)
    token = csrf_from(client.get("/customers/").get_data(as_text=True))
    client.post("/logout", headers={"X-CSRFToken": token})
    rows = db.session.scalars(db.select(AuditLog).order_by(AuditLog.id)).all()
    assert [r.action for r in rows][-3:] == ["login.failed", "login.success", "logout"]
    assert all(r.ip == "10.0.0.1" for r in rows[-3:-1])
    dump = json.dumps([[r.actor, r.before, r.after, r.reason] for r in rows])
    assert "a-wrong-password-123" not in dump and staff.plain_password not in dump


def test_inactive_staff_cannot_sign_in(app, make):
    staff = make.staff(role="admin", active=False)
    assert _attempt(app.test_client(), staff.email, staff.plain_password).status_code == 401


def test_passwords_are_argon2id(app, make):
    staff = make.staff(role="admin")
    assert db.session.get(Staff, staff.id).password_hash.startswith("$argon2id$")


def test_production_hashing_strength_is_owasp():
    from dashboard import config

    cfg = config.from_env()
    # OWASP: argon2id with m >= 19 MiB and t >= 2 (we use 64 MiB, t = 3)
    assert cfg["ARGON2_MEMORY_COST"] >= 19 * 1024 and cfg["ARGON2_TIME_COST"] >= 2
    assert cfg["SESSION_COOKIE_HTTPONLY"] and cfg["SESSION_COOKIE_SAMESITE"] == "Lax"
    assert cfg["PERMANENT_SESSION_LIFETIME"].total_seconds() <= 12 * 3600


# --- Flask-Admin -------------------------------------------------------------------------------

def test_flask_admin_is_read_only_and_hides_hashes(app, login, make):
    from models import ApiKey, Customer, LedgerEntry

    admin = login("admin")
    c = make.customer(name="Reader", credits=25)
    make.api_key(name="hidden hash")
    entry = db.session.scalar(db.select(LedgerEntry))
    counts = {m: db.session.scalar(db.select(db.func.count()).select_from(m))
              for m in (Customer, LedgerEntry, ApiKey, Staff)}
    base = "/admin/db/db_ledger_entries"
    attempts = [("POST", f"{base}/delete/", {"id": entry.id}),
                ("POST", f"{base}/edit/?id={entry.id}", {"amount": 999999}),
                ("POST", f"{base}/new/", {"amount": 5}),
                ("POST", f"{base}/ajax/update/", {"list_form_pk": entry.id, "amount": 1}),
                ("POST", f"{base}/action/", {"action": "delete", "rowid": entry.id}),
                ("POST", "/admin/db/db_customers/delete/", {"id": c.id}),
                ("POST", f"/admin/db/db_customers/edit/?id={c.id}", {"name": "Changed"})]
    for method, url, data in attempts:
        resp = admin.client.open(url, method=method, data=data, headers={"X-CSRFToken": admin.token})
        assert resp.status_code in (302, 400, 403, 404), (url, resp.status_code)
    db.session.expire_all()
    assert {m: db.session.scalar(db.select(db.func.count()).select_from(m)) for m in counts} == counts
    assert db.session.get(LedgerEntry, entry.id).amount == entry.amount
    assert db.session.get(Customer, c.id).name == "Reader"
    for url in ("/admin/db/db_staff/", f"/admin/db/db_staff/details/?id={admin.staff.id}",
                "/admin/db/db_api_keys/", "/admin/db/db_ledger_entries/", "/admin/db/"):
        resp = admin.get(url)
        body = resp.get_data(as_text=True)
        assert resp.status_code == 200, url
        assert "$argon2" not in body and "key_hash" not in body.lower() and "password_hash" not in body
    page = admin.get("/admin/db/db_ledger_entries/").get_data(as_text=True)
    assert "/admin/db/db_ledger_entries/new/" not in page and "/edit/" not in page
