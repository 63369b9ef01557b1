"""Staff sessions and the sign-in lock through a real gunicorn with several workers (issue 12).

Counters in worker memory and sessions that only the browser forgets look fine in Flask's test
client; here every request may land on another process, as in production.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import requests

from models import AuditLog, Staff, db
from tests.helpers import csrf_from

LOCK_MESSAGE = "this account is locked"


def sign_in(server, email: str, password: str, *,
            next_: str = "") -> tuple[requests.Session, requests.Response]:
    """A fresh browser: GET /login for the CSRF token, POST the form (redirects not followed)."""
    http = requests.Session()
    page = http.get(server.url + "/login", timeout=30)
    resp = http.post(server.url + "/login" + (f"?next={next_}" if next_ else ""),
                     data={"email": email, "password": password, "csrf_token": csrf_from(page.text)},
                     allow_redirects=False, timeout=30)
    return http, resp


def fresh_get(server, path: str, cookie: str) -> requests.Response:
    """One request on its own connection, so that successive ones spread over the workers."""
    return requests.get(server.url + path, cookies={"session": cookie}, allow_redirects=False,
                        headers={"Connection": "close"}, timeout=30)


def actions(name: str) -> list[AuditLog]:
    db.session.commit()  # end this test's read snapshot: the server wrote since
    return db.session.scalars(db.select(AuditLog).where(AuditLog.action == name)).all()


def test_an_old_session_cookie_is_dead_after_sign_out_on_every_worker(live, make):
    admin = make.staff(role="admin")
    server = live(workers=3)
    http, resp = sign_in(server, admin.email, admin.plain_password)
    assert resp.status_code == 302, resp.text[:300]
    cookie = http.cookies["session"]
    before = [fresh_get(server, "/transactions/", cookie).status_code for _ in range(15)]
    assert before == [200] * 15
    page = http.get(server.url + "/transactions/", timeout=30)
    out = http.post(server.url + "/logout", headers={"X-CSRFToken": csrf_from(page.text)},
                    allow_redirects=False, timeout=30)
    assert out.status_code == 302
    after = [fresh_get(server, "/transactions/", cookie) for _ in range(15)]
    assert [(r.status_code, "/login" in r.headers.get("Location", "")) for r in after] == \
        [(302, True)] * 15, server.log()[-2000:]


def test_sign_out_everywhere_ends_another_persons_sessions(live, make):
    admin, member = make.staff(role="admin"), make.staff(role="support")
    server = live(workers=3)
    theirs = [sign_in(server, member.email, member.plain_password)[0].cookies["session"]
              for _ in range(2)]  # two devices
    assert all(fresh_get(server, "/customers/", c).status_code == 200 for c in theirs)
    http, _ = sign_in(server, admin.email, admin.plain_password)
    token = csrf_from(http.get(server.url + "/staff/", timeout=30).text)
    done = http.post(f"{server.url}/staff/{member.id}/sign-out-everywhere",
                     headers={"X-CSRFToken": token, "HX-Request": "true"}, timeout=30)
    assert done.status_code == 200 and "signed out on every device" in done.headers["HX-Trigger"]
    assert [fresh_get(server, "/customers/", c).status_code for c in theirs * 4] == [302] * 8
    assert http.get(server.url + "/staff/", allow_redirects=False, timeout=30).status_code == 200
    assert [r.target_id for r in actions("staff.sign_out_everywhere")] == [str(member.id)]


def test_forty_parallel_wrong_passwords_lock_after_exactly_five(live, make):
    admin, target, colleague = (make.staff(role="admin"), make.staff(role="finance"),
                                make.staff(role="support"))
    server = live(workers=3)
    email, password = target.email, target.plain_password  # threads have no app context

    def wrong(n: int) -> tuple[int, str]:
        _, resp = sign_in(server, email, f"wrong password {n}!")
        return resp.status_code, resp.text

    with ThreadPoolExecutor(max_workers=12) as pool:
        answers = list(pool.map(wrong, range(40)))
    codes = sorted(code for code, _ in answers)
    # exactly four plain refusals; the fifth counted failure and everything after it: the lock
    assert codes == [401] * 4 + [429] * 36, (codes, server.log()[-2000:])
    assert all(LOCK_MESSAGE in text for code, text in answers if code == 429)
    db.session.commit()
    row = db.session.get(Staff, target.id)
    assert row.failed_logins == 5 and row.is_locked
    assert len([r for r in actions("login.failed") if r.actor == target.email]) == 5
    assert [r.target_id for r in actions("login.locked")] == [str(target.id)]

    # the right password is refused with the lock message, on whichever worker answers
    with ThreadPoolExecutor(max_workers=6) as pool:
        rights = list(pool.map(lambda _: sign_in(server, email, password)[1],
                               range(6)))
    assert [r.status_code for r in rights] == [429] * 6
    assert all(LOCK_MESSAGE in r.text and int(r.headers["Retry-After"]) > 800 for r in rights)

    # a colleague behind the same address signs in
    assert sign_in(server, colleague.email, colleague.plain_password)[1].status_code == 302

    # an admin unlocks from the staff page (audited), and the right password works again
    http, _ = sign_in(server, admin.email, admin.plain_password)
    page = http.get(server.url + "/staff/", timeout=30).text
    assert "Unlock sign-in" in page
    unlocked = http.post(f"{server.url}/staff/{target.id}/unlock",
                         headers={"X-CSRFToken": csrf_from(page), "HX-Request": "true"}, timeout=30)
    assert unlocked.status_code == 200, unlocked.text[:300]
    assert [r.target_id for r in actions("staff.unlock")] == [str(target.id)]
    assert sign_in(server, target.email, target.plain_password)[1].status_code == 302


def test_sign_in_redirect_stays_on_site_through_gunicorn(live, make):
    admin = make.staff(role="admin")
    server = live(workers=2)
    for hostile in ("/%09/evil.test", "/%0A/x", "/%0D/x"):
        _, resp = sign_in(server, admin.email, admin.plain_password, next_=hostile)
        assert (resp.status_code, resp.headers.get("Location")) == (302, "/"), hostile


def test_changing_your_password_ends_your_other_sessions_on_every_worker(live, make):
    member = make.staff(role="finance")
    server = live(workers=3)
    email, old, new = member.email, member.plain_password, "a long new passphrase 42"
    here, _ = sign_in(server, email, old)
    other = sign_in(server, email, old)[0].cookies["session"]  # another device
    assert [fresh_get(server, "/transactions/", other).status_code for _ in range(6)] == [200] * 6

    page = here.get(server.url + "/account/password", timeout=30)
    done = here.post(server.url + "/account/password", allow_redirects=False, timeout=30, data={
        "current_password": old, "new_password": new, "confirm": new,
        "csrf_token": csrf_from(page.text)})
    assert done.status_code == 303, done.text[:500]

    # this browser goes on with its re-signed cookie, wherever its requests land
    mine = here.cookies["session"]
    assert [fresh_get(server, "/transactions/", mine).status_code for _ in range(9)] == [200] * 9
    assert [fresh_get(server, "/transactions/", other).status_code for _ in range(9)] == [302] * 9
    assert sign_in(server, email, old)[1].status_code == 401
    assert sign_in(server, email, new)[1].status_code == 302
    assert [r.target_id for r in actions("staff.password_change")] == [str(member.id)]
