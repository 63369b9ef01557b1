"""N+1 guard: the number of SQL statements a page runs must not grow with the rows it shows.

Each page is requested with a small data set and again after the data has grown; the
statement count (an SQLAlchemy before_cursor_execute listener) must be the same.
"""
from __future__ import annotations

from contextlib import contextmanager

import pytest
from sqlalchemy import event

from models import AdjustmentRequest, Refund, db
from services.ledger import posting as ledger
from services.staff import adjustments
from services.tasks import prepaid as tasks


@contextmanager
def counting():
    seen: list[str] = []

    def on_execute(_conn, _cursor, statement, *_args):
        seen.append(statement)

    event.listen(db.engine, "before_cursor_execute", on_execute)
    try:
        yield seen
    finally:
        event.remove(db.engine, "before_cursor_execute", on_execute)


def statements(client, url: str) -> int:
    assert client.get(url).status_code == 200  # warm caches (settings, templates)
    db.session.expire_all()
    with counting() as seen:
        resp = client.get(url)
    assert resp.status_code == 200, url
    return len(seen)


class World:
    """Grows every kind of row the operations pages show, for many customers and for one."""

    def __init__(self, make):
        self.make = make
        self.support = make.staff(role="support")
        self.admin = make.staff(role="admin")
        self.focus = make.customer(name="Focus", credits=100_000)
        self.n = 0

    def grow(self, k: int) -> None:
        make = self.make
        for _ in range(k):
            self.n += 1
            c = make.customer(credits=1000)
            ledger.debit(customer_id=c.id, credits=5, feature="chat", quantity=5, reference=f"r{self.n}")
            t = tasks.create(type="video", customer_id=c.id, estimated_credits=10)
            tasks.fail(task_id=t.id, error="provider down")
            pay = make.payment(c, amount_minor=1000)
            db.session.add(Refund(payment_id=pay.id, customer_id=c.id, status="requested", credits=10,
                                  amount_minor=100, currency="USD", reason="r",
                                  idempotency_key=f"rf-{self.n}-{c.id}"))
            db.session.commit()
            adjustments.submit(customer_id=c.id, credits=9000, reason_code="goodwill", note="big",
                               staff=self.support)
            # The focus customer gets a bit of everything too.
            f = self.focus
            make.grant(f, credits=10, expires_in_days=30)
            ledger.debit(customer_id=f.id, credits=3, feature="image", quantity=1)
            adjustments.submit(customer_id=f.id, credits=7, reason_code="goodwill", note="small",
                               staff=self.support)
            adjustments.submit(customer_id=f.id, credits=7000, reason_code="goodwill", note="large",
                               staff=self.support)
            ft = tasks.create(type="image", customer_id=f.id, estimated_credits=2)
            tasks.complete(task_id=ft.id, actual_credits=1)
            fp = make.payment(f, amount_minor=500)
            db.session.add(Refund(payment_id=fp.id, customer_id=f.id, status="processed", credits=1,
                                  amount_minor=10, currency="USD", reason="r",
                                  idempotency_key=f"rf-focus-{self.n}"))
            db.session.commit()


PAGES = {
    "overview": lambda w: "/",
    "customers": lambda w: "/customers/",
    "customer search": lambda w: "/customers/?q=example",
    "customer detail": lambda w: f"/customers/{w.focus.id}",
    "customer statement filtered": lambda w: f"/customers/{w.focus.id}?type=debit&feature=image",
    "transactions": lambda w: "/transactions/",
    "transactions filtered": lambda w: "/transactions/?type=debit&feature=chat",
    "tasks": lambda w: "/tasks/",
    "tasks failed": lambda w: "/tasks/?status=failed",
    "task detail": lambda w: f"/tasks/{w.focus_task()}",
    "plans": lambda w: "/plans/",
    "pricing": lambda w: "/pricing/",
}


def _focus_task(self) -> int:
    from models import Task
    return db.session.query(Task.id).filter_by(customer_id=self.focus.id).order_by(Task.id).first()[0]


World.focus_task = _focus_task


@pytest.mark.parametrize("page", sorted(PAGES))
def test_statements_do_not_grow_with_rows(login, make, page):
    world = World(make)
    world.grow(2)
    for i in range(3):
        make.plan(code=f"plan-{page.replace(' ', '-')}-{i}")
        make.feature_price(feature=f"f-{i}")
    admin = login("admin")
    url = PAGES[page](world)
    small = statements(admin, url)
    world.grow(6)
    for i in range(3, 9):
        make.plan(code=f"plan-{page.replace(' ', '-')}-{i}")
        make.feature_price(feature=f"f-{i}")
    large = statements(admin, url)
    assert large == small, f"{page}: {small} statements with a few rows, {large} with more"
    assert db.session.query(AdjustmentRequest).filter_by(status="pending").count() >= 8
