"""Staff sign-in and sessions (issue 12): the per-account lock, the coarse per-address guard, the
one redirect guard, server-side sign-out, HSTS and ProxyFix. Across gunicorn workers and
processes: tests/server/test_staff_sessions.py."""
from __future__ import annotations

import time
from datetime import timedelta

import pytest

from dashboard import config
from dashboard.respond import safe_next
from models import AuditLog, Staff, db, utcnow
from tests.conftest import build_app
from tests.helpers import StaffClient, csrf_from

LOCK_MESSAGE = "this account is locked"


def attempt(client, email: str, password: str, ip: str = "10.0.0.1", next_: str | None = None,
            base_url: str = "http://localhost", headers: dict | None = None):
    env = {"REMOTE_ADDR": ip}
    token = csrf_from(client.get("/login", environ_base=env, base_url=base_url,
                                 headers=headers or {}).get_data(as_text=True))
    url = "/login" if next_ is None else "/login?next=" + next_
    return client.post(url, data={"email": email, "password": password, "csrf_token": token},
                       environ_base=env, base_url=base_url, headers=headers or {})


def actions(name: str) -> list[AuditLog]:
    return db.session.scalars(db.select(AuditLog).where(AuditLog.action == name)
                              .order_by(AuditLog.id)).all()


@pytest.fixture
def other_app(app, db_url):
    """build_app(**config) -> an app with its own configuration on this test's database."""
    made = []

    def _build(**cfg):
        app = build_app(db_url, **cfg)
        ctx = app.app_context()
        ctx.push()
        if db_url.startswith("sqlite"):
            db.create_all()
        made.append(ctx)
        return app

    yield _build
    for ctx in reversed(made):
        db.session.remove()
        ctx.pop()


# --- the per-account lock -----------------------------------------------------------------------

def test_five_failures_lock_the_account_even_for_the_right_password(app, make):
    staff = make.staff(role="admin")
    client = app.test_client()
    for _ in range(4):
        assert attempt(client, staff.email, "wrong password!").status_code == 401
    fifth = attempt(client, staff.email, "wrong password!")
    assert fifth.status_code == 429 and LOCK_MESSAGE in fifth.get_data(as_text=True)
    assert 14 * 60 < int(fifth.headers["Retry-After"]) <= 15 * 60
    right = attempt(client, staff.email, staff.plain_password)
    assert right.status_code == 429 and LOCK_MESSAGE in right.get_data(as_text=True)
    # the account is what is locked, from any address
    assert attempt(app.test_client(), staff.email, staff.plain_password, ip="10.9.9.9").status_code == 429
    db.session.expire_all()
    row = db.session.get(Staff, staff.id)
    assert row.failed_logins == 5 and row.is_locked
    assert len(actions("login.failed")) == 5  # refusals during the lock check no password
    locked = actions("login.locked")
    assert [(r.target_id, r.actor, r.ip) for r in locked] == [(str(staff.id), staff.email, "10.0.0.1")]
    # a colleague behind the same address is not locked out
    other = make.staff(role="support")
    assert attempt(app.test_client(), other.email, other.plain_password).status_code == 302


def test_a_password_checked_while_another_process_locked_the_account_is_refused(app, make,
                                                                               monkeypatch):
    """The race of 40 parallel attempts, made deterministic: the lock falls (written by another
    connection, as another worker would) while this attempt is hashing the password."""
    from sqlalchemy import update

    from services.staff import signin
    from services.staff.signin import AccountLocked

    staff = make.staff(role="admin")
    real_check = signin.check_password

    def set_lock(locked: bool) -> None:
        with db.engine.begin() as conn:
            conn.execute(update(Staff).where(Staff.id == staff.id).values(
                failed_logins=5 if locked else 0,
                locked_until=utcnow() + timedelta(minutes=15) if locked else None))

    def locked_meanwhile(member, password):
        set_lock(True)
        return real_check(member, password)

    monkeypatch.setattr(signin, "check_password", locked_meanwhile)
    with pytest.raises(AccountLocked):  # the right password, checked too late
        signin.sign_in(email=staff.email, password=staff.plain_password, ip="10.0.0.1")
    set_lock(False)
    db.session.commit()
    with pytest.raises(AccountLocked):  # a wrong one in flight is not a 6th counted failure
        signin.sign_in(email=staff.email, password="wrong password!", ip="10.0.0.1")
    db.session.commit()
    assert db.session.get(Staff, staff.id).failed_logins == 5
    assert actions("login.success") == [] and actions("login.failed") == []


