"""The "Webhooks out" page: admins only, CSRF on every form, the secret shown once, deliveries
with their attempts and body, resend (audited), and disabled endpoints on the overview."""
from __future__ import annotations

import re

from sqlalchemy import select

from models import AuditLog, WebhookDelivery, WebhookEndpoint, db
from services.events import endpoints
from tests.events.helpers import deliver, endpoint


def test_only_admins_open_the_page_or_change_anything(local_app, login, receiver):
    made = endpoint(receiver.url)
    for role in ("support", "finance"):
        c = login(role)
        assert c.get("/webhooks-out/").status_code == 403
        assert c.get(f"/webhooks-out/{made.endpoint.id}").status_code == 403
        assert c.post("/webhooks-out/", data={"url": receiver.url,
                                              "events": ["grant.created"]}).status_code == 403
        assert c.post(f"/webhooks-out/{made.endpoint.id}/rotate").status_code == 403
        assert c.post(f"/webhooks-out/{made.endpoint.id}/delete").status_code == 403
        assert "Webhooks out" not in c.get("/").get_data(as_text=True)
    admin = login("admin")
    page = admin.get("/webhooks-out/").get_data(as_text=True)
    assert receiver.url in page and made.secret not in page
    assert "Webhooks out" in admin.get("/").get_data(as_text=True)


def test_forms_need_the_csrf_token(local_app, login, receiver):
    made = endpoint(receiver.url)
    admin = login("admin")
    assert admin.post("/webhooks-out/", data={"url": receiver.url, "events": ["grant.created"]},
                      csrf=False).status_code == 400
    assert admin.post(f"/webhooks-out/{made.endpoint.id}/rotate", csrf=False).status_code == 400
    assert admin.post(f"/webhooks-out/{made.endpoint.id}/delete", csrf=False).status_code == 400
    assert db.session.scalar(select(WebhookEndpoint.secret)) == made.secret


def test_create_shows_the_secret_once_and_refuses_a_private_url(app, login):
    admin = login("admin")
    app.config["WEBHOOK_ALLOW_PRIVATE_URLS"] = False
    resp = admin.htmx("/webhooks-out/", method="POST",
                      data={"url": "http://127.0.0.1:9/x", "events": ["grant.created"]})
    assert resp.status_code == 422
    assert "WEBHOOK_ALLOW_PRIVATE_URLS" in resp.get_data(as_text=True)
    resp = admin.htmx("/webhooks-out/", method="POST", data={"url": "https://93.184.215.14/x"})
    assert resp.status_code == 422 and "Choose at least one event type" in resp.get_data(as_text=True)

    resp = admin.htmx("/webhooks-out/", method="POST",
                      data={"url": "https://93.184.215.14/x", "description": "prod",
                            "events": ["grant.created", "task.finished"]})
    assert resp.status_code == 201
    html = resp.get_data(as_text=True)
    assert "<html" not in html
    ep = db.session.scalar(select(WebhookEndpoint))
    assert ep.secret in html and ep.events == ["grant.created", "task.finished"]
    assert ep.secret not in admin.get("/webhooks-out/").get_data(as_text=True)
    assert ep.secret not in admin.get(f"/webhooks-out/{ep.id}").get_data(as_text=True)
    assert db.session.scalar(select(AuditLog.action).where(
        AuditLog.action == "webhook_endpoints.create"))


def test_deliveries_attempts_body_and_resend(local_app, login, make, receiver):
    made = endpoint(receiver.url)
    receiver.answers = [500]
    make.customer(external_id="user-7", credits=30)
    deliver()
    admin = login("admin")
    html = admin.get(f"/webhooks-out/{made.endpoint.id}").get_data(as_text=True)
    assert "grant.created" in html and "500" in html and "answered 500" in html
    assert "&#34;external_id&#34;:&#34;user-7&#34;" in html or "user-7" in html  # the body sent
    d = db.session.scalar(select(WebhookDelivery))
    assert admin.post(f"/webhooks-out/deliveries/{d.id}/resend", csrf=False).status_code == 400
    resp = admin.htmx(f"/webhooks-out/deliveries/{d.id}/resend", method="POST")
    assert resp.status_code == 200 and "Resend" in resp.get_data(as_text=True)
    db.session.expire_all()
    d = db.session.get(WebhookDelivery, d.id)
    assert d.status == "pending"
    deliver()  # the resend is due now
    db.session.expire_all()
    assert db.session.get(WebhookDelivery, d.id).status == "succeeded"
    assert len(receiver.requests) == 2
    assert db.session.scalar(select(AuditLog.action).where(
        AuditLog.action == "webhook_deliveries.resend", AuditLog.target_id == str(d.id)))


def test_rotate_shows_the_new_secret_and_enable_again(local_app, login, receiver):
    made = endpoint(receiver.url)
    admin = login("admin")
    resp = admin.htmx(f"/webhooks-out/{made.endpoint.id}/rotate", method="POST")
    db.session.expire_all()
    ep = db.session.get(WebhookEndpoint, made.endpoint.id)
    assert resp.status_code == 200 and ep.secret in resp.get_data(as_text=True)
    assert ep.previous_secret == made.secret

    from models import utcnow
    endpoints.disable(db.session, ep, reason="every delivery failed for 3 days", now=utcnow())
    db.session.commit()
    overview = admin.get("/").get_data(as_text=True)
    assert "Webhook endpoints disabled" in overview and receiver.url in overview
    assert "Webhook endpoints disabled" not in login("support").get("/").get_data(as_text=True)
    resp = admin.htmx(f"/webhooks-out/{ep.id}/enable", method="POST")
    assert resp.status_code == 200
    db.session.expire_all()
    assert db.session.get(WebhookEndpoint, ep.id).enabled is True
    assert "Webhook endpoints disabled" not in admin.get("/").get_data(as_text=True)


def test_delete(local_app, login, receiver):
    made = endpoint(receiver.url)
    admin = login("admin")
    resp = admin.post(f"/webhooks-out/{made.endpoint.id}/delete")
    assert resp.status_code == 303
    assert admin.get(f"/webhooks-out/{made.endpoint.id}").status_code == 404
    assert not re.search(re.escape(receiver.url), admin.get("/webhooks-out/").get_data(as_text=True))
