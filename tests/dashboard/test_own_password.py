"""Your password: every signed-in staff member changes their own password; other sessions end."""
from __future__ import annotations

import pytest

from models import AuditLog, Staff, db
from tests.helpers import StaffClient, csrf_from

NEW = "a long new passphrase 42"


def audit_actions() -> list[str]:
    return list(db.session.scalars(db.select(AuditLog.action).order_by(AuditLog.id)))


def change(client: StaffClient, current: str, new: str = NEW, confirm: str | None = None):
    return client.post("/account/password", data={
        "current_password": current, "new_password": new,
        "confirm": new if confirm is None else confirm})


@pytest.mark.parametrize("role", ["admin", "support", "finance"])
def test_any_role_changes_its_password_and_other_sessions_end(app, make, role):
    member = make.staff(role=role)
    here = StaffClient(app.test_client(), member).sign_in()
    elsewhere = StaffClient(app.test_client(), member).sign_in()
    page = here.get("/account/password")
    assert page.status_code == 200 and 'autocomplete="current-password"' in page.get_data(as_text=True)

    resp = change(here, member.plain_password)
    assert resp.status_code == 303 and resp.headers["Location"].endswith("/")
    assert "Your password is changed" in here.get("/").get_data(as_text=True)  # still signed in
    assert elsewhere.get("/").status_code == 302  # the other session is over
    old_sign_in = StaffClient(app.test_client(), member)
    assert old_sign_in.client.post("/login", data={
        "email": member.email, "password": member.plain_password,
        "csrf_token": csrf_from(old_sign_in.client.get("/login").get_data(as_text=True))}).status_code == 401
    member.plain_password = NEW
    StaffClient(app.test_client(), member).sign_in()  # the new password signs in
    assert "staff.password_change" in audit_actions()


def test_wrong_current_short_new_mismatch_and_unchanged_are_explained(app, make):
    member = make.staff(role="support")
    client = StaffClient(app.test_client(), member).sign_in()
    cases = [
        (dict(current="not my password at all"), "The current password is not right."),
        (dict(current=member.plain_password, new="short"), "at least 12 characters"),
        (dict(current=member.plain_password, confirm="something else entirely"),
         "The two new passwords differ."),
        (dict(current=member.plain_password, new=member.plain_password), "other than the current one"),
    ]
    for kw, message in cases:
        resp = change(client, **kw)
        assert resp.status_code == 422, kw
        body = resp.get_data(as_text=True)
        assert message in body, (kw, body[:2000])
        assert 'aria-invalid="true"' in body
        assert NEW not in body and member.plain_password not in body  # never echoed back
    assert client.get("/").status_code == 200  # still signed in, password unchanged
    assert audit_actions().count("staff.password_change_refused") == 1
    assert "staff.password_change" not in audit_actions()


def test_five_wrong_current_passwords_lock_the_account_and_end_the_session(app, make):
    member = make.staff(role="finance")
    client = StaffClient(app.test_client(), member).sign_in()
    statuses = [change(client, f"wrong guess number {i}").status_code for i in range(5)]
    assert statuses == [422, 422, 422, 422, 303]
    assert client.get("/").status_code == 302  # signed out
    db.session.expire_all()
    assert db.session.get(Staff, member.id).locked_until is not None
    assert "login.locked" in audit_actions()


def test_without_csrf_or_sign_in_nothing_changes(app, make):
    member = make.staff(role="admin")
    anonymous = app.test_client().get("/account/password")
    assert anonymous.status_code == 302 and "/login" in anonymous.headers["Location"]
    assert app.test_client().post("/account/password", data={  # CSRF refuses it first
        "current_password": member.plain_password, "new_password": NEW, "confirm": NEW}
    ).status_code == 400
    client = StaffClient(app.test_client(), member).sign_in()
    refused = client.post("/account/password", csrf=False, data={
        "current_password": member.plain_password, "new_password": NEW, "confirm": NEW})
    assert refused.status_code in (400, 403)
    assert "staff.password_change" not in audit_actions()
