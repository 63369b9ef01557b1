"""Webhook events page: list with filters and paging, payload detail, replay through the service."""
from __future__ import annotations

import json
import re

from models import AuditLog, Customer, WebhookEvent, db
from services.core.db import atomic


def event(provider="stripe", type_="checkout.session.completed", status="processed", payload=None,
          error=None, event_id=None) -> WebhookEvent:
    with atomic() as s:
        ev = WebhookEvent(provider=provider, type=type_, status=status, error=error,
                          event_id=event_id or f"evt_{provider}_{type_}_{status}_{id(payload)}",
                          payload=json.dumps(payload if payload is not None else {"id": "x"}))
        s.add(ev)
        s.flush()
    return ev


def test_list_filters_by_provider_status_and_type(login):
    staff = login("finance")
    event("stripe", "invoice.paid", "processed", event_id="evt_1")
    event("razorpay", "payment.captured", "failed", error="amount mismatch", event_id="pay_2")
    event("customers", "customer.created", "ignored", event_id="cus_3")
    page = staff.get("/webhooks/").get_data(as_text=True)
    assert all(x in page for x in ("evt_1", "pay_2", "cus_3", "amount mismatch"))
    only = staff.htmx("/webhooks/?provider=razorpay").get_data(as_text=True)
    assert "pay_2" in only and "evt_1" not in only and "<html" not in only
    assert "evt_1" in staff.htmx("/webhooks/?status=processed&type=invoice.paid").get_data(as_text=True)
    assert "cus_3" in staff.htmx("/webhooks/?q=cus_3").get_data(as_text=True)
    assert "No events match" in staff.get("/webhooks/?status=failed&provider=stripe").get_data(as_text=True)


def test_keyset_paging(login):
    staff = login("admin")
    for n in range(55):
        event(event_id=f"evt_page_{n:02}")
    first = staff.get("/webhooks/").get_data(as_text=True)
    assert "evt_page_54" in first and "evt_page_04<" not in first
    link = re.search(r'href="(/webhooks/\?[^"]*before=\d+)"', first).group(1).replace("&amp;", "&")
    rest = staff.htmx(link).get_data(as_text=True)
    assert "evt_page_04" in rest and "evt_page_00" in rest and "evt_page_05" not in rest


def test_detail_shows_pretty_escaped_payload_and_error(login):
    staff = login("finance")
    ev = event(payload={"b": 1, "a": {"name": "<b>bold</b>"}}, status="failed", error="boom <i>")
    page = staff.get(f"/webhooks/{ev.id}").get_data(as_text=True)
    assert '{\n  &#34;a&#34;: {\n    &#34;name&#34;: &#34;&lt;b&gt;bold&lt;/b&gt;&#34;' in page
    assert "boom &lt;i&gt;" in page
    assert "Replay" not in page  # finance reads; only admins replay
    assert staff.get("/webhooks/424242").status_code == 404


def test_replay_a_failed_customer_event_applies_it(login):
    admin = login("admin")
    payload = {"id": "evt_c1", "type": "customer.created",
               "data": {"external_id": "ext-77", "email": "new@example.com", "name": "New Customer"}}
    ev = event("customers", "customer.created", "failed", payload=payload, error="database was down",
               event_id="evt_c1")
    page = admin.get(f"/webhooks/{ev.id}").get_data(as_text=True)
    assert "Replay" in page
    resp = admin.htmx(f"/webhooks/{ev.id}/replay", "POST")
    assert resp.status_code == 200 and "now processed" in resp.headers["HX-Trigger"]
    assert 'id="status-panel"' in resp.get_data(as_text=True)
    assert db.session.scalar(db.select(Customer).where(Customer.external_id == "ext-77")).name == \
        "New Customer"
    db.session.expire_all()
    assert db.session.get(WebhookEvent, ev.id).status == "processed"
    row = db.session.scalar(db.select(AuditLog).where(AuditLog.action == "webhook.replay"))
    assert row.before == {"status": "failed"} and row.after["status"] == "processed"
    assert row.staff_id == admin.staff.id
    # a second replay is refused: it is finished
    again = admin.htmx(f"/webhooks/{ev.id}/replay", "POST")
    assert again.status_code == 409 and "already processed" in again.get_data(as_text=True)


def test_replay_of_a_payment_event_goes_through_processing(login):
    admin = login("admin")
    ev = event("stripe", "customer.created", "failed", payload={"id": "evt_s", "type": "customer.created"},
               event_id="evt_s")
    resp = admin.post(f"/webhooks/{ev.id}/replay")  # without JavaScript
    assert resp.status_code == 303
    db.session.expire_all()
    replayed = db.session.get(WebhookEvent, ev.id)
    assert replayed.status == "ignored" and "not used" in replayed.error  # an unused type


def test_replay_needs_admin(login):
    ev = event(status="failed")
    for role in ("support", "finance"):
        assert login(role).post(f"/webhooks/{ev.id}/replay").status_code == 403
    assert login("support").get("/webhooks/").status_code == 403
