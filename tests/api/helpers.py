"""Helpers for the API tests (imported by tests/test_api_*.py; holds no tests itself)."""
from __future__ import annotations

import pytest
from sqlalchemy import func, select

from models import CreditGrant, Customer, IdempotencyRecord, LedgerEntry, Task, db


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


@pytest.fixture
def api(app, make):
    """A client holding a key with every scope."""
    _, plain = make.api_key()
    return ApiClient(app, plain)


@pytest.fixture
def api_as(app, make):
    """api_as("debits:write", ...) -> a client whose key has exactly those scopes."""
    def _client(*scopes: str) -> ApiClient:
        _, plain = make.api_key(scopes=list(scopes))
        return ApiClient(app, plain)
    return _client


def counts() -> dict[str, int]:
    """Row counts of everything an API write could add."""
    db.session.rollback()
    return {m.__name__: db.session.scalar(select(func.count()).select_from(m))
            for m in (LedgerEntry, CreditGrant, Customer, Task, IdempotencyRecord)}


def assert_error(status, body, code: str, http: int, retryable: bool = False) -> None:
    assert status == http, body
    assert body["success"] is False and body["code"] == code, body
    assert body["retryable"] is retryable and isinstance(body["error"], str) and body["error"]