def test_an_unknown_email_gets_the_same_answers_and_no_row(app, make):
    make.staff(role="admin")
    client = app.test_client()
    codes = [attempt(client, "nobody@creditdesk.test", "wrong password!").status_code for _ in range(6)]
    assert codes == [401, 401, 401, 401, 429, 429]
    body = attempt(client, "nobody@creditdesk.test", "wrong password!").get_data(as_text=True)
    assert LOCK_MESSAGE in body and "Email or password is incorrect" not in body
    assert db.session.scalar(db.select(db.func.count(Staff.id))) == 1


def test_the_lock_lifts_by_itself_and_a_success_clears_the_count(other_app, make):
    # 3 s: the locked answers must come before the lock runs out, even on a busy machine
    app = other_app(LOGIN_MAX_FAILURES=2, LOGIN_LOCK_SECONDS=3)
    staff = make.staff(role="admin")
    client = app.test_client()
    assert [attempt(client, staff.email, "wrong password!").status_code for _ in range(2)] == [401, 429]
    assert attempt(client, staff.email, staff.plain_password).status_code == 429
    db.session.expire_all()
    until = db.session.get(Staff, staff.id).locked_until
    db.session.rollback()
    time.sleep(max(0.0, (until - utcnow()).total_seconds()) + 0.1)
    assert attempt(client, staff.email, staff.plain_password).status_code == 302
    db.session.expire_all()
    row = db.session.get(Staff, staff.id)
    assert (row.failed_logins, row.locked_until, row.first_failed_at) == (0, None, None)


def test_failures_older_than_the_window_do_not_add_up(other_app, make):
    app = other_app(LOGIN_MAX_FAILURES=3, LOGIN_FAILURE_WINDOW_SECONDS=1)
    staff = make.staff(role="support")
    client = app.test_client()
    assert [attempt(client, staff.email, "wrong password!").status_code for _ in range(2)] == [401, 401]
    time.sleep(1.1)
    assert [attempt(client, staff.email, "wrong password!").status_code for _ in range(2)] == [401, 401]
    assert attempt(client, staff.email, staff.plain_password).status_code == 302


def test_the_address_guard_is_coarse_and_configurable(other_app, make):
    app = other_app(LOGIN_MAX_FAILURES_PER_IP=3)
    staff = make.staff(role="finance")
    for n in range(3):
        resp = attempt(app.test_client(), f"nobody{n}@x.test", "wrong password!", ip="10.0.0.7")
        assert resp.status_code == 401
    blocked = attempt(app.test_client(), staff.email, staff.plain_password, ip="10.0.0.7")
    assert blocked.status_code == 429 and "from this address" in blocked.get_data(as_text=True)
    assert attempt(app.test_client(), staff.email, staff.plain_password, ip="10.0.0.8").status_code == 302
    cfg = config.from_env()  # production: an office behind one NAT is not locked out by 5 typos
    assert cfg["LOGIN_MAX_FAILURES_PER_IP"] >= 100 and cfg["LOGIN_MAX_FAILURES"] == 5
    assert cfg["LOGIN_FAILURE_WINDOW_SECONDS"] == cfg["LOGIN_LOCK_SECONDS"] == 900


# --- the redirect guard ---------------------------------------------------------------------------

