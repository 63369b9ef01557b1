"""Test clients shared by every folder: StaffClient (signs in, sends the CSRF token like htmx
does) and ApiClient (a bearer key), and the check of the API's error envelope."""
from __future__ import annotations

import re

CSRF_META = re.compile(r'<meta name="csrf-token" content="([^"]+)"')


def csrf_from(html: str) -> str:
    m = CSRF_META.search(html) or re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', html)
    assert m, "no CSRF token on the page"
    return m.group(1)


class StaffClient:
    """Wraps Flask's test client: sign_in(), then get/post/htmx with the session's CSRF token."""

    def __init__(self, client, staff):
        self.client, self.staff, self.token = client, staff, None

    def sign_in(self):
        page = self.client.get("/login")
        token = csrf_from(page.get_data(as_text=True))
        resp = self.client.post("/login", data={"email": self.staff.email,
                                                "password": self.staff.plain_password,
                                                "csrf_token": token})
        assert resp.status_code == 302, resp.get_data(as_text=True)[:500]
        self.token = csrf_from(self.client.get("/login", follow_redirects=True).get_data(as_text=True))
        return self

    def get(self, url, **kw):
        return self.client.get(url, **kw)

    def htmx(self, url, method="GET", **kw):
        headers = {"HX-Request": "true", "X-CSRFToken": self.token, **kw.pop("headers", {})}
        return self.client.open(url, method=method, headers=headers, **kw)

    def post(self, url, data=None, *, csrf: bool = True, **kw):
        headers = dict(kw.pop("headers", {}))
        if csrf:
            headers["X-CSRFToken"] = self.token
        return self.client.post(url, data=data or {}, headers=headers, **kw)


class ApiClient:
    """Flask's test client with a bearer key; answers (status, envelope, response)."""

    def __init__(self, app, key: str | None):
        self.client, self.key = app.test_client(), key

    def headers(self, extra: dict | None = None) -> dict:
        h = {"Authorization": f"Bearer {self.key}"} if self.key else {}
        return {**h, **(extra or {})}

    def call(self, method: str, path: str, body=None, *, headers: dict | None = None, **kw):
        if body is not None:
            kw["json"] = body
        resp = self.client.open(path, method=method, headers=self.headers(headers), **kw)
        return resp.status_code, resp.get_json(silent=True), resp

    def get(self, path, **kw):
        return self.call("GET", path, **kw)

    def post(self, path, body=None, **kw):
        return self.call("POST", path, body, **kw)

    def put(self, path, body=None, **kw):
        return self.call("PUT", path, body, **kw)


def assert_error(status, body, code: str, http: int, retryable: bool = False) -> None:
    assert status == http, body
    assert body["success"] is False and body["code"] == code, body
    assert body["retryable"] is retryable and isinstance(body["error"], str) and body["error"]
