"""Staff page: invite with a role, change role, deactivate/reactivate, reset password; all audited."""
from __future__ import annotations

import re

import pytest

from models import AuditLog, Staff, db
from services.core.errors import Conflict
from services.staff import accounts as staff_service
from tests.helpers import StaffClient, csrf_from


def audit_rows(action: str) -> list[AuditLog]:
    return db.session.scalars(db.select(AuditLog).where(AuditLog.action == action)
                              .order_by(AuditLog.id)).all()


def sign_in(app, email: str, password: str):
    client = app.test_client()
    token = csrf_from(client.get("/login").get_data(as_text=True))
    return client.post("/login", data={"email": email, "password": password, "csrf_token": token})


def test_list_shows_everyone_with_role_and_status_and_filters_in_the_url(login, make):
    admin = login("admin")
    make.staff(role="finance", email="fiona@creditdesk.test")
    make.staff(role="support", email="sam@creditdesk.test", active=False)
    page = admin.get("/staff/").get_data(as_text=True)
    assert "fiona@creditdesk.test" in page and "sam@creditdesk.test" in page
    assert admin.staff.email in page and ">you<" in page
    only = admin.htmx("/staff/?status=inactive").get_data(as_text=True)
    assert "sam@creditdesk.test" in only and "fiona@" not in only and "<html" not in only
    assert "fiona@" in admin.get("/staff/?role=finance&q=fio").get_data(as_text=True)
    assert "No staff member matches" in admin.get("/staff/?q=nobody-like-this").get_data(as_text=True)


def test_list_is_keyset_paged(login, make):
    admin = login("admin")
    for _ in range(51):
        make.staff(role="support")
    first = admin.get("/staff/?role=support").get_data(as_text=True)
    assert len(re.findall(r'id="staff-\d+"', first)) == 50
    more = re.search(r'href="(/staff/\?[^"]*after=\d+)"', first).group(1).replace("&amp;", "&")
    rest = admin.htmx(more).get_data(as_text=True)
    assert len(re.findall(r'id="staff-\d+"', rest)) == 1 and "<html" not in rest and "Load more" not in rest


def test_invite_with_a_generated_one_time_password(app, login):
    admin = login("admin")
    resp = admin.htmx("/staff/", "POST", data={"email": "New.Person@Creditdesk.test", "name": "New",
                                               "role": "finance", "password": ""})
    assert resp.status_code == 201 and resp.headers["HX-Trigger"] == '{"staff-changed": true}'
    body = resp.get_data(as_text=True)
    password = re.search(r'id="one-time-password"[^>]*value="([^"]+)"', body).group(1)
    assert resp.headers["Cache-Control"] == "no-store"
    member = db.session.scalar(db.select(Staff).where(Staff.email == "new.person@creditdesk.test"))
    assert member.role == "finance" and member.active
    assert sign_in(app, "new.person@creditdesk.test", password).status_code == 302
    row = audit_rows("staff.create")[-1]
    assert row.staff_id == admin.staff.id and row.after == {"email": member.email, "role": "finance"}
    assert password not in str([row.before, row.after, row.reason])
    # the password is not on the page afterwards
    assert password not in admin.get("/staff/").get_data(as_text=True)


def test_invite_with_a_chosen_password_and_validation(login, make):
    admin = login("admin")
    resp = admin.post("/staff/", data={"email": "pat@creditdesk.test", "role": "support",
                                       "password": "a-long-enough-password"})
    assert resp.status_code == 201 and "one-time-password" not in resp.get_data(as_text=True)
    dup = admin.htmx("/staff/", "POST", data={"email": "pat@creditdesk.test", "role": "support"})
    assert dup.status_code == 409 and "exists already" in dup.get_data(as_text=True)
    bad = admin.htmx("/staff/", "POST", data={"email": "not-an-email", "role": "support",
                                              "password": "short"})
    assert bad.status_code == 422
    text = bad.get_data(as_text=True)
    assert "Enter an email address" in text and "at least 12" in text
    assert admin.htmx("/staff/", "POST", data={"email": "x@y.co", "role": "owner"}).status_code == 422


def test_change_role_takes_effect_and_ends_their_sessions(app, login, make):
    admin = login("admin")
    member = make.staff(role="admin")
    theirs = StaffClient(app.test_client(), member).sign_in()
    assert theirs.get("/staff/").status_code == 200
    resp = admin.htmx(f"/staff/{member.id}/role", "POST", data={"role": "support"})
    assert resp.status_code == 200
    body = resp.get_data(as_text=True)
    assert f'id="staff-{member.id}"' in body and "<html" not in body
    assert "is now support" in resp.headers["HX-Trigger"]
    assert db.session.get(Staff, member.id).role == "support"
    assert theirs.get("/staff/").status_code == 302  # signed out: the old session is gone
    row = audit_rows("staff.role")[-1]
    assert (row.before, row.after, row.target_id) == ({"role": "admin"}, {"role": "support"}, str(member.id))


