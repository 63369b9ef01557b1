"""API keys page: a key is shown once, works against the API with its scopes, and stops on revoke."""
from __future__ import annotations

import logging
import re

from models import ApiKey, AuditLog, db

KEY_IN_PAGE = re.compile(r'id="new-api-key"[^>]*value="(cdk_[^"]+)"')


def create(admin, **data):
    data.setdefault("name", "Production backend")
    data.setdefault("scopes", ["customers:read", "debits:write"])
    return admin.htmx("/api-keys/", "POST", data=data)


def test_create_shows_the_key_once_and_it_authenticates(app, login, caplog):
    admin = login("admin")
    caplog.set_level(logging.DEBUG)
    resp = create(admin)
    assert resp.status_code == 201 and resp.headers["Cache-Control"] == "no-store"
    assert resp.headers["HX-Trigger"] == '{"apikeys-changed": true}'
    plain = KEY_IN_PAGE.search(resp.get_data(as_text=True)).group(1)
    key = db.session.scalar(db.select(ApiKey))
    assert key.scope_list == ["customers:read", "debits:write"] and key.created_by_id == admin.staff.id
    assert key.key_hash != plain and plain not in key.key_hash
    api = app.test_client()
    assert api.get("/api/v1/plans", headers={"Authorization": f"Bearer {plain}"}).status_code == 200
    # shown once: the list afterwards has the prefix, never the key
    page = admin.get("/api-keys/").get_data(as_text=True)
    assert plain not in page and f"cdk_{key.prefix}_" in page and "Production backend" in page
    # never a secret in a log line or an audit row
    assert plain not in caplog.text
    row = db.session.scalar(db.select(AuditLog).where(AuditLog.action == "apikey.create"))
    assert row.after == {"name": "Production backend", "prefix": key.prefix,
                         "scopes": ["customers:read", "debits:write"]}
    assert plain not in str(row.after) and row.staff_id == admin.staff.id


def test_scopes_limit_what_the_key_may_do(app, login, make):
    admin = login("admin")
    make.customer(external_id="u1", credits=10)
    plain = KEY_IN_PAGE.search(create(admin, scopes=["customers:read"]).get_data(as_text=True)).group(1)
    api = app.test_client()
    auth = {"Authorization": f"Bearer {plain}"}
    assert api.get("/api/v1/customers/u1", headers=auth).status_code == 200
    debit = api.post("/api/v1/customers/u1/debits", json={"feature": "chat", "credits": 1},
                     headers={**auth, "Idempotency-Key": "k1"})
    assert debit.status_code == 403


def test_revoke_stops_the_key_at_once(app, login):
    admin = login("admin")
    plain = KEY_IN_PAGE.search(create(admin).get_data(as_text=True)).group(1)
    key = db.session.scalar(db.select(ApiKey))
    resp = admin.htmx(f"/api-keys/{key.id}/revoke", "POST")
    assert resp.status_code == 200
    body = resp.get_data(as_text=True)
    assert f'id="key-{key.id}"' in body and "revoked" in body and "<html" not in body
    assert "is revoked" in resp.headers["HX-Trigger"]
    api = app.test_client()
    assert api.get("/api/v1/plans", headers={"Authorization": f"Bearer {plain}"}).status_code == 401
    row = db.session.scalar(db.select(AuditLog).where(AuditLog.action == "apikey.revoke"))
    assert row.target_id == str(key.id) and row.after == {"revoked": True}
    # revoking again changes nothing and writes no second row
    assert admin.post(f"/api-keys/{key.id}/revoke").status_code == 303
    assert db.session.scalar(db.select(db.func.count(AuditLog.id))
                             .where(AuditLog.action == "apikey.revoke")) == 1


def test_filters_paging_and_empty_states(login, make):
    admin = login("admin")
    assert "No API keys yet" in admin.get("/api-keys/").get_data(as_text=True)
    for n in range(52):
        make.api_key(name=f"key {n}")
    first = admin.get("/api-keys/").get_data(as_text=True)
    assert len(re.findall(r'id="key-\d+"', first)) == 50 and "key 51" in first and "key 1<" not in first
    more = re.search(r'href="(/api-keys/\?[^"]*after=\d+)"', first).group(1).replace("&amp;", "&")
    rest = admin.htmx(more).get_data(as_text=True)
    assert len(re.findall(r'id="key-\d+"', rest)) == 2 and "key 0" in rest
    assert "No revoked keys" in admin.get("/api-keys/?status=revoked").get_data(as_text=True)


def test_validation(login):
    admin = login("admin")
    resp = admin.htmx("/api-keys/", "POST", data={"name": "", "scopes": []})
    assert resp.status_code == 422
    text = resp.get_data(as_text=True)
    assert "Choose at least one scope" in text and "This field is required" in text
    assert admin.htmx("/api-keys/", "POST", data={"name": "x", "scopes": ["root"]}).status_code == 422
    assert db.session.scalar(db.select(db.func.count(ApiKey.id))) == 0


def test_only_admins_manage_keys(login, make):
    key, _ = make.api_key()
    for role in ("support", "finance"):
        c = login(role)
        assert c.get("/api-keys/").status_code == 403
        assert c.post(f"/api-keys/{key.id}/revoke").status_code == 403
    assert db.session.get(ApiKey, key.id).revoked_at is None


def test_a_rate_limit_is_set_at_creation_changed_and_cleared(login):
    admin = login("admin")
    assert create(admin, rate_limit="100 per minute").status_code == 201
    key = db.session.scalar(db.select(ApiKey))
    assert key.rate_limit == "100 per minute"
    assert "100 per minute" in admin.get("/api-keys/").get_data(as_text=True)
    resp = admin.htmx(f"/api-keys/{key.id}/rate-limit", "POST", data={"rate_limit": "10/second"})
    assert resp.status_code == 200 and f'id="key-{key.id}"' in resp.get_data(as_text=True)
    db.session.expire_all()
    assert db.session.get(ApiKey, key.id).rate_limit == "10/second"
    bad = admin.htmx(f"/api-keys/{key.id}/rate-limit", "POST", data={"rate_limit": "lots"})
    assert bad.status_code == 422 and 'value="10/second"' in bad.get_data(as_text=True)
    assert admin.htmx(f"/api-keys/{key.id}/rate-limit", "POST", data={"rate_limit": ""}).status_code == 200
    db.session.expire_all()
    assert db.session.get(ApiKey, key.id).rate_limit is None
    audit = db.session.scalars(db.select(AuditLog).where(AuditLog.action == "apikey.rate_limit")
                               .order_by(AuditLog.id)).all()
    assert [(a.before, a.after) for a in audit] == [
        ({"rate_limit": "100 per minute"}, {"rate_limit": "10/second"}),
        ({"rate_limit": "10/second"}, {"rate_limit": None})]
    assert create(admin, name="bad", rate_limit="fast").status_code == 422
    assert login("support").post(f"/api-keys/{key.id}/rate-limit", data={"rate_limit": ""}).status_code == 403


def test_cli_creates_a_key_with_a_rate_limit(app):
    runner = app.test_cli_runner()
    out = runner.invoke(args=["create-api-key", "--name", "batch", "--rate-limit", "100 per minute"])
    assert out.exit_code == 0, out.output
    assert "rate limit 100 per minute" in out.output
    assert db.session.scalar(db.select(ApiKey)).rate_limit == "100 per minute"
    bad = runner.invoke(args=["create-api-key", "--name", "x", "--rate-limit", "soon"])
    assert bad.exit_code != 0 and "rate limit" in bad.output.lower()