HOSTILE_NEXT = ["//evil.example/x", "https://evil.example/", "/\\evil.example", "/%09/evil.test",
                "/%0A/x", "/%0D/x", "/%09%2Fevil.test", "/%2509/evil.test", "%2F%2Fevil.test",
                "/%5Cevil.test", "javascript:alert(1)", "/%0D%0ASet-Cookie:x=1", "/%E2%80%A8/evil",
                "/ /evil.test", "/%00/x", "http:/evil.test", ""]


@pytest.mark.parametrize("target", HOSTILE_NEXT)
def test_sign_in_never_redirects_off_site(app, make, target):
    staff = make.staff(role="admin")
    resp = attempt(app.test_client(), staff.email, staff.plain_password, next_=target)
    assert resp.status_code == 302 and resp.headers["Location"] == "/", target
    assert len(actions("login.success")) == 1


def test_sign_in_follows_a_same_site_next(app, make):
    staff = make.staff(role="admin")
    for target, location in (("/transactions/", "/transactions/"),
                             ("/customers/%3Fq%3Da%2520b", "/customers/?q=a%20b")):
        resp = attempt(app.test_client(), staff.email, staff.plain_password, next_=target)
        assert resp.headers["Location"] == location


def test_one_guard_serves_sign_in_and_form_next(app):
    from dashboard.respond import back_to

    for target in ("/\t/evil.test", "//evil.test", "/\\evil.test", "/x\n", "https://evil.test/"):
        assert safe_next(target) == "/"
        with app.test_request_context("/", method="POST", data={"next": target}):
            assert back_to("customers.index") == "/customers/", target
    with app.test_request_context("/", method="POST", data={"next": "/refunds/3?x=1"}):
        assert back_to("customers.index") == "/refunds/3?x=1"


# --- sessions end on the server -------------------------------------------------------------------

def test_an_old_session_cookie_is_refused_after_sign_out(app, make):
    staff = StaffClient(app.test_client(), make.staff(role="admin")).sign_in()
    stolen = staff.client.get_cookie("session").value
    thief = app.test_client()
    thief.set_cookie("session", stolen)
    assert thief.get("/transactions/").status_code == 200
    assert staff.post("/logout").status_code == 302
    resp = thief.get("/transactions/")
    assert resp.status_code == 302 and "/login" in resp.headers["Location"]


# --- HSTS and the proxy in front ------------------------------------------------------------------

def test_hsts_only_over_https_with_secure_cookies(other_app, app):
    secure = other_app(SESSION_COOKIE_SECURE=True)
    hsts = secure.test_client().get("/login", base_url="https://localhost").headers
    assert hsts["Strict-Transport-Security"].startswith("max-age=31536000")
    assert "Strict-Transport-Security" not in secure.test_client().get("/login").headers
    # a client cannot claim https without a trusted proxy
    forged = secure.test_client().get("/login", headers={"X-Forwarded-Proto": "https"})
    assert "Strict-Transport-Security" not in forged.headers
    # cookies over plain http (local development): no HSTS even over https
    assert "Strict-Transport-Security" not in app.test_client().get(
        "/login", base_url="https://localhost").headers


def test_proxy_fix_gives_the_client_address_and_scheme(other_app, make):
    behind = other_app(SESSION_COOKIE_SECURE=True, PROXY_FIX_X_FOR=1, PROXY_FIX_X_PROTO=1)
    staff = make.staff(role="support")
    via_proxy = {"X-Forwarded-For": "203.0.113.9", "X-Forwarded-Proto": "https",
                 "Referer": "https://localhost/login"}  # CSRF checks the referrer over https
    resp = attempt(behind.test_client(), staff.email, "wrong password!", ip="127.0.0.1",
                   headers=via_proxy)
    assert resp.status_code == 401 and "Strict-Transport-Security" in resp.headers
    assert actions("login.failed")[-1].ip == "203.0.113.9"
    # without PROXY_FIX_* the header is not trusted
    plain = other_app(SESSION_COOKIE_SECURE=True)
    attempt(plain.test_client(), staff.email, "wrong password!", ip="127.0.0.1", headers=via_proxy)
    assert actions("login.failed")[-1].ip == "127.0.0.1"
