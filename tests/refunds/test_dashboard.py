"""The refunds pages: who may do what, the request form from a customer's purchases, approve /
reject / process / retry with htmx row refresh, list paging and filters, refund by reference."""
from __future__ import annotations

import re

import pytest
from sqlalchemy import select

from models import Payment, Refund, db, utcnow
from services.ledger import reconcile
from services.refunds import requests as refunds
from tests.refunds.helpers import balance_of, clawbacks, fresh, stripe_purchase


@pytest.fixture
def paid(pay_app, pay_api, make, stripe_server) -> Payment:
    return stripe_purchase(pay_app, pay_api, make, stripe_server, credits=1000, price_minor=5000)


def form_key(html: str) -> str:
    return re.search(r'name="key" type="hidden" value="([0-9a-f]+)"', html).group(1)


def request_via_form(client, p: Payment, credits: int | None = 200, reason="customer asked"):
    page = client.get(f"/refunds/new?customer={p.customer_id}&payment={p.id}")
    assert page.status_code == 200
    data = {"payment_id": p.id, "reason": reason, "customer": p.customer_id,
            "key": form_key(page.get_data(as_text=True))}
    if credits is not None:
        data["credits"] = credits
    return client.post("/refunds/", data=data)


def test_support_requests_from_the_customer_page_but_cannot_decide(paid, login):
    support = login("support")
    customer_page = support.get(f"/customers/{paid.customer_id}").get_data(as_text=True)
    assert f"/refunds/new?customer={paid.customer_id}" in customer_page
    form = support.get(f"/refunds/new?customer={paid.customer_id}").get_data(as_text=True)
    assert "1,000" in form and "$50.00" in form and "eligible" in form

    resp = request_via_form(support, paid)

    assert resp.status_code == 303
    [r] = db.session.scalars(select(Refund)).all()
    assert (r.status, r.credits, r.amount_minor, r.requested_by_id) == \
        ("requested", 200, 1000, support.staff.id)
    detail = support.get(resp.headers["Location"]).get_data(as_text=True)
    assert "refund.requested" in detail and support.staff.email in detail
    assert "Approve</button>" not in detail  # support sees no decisions
    for action in ("approve", "process", "retry", "reject"):
        assert support.post(f"/refunds/{r.id}/{action}").status_code == 403
    assert support.get(f"/refunds/{r.id}/reject").status_code == 403
    assert support.get("/refunds/by-reference").status_code == 403
    assert support.get("/refunds/").status_code == 200
    assert fresh(Refund, r.id).status == "requested"


def test_requester_cannot_approve_a_second_person_can_and_process_refreshes_the_row(
        paid, login, stripe_server):
    finance, other = login("finance"), login("finance")
    assert request_via_form(finance, paid, credits=None).status_code == 303
    r = db.session.scalar(select(Refund))

    own = finance.htmx(f"/refunds/{r.id}/approve", method="POST")
    assert own.status_code == 409 and "second person" in own.get_data(as_text=True)
    assert "<html" not in own.get_data(as_text=True)

    ok = other.htmx(f"/refunds/{r.id}/approve", method="POST")
    body = ok.get_data(as_text=True)
    assert ok.status_code == 200 and "<html" not in body and body.lstrip().startswith("<tr")
    assert "approved" in body and "flash" in ok.headers["HX-Trigger"]

    done = finance.htmx(f"/refunds/{r.id}/process", method="POST")
    assert done.status_code == 200 and "processed" in done.get_data(as_text=True)
    [call] = stripe_server.requests_to("POST", "/v1/refunds")
    assert call.header("Idempotency-Key") == r.idempotency_key
    assert balance_of(paid.customer_id) == 0 and len(clawbacks(paid.id)) == 1
    detail = finance.get(f"/refunds/{r.id}").get_data(as_text=True)
    for step in ("refund.requested", "refund.approved", "refund.processing", "refund.processed",
                 fresh(Refund, r.id).provider_refund_id, f"refund:{r.id}"):
        assert step in detail
    assert reconcile.run().ok


def test_provider_error_shows_failed_row_and_retry_processes_once(paid, login, make, stripe_server):
    support, admin = login("support"), login("admin")
    request_via_form(support, paid, credits=100)
    r = db.session.scalar(select(Refund))
    admin.htmx(f"/refunds/{r.id}/approve", method="POST")
    stripe_server.fail_next(1, 503)

    failed = admin.htmx(f"/refunds/{r.id}/process", method="POST")
    body = failed.get_data(as_text=True)
    assert failed.status_code == 200 and "failed" in body and "Retry" in body
    assert "error" in failed.headers["HX-Trigger"] and clawbacks(paid.id) == []

    retried = admin.htmx(f"/refunds/{r.id}/retry", method="POST")
    assert retried.status_code == 200 and "processed" in retried.get_data(as_text=True)
    assert len(stripe_server.refunds) == 1 and len(clawbacks(paid.id)) == 1
    assert {c.header("Idempotency-Key") for c in stripe_server.requests_to("POST", "/v1/refunds")} \
        == {r.idempotency_key}


