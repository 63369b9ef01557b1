"""Webhook signatures hold in time: 300 s either way, for Stripe and the customer webhook."""
from __future__ import annotations

import json
import time

import pytest

from tests.fakes import signing
from tests.helpers import assert_error
from tests.payments.helpers import CUSTOMER_SECRET, event_rows, send_customer, send_stripe

# --- timestamp tolerance, both directions ------------------------------------------------------

@pytest.mark.parametrize("offset", [3600, 301, -301, -3600])
def test_a_stripe_event_signed_outside_300_s_either_way_is_refused(pay_app, stripe_server, offset):
    ping = signing.stripe_event("customer.created", {"id": "cus_t", "object": "customer"})
    status, body = send_stripe(pay_app.test_client(), ping, stripe_server.webhook_secret,
                               timestamp=int(time.time()) + offset)
    assert_error(status, body, "INVALID_SIGNATURE", 400)
    assert event_rows() == []


@pytest.mark.parametrize("offset", [200, -200])
def test_a_stripe_event_signed_within_300_s_is_accepted(pay_app, stripe_server, offset):
    ping = signing.stripe_event("customer.created", {"id": "cus_t", "object": "customer"})
    status, body = send_stripe(pay_app.test_client(), ping, stripe_server.webhook_secret,
                               timestamp=int(time.time()) + offset)
    assert status == 200 and body["data"]["status"] == "ignored"
    assert [r[:2] for r in event_rows()] == [("customer.created", "ignored")]


@pytest.mark.parametrize("offset,ok", [(3600, False), (-301, False), (200, True)])
def test_the_customer_webhook_has_the_same_tolerance(pay_app, offset, ok):
    payload = {"id": f"evt_t{offset}", "type": "customer.created",
               "data": {"external_id": "tol-1", "email": "tol@example.com"}}
    status, body = send_customer(pay_app.test_client(), payload, timestamp=int(time.time()) + offset)
    if ok:
        assert status == 200 and body["data"]["status"] == "processed"
    else:
        assert_error(status, body, "INVALID_SIGNATURE", 400)
        assert event_rows() == []


@pytest.mark.parametrize("stamp", ["²", "9" * 5000, "-5", "1e9"])
def test_a_customer_webhook_with_a_junk_timestamp_is_400_not_500(pay_app, stamp):
    body = json.dumps({"id": "evt_j", "type": "customer.created",
                       "data": {"external_id": "j-1"}}).encode()
    sig = signing.customer_webhook_header(body, CUSTOMER_SECRET).split(",")[1]
    resp = pay_app.test_client().post("/api/webhooks/customers", data=body, headers={
        "Content-Type": "application/json", "X-Creditdesk-Signature": f"t={stamp},{sig}"})
    assert_error(resp.status_code, resp.get_json(), "INVALID_SIGNATURE", 400)
    assert event_rows() == []
