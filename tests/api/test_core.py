"""The API's envelope, errors, authentication, rate limiting, health and request tracing."""
from __future__ import annotations

import time
import uuid
from datetime import timedelta

import pytest
import sqlalchemy as sa
from sqlalchemy import select

from models import ApiKey, LedgerEntry, db, utcnow
from services.staff import accounts as staff_service
from tests.conftest import build_app
from tests.helpers import ApiClient, assert_error


def test_unknown_api_path_is_a_json_404(client):
    resp = client.get("/api/v1/nothing-here")
    assert_error(resp.status_code, resp.get_json(), "NOT_FOUND", 404)
    assert resp.mimetype == "application/json"


def test_wrong_method_is_a_json_405_with_allow(client):
    resp = client.delete("/api/health")
    assert_error(resp.status_code, resp.get_json(), "METHOD_NOT_ALLOWED", 405)
    assert "GET" in resp.headers["Allow"]


def test_dashboard_paths_keep_their_html_errors(client):
    resp = client.get("/no-such-page")
    assert resp.status_code == 404 and resp.mimetype == "text/html"


def test_oversized_body_is_a_json_413(api, make):
    make.customer(external_id="big", credits=10)
    blob = "x" * (3 * 1024 * 1024)
    status, body, _ = api.post("/api/v1/customers/big/debits", data=blob,
                               headers={"Content-Type": "application/json"})
    assert_error(status, body, "PAYLOAD_TOO_LARGE", 413)


def test_validation_error_names_each_field(api, make):
    make.customer(external_id="v1", credits=10)
    status, body, _ = api.post("/api/v1/customers/v1/debits",
                               {"feature": 7, "quantity": -1, "surprise": True})
    assert_error(status, body, "VALIDATION_ERROR", 422)
    assert set(body["details"]) == {"feature", "quantity", "surprise"}


def test_invalid_json_and_wrong_content_type_are_422(api, make):
    make.customer(external_id="v2", credits=10)
    for data, ctype in [('{"feature": "chat",', "application/json"),
                        ('{"feature": "chat", "credits": NaN}', "application/json"),
                        ('{"feature": "chat", "credits": 1e999}', "application/json"),
                        ('{"feature": "chat"}', "text/plain"),
                        ("feature=chat", "application/x-www-form-urlencoded")]:
        status, body, _ = api.post("/api/v1/customers/v2/debits", data=data,
                                   headers={"Content-Type": ctype})
        assert_error(status, body, "VALIDATION_ERROR", 422)


def test_unexpected_error_is_500_without_traceback(db_url):
    app = build_app(db_url)

    def boom():
        raise RuntimeError("secret internals /srv/app.py line 3")

    app.add_url_rule("/api/v1/boom", "boom", boom)
    with app.app_context():
        resp = app.test_client().get("/api/v1/boom")
    body = resp.get_json()
    assert_error(resp.status_code, body, "INTERNAL_ERROR", 500, retryable=True)
    assert "secret" not in resp.get_data(as_text=True) and "Traceback" not in resp.get_data(as_text=True)


def test_service_error_carries_its_status_code_and_retryable(api):
    status, body, _ = api.get("/api/v1/customers/nobody")
    assert_error(status, body, "CUSTOMER_NOT_FOUND", 404)


# --- authentication -------------------------------------------------------------------------------

def test_missing_malformed_unknown_and_revoked_keys_are_401(app, make):
    key, plain = make.api_key()
    make.customer(external_id="a1")
    for header in [None, "Basic abc", "Bearer ", "Bearer cdk_nope_nope",
                   "Bearer " + plain[:-2] + "xx", plain]:
        client = app.test_client()
        resp = client.get("/api/v1/customers/a1",
                          headers={"Authorization": header} if header else {})
        assert_error(resp.status_code, resp.get_json(), "AUTH_UNAUTHORIZED", 401)
    assert ApiClient(app, plain).get("/api/v1/customers/a1")[0] == 200
    staff_service.revoke_api_key(key_id=key.id)
    status, body, _ = ApiClient(app, plain).get("/api/v1/customers/a1")
    assert_error(status, body, "AUTH_UNAUTHORIZED", 401)


