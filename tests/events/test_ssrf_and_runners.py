"""The SSRF guard at delivery time (a name resolving to a private address is refused when it is
sent, not only when it is registered), and two delivery runners in parallel on PostgreSQL
(FOR UPDATE SKIP LOCKED claims) delivering each event exactly once."""
from __future__ import annotations

import threading
import time

from sqlalchemy import func, select

from models import WebhookAttempt, WebhookDelivery, db
from services.events import delivery, urls
from tests.events.helpers import Receiver, deliver, endpoint


def test_loopback_needs_the_setting_at_delivery_too(app, make, receiver):
    app.config["WEBHOOK_ALLOW_PRIVATE_URLS"] = True
    endpoint(f"http://localhost:{receiver.port}/hooks")  # a DNS name for 127.0.0.1
    app.config["WEBHOOK_ALLOW_PRIVATE_URLS"] = False
    make.customer(credits=10)

    out = deliver()

    assert (out.attempted, out.failed) == (1, 1)
    assert receiver.requests == []  # never connected
    a = db.session.scalar(select(WebhookAttempt))
    assert a.status_code is None and "refused: localhost resolves to" in a.error
    assert "loopback" in a.error
    d = db.session.scalar(select(WebhookDelivery))
    assert d.status == "pending" and d.attempts == 1  # retried later, like any failure

    app.config["WEBHOOK_ALLOW_PRIVATE_URLS"] = True
    deliver(now=d.next_attempt_at)
    assert len(receiver.requests) == 1


def test_refused_addresses():
    for a in ("127.0.0.1", "10.0.0.1", "172.16.5.4", "192.168.1.1", "169.254.169.254", "::1",
              "fe80::1", "fc00::1", "224.0.0.251", "0.0.0.0",  # noqa: S104
              "100.64.0.1", "240.0.0.1",
              "::ffff:10.0.0.1", "ff02::1"):
        assert urls.refused_reason(a), a
    for a in ("93.184.215.14", "8.8.8.8", "2606:4700:4700::1111"):
        assert urls.refused_reason(a) is None, a


def test_no_redirect_is_followed(local_app, make):
    with Receiver() as target, Receiver() as redirector:
        redirector.answers = [302]
        endpoint(redirector.url)
        make.customer(credits=10)
        deliver()
        assert target.requests == [] and len(redirector.requests) == 1
        assert db.session.scalar(select(WebhookDelivery.last_status_code)) == 302
        assert db.session.scalar(select(WebhookDelivery.status)) == "pending"


class SlowReceiver(Receiver):
    """Answers after a short pause, so that the runners' claims overlap."""

    def __init__(self):
        super().__init__()
        handler = self.server.RequestHandlerClass
        original = handler.do_POST

        def slow(h):
            time.sleep(0.02)
            original(h)
        handler.do_POST = slow


def test_two_runners_in_parallel_deliver_each_event_once(pg_app, factory):
    pg_app.config["WEBHOOK_ALLOW_PRIVATE_URLS"] = True
    with SlowReceiver() as receiver:
        endpoint(receiver.url)
        c = factory.customer()
        for _ in range(40):
            factory.grant(c, credits=1)
        db.session.commit()
        barrier = threading.Barrier(2)
        results, errors = [], []

        def runner():
            with pg_app.app_context():
                try:
                    barrier.wait()
                    results.append(delivery.run(concurrency=3))
                except Exception as err:  # noqa: BLE001 - reported below
                    errors.append(err)
                finally:
                    db.session.remove()

        threads = [threading.Thread(target=runner) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert errors == []
        ids = [r.headers["webhook-id"] for r in receiver.requests]
        assert len(ids) == 40 and len(set(ids)) == 40
        assert sum(r.succeeded for r in results) == 40
        assert sum(r.dispatched for r in results) == 40
        db.session.expire_all()
        assert db.session.scalar(select(func.count()).select_from(WebhookDelivery)) == 40
        assert db.session.scalar(select(func.count()).select_from(WebhookAttempt)) == 40