def test_deactivate_ends_sessions_at_once_and_reactivate_restores_sign_in(app, login, make):
    admin = login("admin")
    member = make.staff(role="support")
    theirs = StaffClient(app.test_client(), member).sign_in()
    assert theirs.get("/customers/").status_code == 200
    resp = admin.post(f"/staff/{member.id}/deactivate")  # without JavaScript: redirect + flash
    assert resp.status_code == 303 and resp.headers["Location"] == "/staff/"
    assert "deactivated and signed out" in admin.get("/staff/").get_data(as_text=True)
    assert theirs.get("/customers/").status_code == 302
    assert sign_in(app, member.email, member.plain_password).status_code == 401
    assert admin.htmx(f"/staff/{member.id}/reactivate", "POST").status_code == 200
    assert sign_in(app, member.email, member.plain_password).status_code == 302
    assert [r.action for r in audit_rows("staff.deactivate") + audit_rows("staff.reactivate")] == \
        ["staff.deactivate", "staff.reactivate"]


def test_nobody_deactivates_or_demotes_themselves(login):
    admin = login("admin")
    me = admin.staff.id
    resp = admin.htmx(f"/staff/{me}/deactivate", "POST")
    assert resp.status_code == 409 and "cannot deactivate" in resp.get_data(as_text=True)
    assert admin.htmx(f"/staff/{me}/role", "POST", data={"role": "support"}).status_code == 409
    assert db.session.get(Staff, me).active and db.session.get(Staff, me).role == "admin"
    assert admin.get("/staff/").status_code == 200


def test_the_last_active_admin_stays(app, make):
    only_admin = make.staff(role="admin")
    support = make.staff(role="support")
    with pytest.raises(Conflict):
        staff_service.set_active(staff_id=only_admin.id, active=False, by=support)
    with pytest.raises(Conflict):
        staff_service.change_role(staff_id=only_admin.id, role="finance", by=support)


def test_reset_password_shows_a_new_one_once_and_the_old_one_stops_working(app, login, make):
    admin = login("admin")
    member = make.staff(role="finance")
    resp = admin.htmx(f"/staff/{member.id}/reset-password", "POST")
    password = re.search(r'id="one-time-password"[^>]*value="([^"]+)"', resp.get_data(as_text=True)).group(1)
    assert sign_in(app, member.email, member.plain_password).status_code == 401
    assert sign_in(app, member.email, password).status_code == 302
    assert audit_rows("staff.password_reset")[-1].target_id == str(member.id)


def test_staff_actions_need_staff_manage(login, make):
    member = make.staff(role="support")
    for role in ("support", "finance"):
        c = login(role)
        assert c.get("/staff/").status_code == 403
        assert c.post(f"/staff/{member.id}/deactivate").status_code == 403
    assert db.session.get(Staff, member.id).active


def test_sign_out_everywhere_ends_their_sessions_and_is_audited(app, login, make):
    admin = login("admin")
    member = make.staff(role="finance")
    devices = [StaffClient(app.test_client(), member).sign_in() for _ in range(2)]
    assert all(d.get("/transactions/").status_code == 200 for d in devices)
    resp = admin.post(f"/staff/{member.id}/sign-out-everywhere")  # without JavaScript
    assert resp.status_code == 303 and resp.headers["Location"] == "/staff/"
    assert [d.get("/transactions/").status_code for d in devices] == [302, 302]
    assert admin.get("/staff/").status_code == 200  # the admin's own session is untouched
    row = audit_rows("staff.sign_out_everywhere")[-1]
    assert (row.staff_id, row.target_id) == (admin.staff.id, str(member.id))
    assert sign_in(app, member.email, member.plain_password).status_code == 302  # may sign in again


def test_sign_out_everywhere_on_oneself_ends_this_session_too(app, login):
    admin = login("admin")
    other_device = StaffClient(app.test_client(), admin.staff).sign_in()
    resp = admin.htmx(f"/staff/{admin.staff.id}/sign-out-everywhere", "POST")
    assert resp.status_code == 200 and resp.headers["HX-Redirect"] == "/login"
    assert admin.get("/staff/").status_code == 302
    assert other_device.get("/staff/").status_code == 302
    assert audit_rows("staff.sign_out_everywhere")[-1].target_id == str(admin.staff.id)


def test_a_locked_account_shows_on_the_page_and_an_admin_unlocks_it(app, login, make):
    admin = login("admin")
    member = make.staff(role="support")
    for _ in range(5):
        sign_in(app, member.email, "wrong password!")
    assert sign_in(app, member.email, member.plain_password).status_code == 429
    page = admin.get("/staff/").get_data(as_text=True)
    assert "locked until" in page and f"/staff/{member.id}/unlock" in page
    resp = admin.htmx(f"/staff/{member.id}/unlock", "POST")
    assert resp.status_code == 200 and "can sign in again" in resp.headers["HX-Trigger"]
    assert "locked until" not in resp.get_data(as_text=True)
    row = audit_rows("staff.unlock")[-1]
    assert (row.target_id, row.before["failed_logins"], row.after) == \
        (str(member.id), 5, {"failed_logins": 0, "locked_until": None})
    assert sign_in(app, member.email, member.plain_password).status_code == 302


def test_sign_out_everywhere_and_unlock_need_staff_manage_and_csrf(login, make):
    member = make.staff(role="support")
    for role in ("support", "finance"):
        c = login(role)
        for action in ("sign-out-everywhere", "unlock"):
            assert c.post(f"/staff/{member.id}/{action}").status_code == 403
    admin = login("admin")
    for action in ("sign-out-everywhere", "unlock"):
        assert admin.post(f"/staff/{member.id}/{action}", csrf=False).status_code == 400
    assert audit_rows("staff.sign_out_everywhere") == [] and audit_rows("staff.unlock") == []