def test_missing_scope_is_403_and_writes_nothing(api_as, make):
    c = make.customer(external_id="s1", credits=50)
    reader = api_as("customers:read")
    status, body, _ = reader.post("/api/v1/customers/s1/debits", {"feature": "chat", "credits": 5})
    assert_error(status, body, "AUTH_FORBIDDEN", 403)
    assert body["details"]["missing"] == ["debits:write"]
    assert db.session.scalar(select(LedgerEntry).where(LedgerEntry.customer_id == c.id,
                                                       LedgerEntry.type == "debit")) is None


def test_last_used_at_is_recorded_at_most_once_a_minute(app, make):
    key, plain = make.api_key()
    make.customer(external_id="lu")
    client = ApiClient(app, plain)
    assert key.last_used_at is None
    client.get("/api/v1/customers/lu")
    db.session.expire_all()
    first = db.session.get(ApiKey, key.id).last_used_at
    assert first is not None
    recent = utcnow() - timedelta(seconds=30)
    db.session.get(ApiKey, key.id).last_used_at = recent
    db.session.commit()
    staff_service.forget_api_key(key.id)  # the process's key cache learns the row as written here
    client.get("/api/v1/customers/lu")
    db.session.expire_all()
    assert db.session.get(ApiKey, key.id).last_used_at == recent  # within the minute: untouched
    old = utcnow() - timedelta(minutes=5)
    db.session.get(ApiKey, key.id).last_used_at = old
    db.session.commit()
    staff_service.forget_api_key(key.id)
    client.get("/api/v1/customers/lu")
    db.session.expire_all()
    assert db.session.get(ApiKey, key.id).last_used_at > recent


def test_csrf_does_not_apply_to_api_posts(api, make):
    make.customer(external_id="nocsrf", credits=10)
    status, body, _ = api.post("/api/v1/customers/nocsrf/debits", {"feature": "chat", "credits": 1})
    assert status == 201, body


# --- health ---------------------------------------------------------------------------------------

def test_health_is_public_and_pings_the_database(client):
    resp = client.get("/api/health")
    assert resp.status_code == 200
    assert resp.get_json() == {"success": True, "data": {"status": "ok", "database": "ok"}}


def test_health_is_503_when_the_database_is_down(tmp_path):
    app = build_app(f"sqlite:///{tmp_path}/missing-dir/nested/db.sqlite3")
    with app.app_context():
        resp = app.test_client().get("/api/health")
    body = resp.get_json()
    assert_error(resp.status_code, body, "DATABASE_UNAVAILABLE", 503, retryable=True)
    assert body["details"]["database"] == "down" and int(resp.headers["Retry-After"]) > 0


def test_any_route_is_503_database_unavailable_when_the_database_is_down(tmp_path):
    app = build_app(f"sqlite:///{tmp_path}/missing-dir/nested/db.sqlite3")
    with app.app_context():
        resp = app.test_client().post("/api/v1/customers/c1/debits", json={"feature": "chat"},
                                      headers={"Authorization": "Bearer cdk_abcd1234_secret"})
    assert_error(resp.status_code, resp.get_json(), "DATABASE_UNAVAILABLE", 503, retryable=True)
    assert int(resp.headers["Retry-After"]) > 0


def test_a_row_id_beyond_bigint_is_404_not_500(api, make):
    # schemathesis found it: werkzeug's int takes any size; PostgreSQL's bigint does not.
    for method, path in (("DELETE", "/api/v1/webhook-endpoints/{}"),
                         ("POST", "/api/v1/webhook-endpoints/{}/rotate-secret"),
                         ("GET", "/api/v1/tasks/{}")):
        for n in (2**63, 34521247410878423236608):
            status, body, _ = api.call(method, path.format(n))
            assert_error(status, body, "NOT_FOUND", 404)
    status, body, _ = api.get(f"/api/v1/tasks/{2**63 - 1}")  # the largest id: looked up, not there
    assert_error(status, body, "TASK_NOT_FOUND", 404)