def test_reject_from_the_row_with_a_note_and_without_javascript(paid, login):
    support, finance = login("support"), login("finance")
    request_via_form(support, paid, credits=10)
    request_via_form(support, paid, credits=20)
    first, second = db.session.scalars(select(Refund).order_by(Refund.id)).all()

    confirm = finance.htmx(f"/refunds/{first.id}/reject?row=1")
    assert confirm.status_code == 200 and 'name="note"' in confirm.get_data(as_text=True)
    rejected = finance.htmx(f"/refunds/{first.id}/reject", method="POST", data={"note": "duplicate"})
    assert rejected.status_code == 200 and "rejected" in rejected.get_data(as_text=True)

    plain = finance.post(f"/refunds/{second.id}/reject", data={"note": "not needed"})
    assert plain.status_code == 303 and plain.headers["Location"].endswith(f"/refunds/{second.id}")
    assert [fresh(Refund, x.id).status for x in (first, second)] == ["rejected", "rejected"]
    assert "not needed" in finance.get(f"/refunds/{second.id}").get_data(as_text=True)


def test_list_by_status_with_keyset_paging_and_filters_in_the_url(paid, login, make):
    other = make.customer()
    other_pay = make.payment(other, provider="razorpay", amount_minor=10000, currency="INR",
                             credits=100)
    now = utcnow()
    rows = [Refund(payment_id=paid.id, customer_id=paid.customer_id, status="requested", credits=1,
                   amount_minor=5, currency="USD", reason="r", idempotency_key=f"creditdesk-refund-t{i}",
                   created_at=now, updated_at=now) for i in range(55)]
    rows.append(Refund(payment_id=other_pay.id, customer_id=other.id, status="processed", credits=3,
                       amount_minor=300, currency="INR", reason="r", idempotency_key="razorpay:rfnd_x",
                       created_at=now, updated_at=now))
    db.session.add_all(rows)
    db.session.commit()
    finance = login("finance")

    first = finance.get("/refunds/?status=requested").get_data(as_text=True)
    assert first.count('<tr id="refund-') == 50 and "Load older refunds" in first
    more = re.search(r'href="(/refunds/\?before=\d+[^"]*)"', first).group(1).replace("&amp;", "&")
    assert "status=requested" in more
    rest = finance.htmx(more).get_data(as_text=True)
    assert rest.count('<tr id="refund-') == 5 and "<html" not in rest
    assert "Load older refunds" not in rest

    by_provider = finance.get("/refunds/?provider=razorpay").get_data(as_text=True)
    assert by_provider.count('<tr id="refund-') == 1 and "at the provider" in by_provider
    by_customer = finance.htmx("/refunds/?customer=" + other.email,
                               headers={"HX-Target": "results"}).get_data(as_text=True)
    assert by_customer.count('<tr id="refund-') == 1 and "<html" not in by_customer
    assert "No customer has" in finance.get("/refunds/?customer=nobody@x").get_data(as_text=True)


def test_request_form_refuses_more_than_refundable(paid, login):
    support = login("support")
    resp = request_via_form(support, paid, credits=1001)
    assert resp.status_code == 409 and "can be refunded" in resp.get_data(as_text=True)
    assert db.session.scalar(select(Refund)) is None
    bad = support.client.post("/refunds/", data={"payment_id": paid.id, "reason": ""},
                              headers={"X-CSRFToken": support.token})
    assert bad.status_code == 422


def test_refund_by_reference_preview_then_confirm_twice(login, make):
    a, b = make.customer(credits=500), make.customer(credits=500)
    from services.ledger import posting as ledger
    for i, (c, n) in enumerate([(a, 40), (a, 60), (b, 25)]):
        ledger.debit(customer_id=c.id, credits=n, feature="video", reference="project:123",
                     key=f"p{i}")
    admin = login("admin")

    preview = admin.htmx("/refunds/by-reference?reference=project:123",
                         headers={"HX-Target": "preview"})
    html = preview.get_data(as_text=True)
    assert preview.status_code == 200 and "<html" not in html
    figures = {k: int(v) for k, v in re.findall(
        r'name="(customers|debits|credits)" value="(\d+)"', html)}
    assert figures == {"customers": 2, "debits": 3, "credits": 125}

    done = admin.htmx("/refunds/by-reference", method="POST",
                      data={"reference": "project:123", "reason": "cancelled", **figures})
    body = done.get_data(as_text=True)
    assert done.status_code == 200 and "Refunded" in body and "125" in body
    assert (balance_of(a.id), balance_of(b.id)) == (500, 500)

    stale = admin.htmx("/refunds/by-reference", method="POST",
                       data={"reference": "project:123", **figures})
    assert stale.status_code == 409 and "changed since the preview" in stale.get_data(as_text=True)
    again = admin.htmx("/refunds/by-reference", method="POST", data={"reference": "project:123"})
    assert again.status_code == 200
    assert (balance_of(a.id), balance_of(b.id)) == (500, 500)
    assert "Nothing to refund" in admin.get("/refunds/by-reference?reference=project:123") \
        .get_data(as_text=True)
    assert reconcile.run().ok


def test_overview_and_nav_link_to_refunds(paid, login):
    support = login("support")
    request_via_form(support, paid, credits=5)
    assert 'href="/refunds/"' in support.get("/").get_data(as_text=True)
    assert refunds.get(db.session.scalar(select(Refund.id))).status == "requested"
