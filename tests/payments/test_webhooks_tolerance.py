"""Webhook signatures hold in time: 300 s either way, for Stripe and the customer webhook."""
from __future__ import annotations

import json
import time
from functools import partial
from types import SimpleNamespace

import pytest

from services.core.errors import InvalidSignature
from services.payments import customer_sync
from services.providers import stripe as stripe_provider
from tests.fakes import signing
from tests.helpers import assert_error
from tests.payments.helpers import CUSTOMER_SECRET, event_rows, send_customer, send_stripe

# --- timestamp tolerance, both directions ------------------------------------------------------

# Through HTTP the stamp is made before the request is checked, so a stamp ahead of the clock
# must clear the edge by more than the request takes (310, not 301); a stamp behind only ages.
# The exact edges are tested below on a fixed clock.
@pytest.mark.parametrize("offset", [3600, 310, -301, -3600])
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


@pytest.mark.parametrize("offset,ok", [(3600, False), (310, False), (-301, False), (200, True)])
def test_the_customer_webhook_has_the_same_tolerance(pay_app, offset, ok):
    payload = {"id": f"evt_t{offset}", "type": "customer.created",
               "data": {"external_id": "tol-1", "email": "tol@example.com"}}
    status, body = send_customer(pay_app.test_client(), payload, timestamp=int(time.time()) + offset)
    if ok:
        assert status == 200 and body["data"]["status"] == "processed"
    else:
        assert_error(status, body, "INVALID_SIGNATURE", 400)
        assert event_rows() == []


@pytest.mark.parametrize("offset,ok", [(300, True), (301, False), (-300, True), (-301, False)])
def test_the_customer_signature_edge_is_300_s_either_way_on_a_fixed_clock(offset, ok):
    now = 1_800_000_000
    body = b'{"id": "evt_edge"}'
    header = signing.customer_webhook_header(body, CUSTOMER_SECRET, now + offset)
    check = partial(customer_sync.verify_signature, body=body, header=header,
                    secret=CUSTOMER_SECRET, now=now)
    if ok:
        check()
    else:
        with pytest.raises(InvalidSignature):
            check()


@pytest.mark.parametrize("offset,ok", [(300, True), (301, False)])
def test_a_stripe_signature_ahead_of_the_clock_is_refused_past_300_s(
        pay_app, stripe_server, monkeypatch, offset, ok):
    now = int(time.time())  # the SDK's own check (only the past) reads the real clock
    monkeypatch.setattr(stripe_provider, "time", SimpleNamespace(time=lambda: now))
    ping = signing.stripe_event("customer.created", {"id": "cus_e", "object": "customer"})
    status, body = send_stripe(pay_app.test_client(), ping, stripe_server.webhook_secret,
                               timestamp=now + offset)
    if ok:
        assert status == 200
    else:
        assert_error(status, body, "INVALID_SIGNATURE", 400)


@pytest.mark.parametrize("stamp", ["²", "9" * 5000, "-5", "1e9"])
def test_a_customer_webhook_with_a_junk_timestamp_is_400_not_500(pay_app, stamp):
    body = json.dumps({"id": "evt_j", "type": "customer.created",
                       "data": {"external_id": "j-1"}}).encode()
    sig = signing.customer_webhook_header(body, CUSTOMER_SECRET).split(",")[1]
    resp = pay_app.test_client().post("/api/webhooks/customers", data=body, headers={
        "Content-Type": "application/json", "X-Creditdesk-Signature": f"t={stamp},{sig}"})
    assert_error(resp.status_code, resp.get_json(), "INVALID_SIGNATURE", 400)
    assert event_rows() == []
