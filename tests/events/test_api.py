"""POST/GET/DELETE /api/v1/webhook-endpoints and rotate-secret: scope, 201 with the secret once,
clear 422s, the SSRF rule at creation."""
from __future__ import annotations

from models import WebhookEndpoint, db
from services.events import signing
from tests.helpers import assert_error

PATH = "/api/v1/webhook-endpoints"


def test_create_list_rotate_delete(local_app, api_as):
    api = api_as("webhooks:write")
    status, body, resp = api.post(PATH, {"url": "http://127.0.0.1:9/hooks",
                                         "events": ["task.finished", "grant.created"],
                                         "description": "backend"})
    assert status == 201, body
    made = body["data"]
    assert made["secret"].startswith("whsec_") and len(made["secret"]) > 40
    assert made["events"] == ["grant.created", "task.finished"]
    assert (made["url"], made["description"], made["status"]) == \
        ("http://127.0.0.1:9/hooks", "backend", "enabled")
    assert db.session.get(WebhookEndpoint, made["id"]).secret == made["secret"]

    status, body, _ = api.get(PATH)
    assert status == 200
    [listed] = body["data"]["endpoints"]
    assert listed["id"] == made["id"] and "secret" not in listed
    assert made["secret"] not in str(body)
    assert body["data"]["next_cursor"] is None

    status, body, _ = api.post(f"{PATH}/{made['id']}/rotate-secret")
    assert status == 200, body
    new = body["data"]["secret"]
    assert new.startswith("whsec_") and new != made["secret"]
    assert body["data"]["previous_secret_expires_at"].endswith("Z")
    db.session.expire_all()
    ep = db.session.get(WebhookEndpoint, made["id"])
    assert (ep.secret, ep.previous_secret) == (new, made["secret"])

    status, body, _ = api.call("DELETE", f"{PATH}/{made['id']}")
    assert status == 200 and body["data"] == {"id": made["id"], "deleted": True}
    assert api.get(PATH)[1]["data"]["endpoints"] == []
    assert_error(*api.call("DELETE", f"{PATH}/{made['id']}")[:2], "NOT_FOUND", 404)
    assert_error(*api.post(f"{PATH}/{made['id']}/rotate-secret")[:2], "NOT_FOUND", 404)


def test_list_is_paged(local_app, api_as):
    api = api_as("webhooks:write")
    ids = [api.post(PATH, {"url": f"http://127.0.0.1:9/{i}", "events": ["grant.created"]})[1]
           ["data"]["id"] for i in range(3)]
    first = api.get(f"{PATH}?limit=2")[1]["data"]
    assert [e["id"] for e in first["endpoints"]] == ids[::-1][:2]
    second = api.get(f"{PATH}?limit=2&cursor={first['next_cursor']}")[1]["data"]
    assert [e["id"] for e in second["endpoints"]] == [ids[0]] and second["next_cursor"] is None


def test_scope_is_required(local_app, api_as):
    api = api_as("customers:read")
    assert_error(*api.post(PATH, {"url": "http://127.0.0.1:9/", "events": ["grant.created"]})[:2],
                 "AUTH_FORBIDDEN", 403)
    assert_error(*api.get(PATH)[:2], "AUTH_FORBIDDEN", 403)
    assert_error(*api_as("debits:write").get(PATH)[:2],
                 "AUTH_FORBIDDEN", 403)


def test_clear_422s(local_app, api_as):
    api = api_as("webhooks:write")
    cases = [
        ({"url": "ftp://example.com/", "events": ["grant.created"]}, "url"),
        ({"url": "not a url", "events": ["grant.created"]}, "url"),
        ({"url": "https://user:pw@example.com/", "events": ["grant.created"]}, "url"),
        ({"url": "https://example.com/", "events": []}, "events"),
        ({"url": "https://example.com/", "events": ["grant.deleted"]}, "events.0"),
        ({"url": "https://example.com/"}, "events"),
    ]
    for payload, field in cases:
        status, body, _ = api.post(PATH, payload)
        assert_error(status, body, "VALIDATION_ERROR", 422)
        assert field in body["details"], (payload, body)
    assert db.session.query(WebhookEndpoint).count() == 0


def test_private_urls_are_refused_unless_allowed(app, api_as):
    api = api_as("webhooks:write")
    app.config["WEBHOOK_ALLOW_PRIVATE_URLS"] = False
    for url in ("http://127.0.0.1:8080/", "http://10.1.2.3/", "http://169.254.169.254/latest",
                "http://[::1]/", "http://localhost:5000/", "http://192.168.0.10/",
                "http://[::ffff:127.0.0.1]/", "http://0.0.0.0/", "http://224.0.0.1/"):
        status, body, _ = api.post(PATH, {"url": url, "events": ["grant.created"]})
        assert_error(status, body, "VALIDATION_ERROR", 422)
        assert "WEBHOOK_ALLOW_PRIVATE_URLS" in body["details"]["url"], (url, body)
    # A public address is fine (nothing is sent at creation).
    status, body, _ = api.post(PATH, {"url": "https://93.184.215.14/hooks",
                                      "events": ["grant.created"]})
    assert status == 201, body
    app.config["WEBHOOK_ALLOW_PRIVATE_URLS"] = True
    status, body, _ = api.post(PATH, {"url": "http://127.0.0.1:8080/", "events": ["grant.created"]})
    assert status == 201, body


def test_signing_secret_format():
    s = signing.new_secret()
    assert s.startswith("whsec_")
    import base64
    assert len(base64.b64decode(s.removeprefix("whsec_"))) == 32
