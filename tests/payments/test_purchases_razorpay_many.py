"""200 Razorpay payments, each confirmed four ways in random order, are credited exactly once."""
from __future__ import annotations

import os
import random
from concurrent.futures import ThreadPoolExecutor

from sqlalchemy import func, select

from models import Account, LedgerEntry, Payment, WebhookEvent, db
from services.ledger import reconcile
from tests.fakes import signing
from tests.payments.helpers import buy

PAYMENTS = 200
CUSTOMERS = 20


def test_200_payments_x_3_webhook_deliveries_and_verify_in_random_order_grant_200_times(
        pay_app, pay_api, make, razorpay_server):
    seed = int(os.environ.get("PAYMENTS_SEED") or random.randrange(2**32))
    print(f"PAYMENTS_SEED={seed}")  # rerun this exact order with PAYMENTS_SEED=<seed>
    rng = random.Random(seed)
    packs = [make.package(credits=c, price_minor=c * 100, currency="INR") for c in (10, 25, 40)]
    for n in range(CUSTOMERS):
        make.customer(external_id=f"many-{n}")
    secret = razorpay_server.webhook_secret

    actions, expected = [], {}
    for i in range(PAYMENTS):
        external_id, pack = f"many-{i % CUSTOMERS}", rng.choice(packs)
        order = buy(pay_api, external_id, "razorpay", package_id=pack.id)
        pay_id = razorpay_server.pay_order(order["order_id"])
        entity = razorpay_server.payments[pay_id]
        captured = signing.razorpay_webhook_request(signing.razorpay_payment_captured(entity),
                                                    secret, event_id=f"evt_cap_{i}")
        paid = signing.razorpay_webhook_request(signing.razorpay_order_paid(
            razorpay_server.orders[order["order_id"]], entity), secret, event_id=f"evt_paid_{i}")
        redelivered = rng.choice((captured, paid))
        actions += [("webhook", captured), ("webhook", paid), ("webhook", redelivered),
                    ("verify", {"order_id": order["order_id"], "payment_id": pay_id,
                                "signature": razorpay_server.payment_signature(order["order_id"],
                                                                               pay_id)}, pack.credits)]
        expected[external_id] = expected.get(external_id, 0) + pack.credits
    rng.shuffle(actions)
    db.session.rollback()

    def run(chunk):
        client, answers = pay_app.test_client(), []
        for action in chunk:
            if action[0] == "webhook":
                body, headers = action[1]
                resp = client.post("/api/webhooks/razorpay", data=body, headers=headers)
                answers.append((resp.status_code, resp.get_json()["data"]["status"]))
            else:
                resp = client.post("/api/v1/payments/razorpay/verify", json=action[1],
                                   headers=pay_api.headers())
                data = resp.get_json()["data"]
                answers.append((resp.status_code, data["credits_added"] == action[2]))
        return answers

    chunks = [actions[k::4] for k in range(4)]  # four clients at once, each in shuffled order
    with ThreadPoolExecutor(max_workers=4) as pool:
        answers = [a for part in pool.map(run, chunks) for a in part]

    assert len(answers) == 4 * PAYMENTS
    assert {status for status, _ in answers} == {200}
    assert {outcome for _, outcome in answers} <= {"processed", True}
    db.session.rollback()
    grants = db.session.scalar(select(func.count()).select_from(LedgerEntry)
                               .where(LedgerEntry.type == "grant", LedgerEntry.payment_id.is_not(None)))
    assert grants == PAYMENTS
    assert db.session.scalar(select(func.count()).select_from(Payment)
                             .where(Payment.status == "paid")) == PAYMENTS
    assert db.session.scalar(select(func.count()).select_from(WebhookEvent)) == 2 * PAYMENTS
    assert db.session.scalar(select(func.sum(Account.balance))) == sum(expected.values())
    report = reconcile.run()
    assert report.ok, report.lines()