@pytest.mark.pg
@pytest.mark.parametrize("ping_idle, after_restart", [(0.2, 201), (None, 503)])
def test_connections_a_restart_closed_are_pinged_and_replaced_when_idle(pg_url, pg_owner_url,
                                                                       ping_idle, after_restart):
    """A database restart closes every pooled connection. One idle longer than
    DB_POOL_PING_IDLE_SECONDS is pinged before use and replaced: the call succeeds. Never pinged
    (DB_POOL_PRE_PING=0), the call fails, with a retryable 503."""
    app = build_app(pg_url, DB_POOL_PING_IDLE_SECONDS=ping_idle)
    with app.app_context():
        from tests.conftest import _truncate_pg
        from tests.factories import Factory

        _truncate_pg()
        make = Factory()
        make.customer(external_id="restart-1", credits=100)
        api = ApiClient(app, make.api_key()[1])
        assert api.post("/api/v1/customers/restart-1/debits", {"feature": "chat", "credits": 1})[0] == 201
        db.session.remove()
        owner = sa.create_engine(pg_owner_url, poolclass=sa.pool.NullPool)
        with owner.connect() as c:  # what a restart does to the app's connections
            killed = c.execute(sa.text(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()")).scalar()
        owner.dispose()
        from tests.conftest import _ENGINES
        for engine in _ENGINES.values():  # the harness's own connections were closed too
            engine.dispose()
        assert killed >= 1
        time.sleep(0.4)
        status, body, _ = api.post("/api/v1/customers/restart-1/debits", {"feature": "chat", "credits": 1})
        assert status == after_restart, body
        db.session.remove()
        db.engine.dispose()


# --- OPTIONS and HEAD -------------------------------------------------------------------------------

def test_options_answers_the_envelope_with_allow(client):
    resp = client.options("/api/v1/customers/c1")
    assert resp.status_code == 200 and resp.mimetype == "application/json"
    assert resp.get_json() == {"success": True, "data": {"methods": ["GET", "HEAD", "OPTIONS", "PUT"]}}
    assert resp.headers["Allow"] == "GET, HEAD, OPTIONS, PUT"
    missing = client.options("/api/v1/nothing-here")
    assert_error(missing.status_code, missing.get_json(), "NOT_FOUND", 404)


def test_head_answers_like_get_without_a_body(client):
    got, head = client.get("/api/health"), client.head("/api/health")
    assert head.status_code == got.status_code == 200 and head.data == b""
    assert head.mimetype == "application/json"
    assert head.headers["Content-Length"] == str(len(got.data))
    denied = client.head("/api/v1/customers/c1")
    assert denied.status_code == 401 and denied.mimetype == "application/json" and denied.data == b""


# --- rate limiting (in-process; tests/server/test_limits.py proves them across workers) -------------

def _limited_app(db_url, **config):
    from models import db as _db

    app = build_app(db_url, RATELIMIT_ENABLED=True, RATELIMIT_KEY_PREFIX=f"t{uuid.uuid4().hex}",
                    CRON_JOBS_USERNAME="cron", CRON_JOBS_PASSWORD="pw", **config)
    ctx = app.app_context()
    ctx.push()
    if db_url.startswith("sqlite"):
        _db.create_all()
    else:
        from tests.conftest import _truncate_pg
        _truncate_pg()
    return app, ctx


def test_keys_are_not_throttled_unless_they_carry_a_limit(db_url):
    from models import db as _db
    from tests.factories import Factory

    app, ctx = _limited_app(db_url, API_IP_RATE_LIMIT="2 per minute")
    try:
        make = Factory()
        _, free = make.api_key()
        limited, capped = make.api_key()
        staff_service.set_api_key_rate_limit(key_id=limited.id, rate_limit="3 per minute")
        make.customer(external_id="rl")
        first, second = ApiClient(app, free), ApiClient(app, capped)
        assert {first.get("/api/v1/customers/rl")[0] for _ in range(10)} == {200}
        assert [second.get("/api/v1/customers/rl")[0] for _ in range(3)] == [200, 200, 200]
        status, body, resp = second.get("/api/v1/customers/rl")
        assert_error(status, body, "RATE_LIMITED", 429, retryable=True)
        assert 1 <= int(resp.headers["Retry-After"]) <= 60
        assert first.get("/api/v1/customers/rl")[0] == 200  # the other key is untouched
        anon = app.test_client()
        assert [anon.get("/api/v1/packages").status_code for _ in range(3)] == [401, 401, 429]
        assert first.get("/api/v1/packages")[0] == 200  # a valid key never meets the IP budget
        assert anon.get("/api/health").status_code == 200  # probes are never limited
    finally:
        _db.session.remove()
        ctx.pop()


def test_customer_limit_counts_debits_and_batch_items_per_customer(db_url):
    from models import db as _db
    from tests.factories import Factory

    app, ctx = _limited_app(db_url, API_CUSTOMER_RATE_LIMIT="3 per minute")
    try:
        make = Factory()
        _, key = make.api_key()
        make.customer(external_id="busy", credits=100)
        make.customer(external_id="calm", credits=100)
        make.customer(external_id="idle", credits=100)
        api = ApiClient(app, key)
        url = "/api/v1/customers/busy/debits"
        assert [api.post(url, {"feature": "chat", "credits": 1})[0] for _ in range(2)] == [201, 201]
        items = [{"customer": c, "feature": "chat", "credits": 1, "idempotency_key": f"b{i}"}
                 for i, c in enumerate(["busy", "calm", "busy", "calm"])]
        status, body, _ = api.post("/api/v1/debits/batch", {"debits": items})
        assert status == 200, body
        results = body["data"]["results"]
        assert [r["success"] for r in results] == [True, True, False, True]
        assert results[2]["code"] == "RATE_LIMITED" and results[2]["retryable"] is True
        assert "busy" in results[2]["error"]
        status, body, resp = api.post(url, {"feature": "chat", "credits": 1})
        assert_error(status, body, "RATE_LIMITED", 429, retryable=True)
        assert "'busy'" in body["error"] and int(resp.headers["Retry-After"]) >= 1
        assert api.get("/api/v1/customers/busy")[2].get_json()["data"]["balance"] == 97
        assert api.post("/api/v1/customers/calm/debits", {"feature": "chat", "credits": 1})[0] == 201
        # task creation and chat spend the same budget (chat is limited before its view runs)
        task = {"customer": "busy", "type": "image", "mode": "async", "estimated_credits": 1}
        assert_error(*api.post("/api/v1/tasks", task)[:2], "RATE_LIMITED", 429, retryable=True)
        chat = {"messages": [{"role": "user", "content": "hi"}]}
        status, body, resp = api.post("/api/v1/customers/busy/chat", chat)
        assert_error(status, body, "RATE_LIMITED", 429, retryable=True)
        assert "'busy'" in body["error"] and int(resp.headers["Retry-After"]) >= 1
        assert api.post("/api/v1/tasks", {**task, "customer": "idle"})[0] == 201
    finally:
        _db.session.remove()
        ctx.pop()


# --- request tracing --------------------------------------------------------------------------------

def test_debit_entry_records_the_request_id_sent(api, make):
    make.customer(external_id="trace", credits=20)
    status, body, resp = api.post("/api/v1/customers/trace/debits", {"feature": "chat", "credits": 2},
                                  headers={"X-Request-Id": "req-7f3a-trace"})
    assert status == 201 and resp.headers["X-Request-Id"] == "req-7f3a-trace"
    entry = db.session.get(LedgerEntry, body["data"]["entry_id"])
    assert entry.request_id == "req-7f3a-trace" and entry.actor_type == "api_key"


def test_a_redis_failure_allows_money_calls_and_is_logged(db_url, caplog):
    from models import db as _db
    from tests.factories import Factory
    from tests.live import free_port

    dead = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    app, ctx = _limited_app(db_url, REDIS_URL=dead, API_CUSTOMER_RATE_LIMIT="1 per minute",
                            API_IP_RATE_LIMIT="1 per minute")
    try:
        make = Factory()
        capped, plain = make.api_key()
        staff_service.set_api_key_rate_limit(key_id=capped.id, rate_limit="1 per minute")
        make.customer(external_id="r1", credits=10)
        api = ApiClient(app, plain)
        codes = [api.post("/api/v1/customers/r1/debits", {"feature": "chat", "credits": 1})[0]
                 for _ in range(3)]
        assert codes == [201, 201, 201]
        assert "api.limits.storage_failed" in caplog.text
    finally:
        _db.session.remove()
        ctx.pop()
