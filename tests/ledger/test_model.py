"""Random grant/debit/refund/adjust/expire sequences against a simple in-memory model.

After every step the database must agree with the model (balance, each bucket's remaining)
and reconcile must be clean. Hypothesis prints the failing sequence and its seed.
"""
from datetime import timedelta

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from models import CreditGrant, db, utcnow
from services.core.errors import Conflict, InsufficientCredits
from services.ledger import customers, reconcile
from services.ledger import posting as ledger
from services.ledger.rules import Actor

STAFF = Actor("staff", "1")


class Model:
    """Buckets as plain dicts, drawn in the documented order."""

    def __init__(self):
        self.buckets: dict[int, dict] = {}
        self.debits: dict[int, list[tuple[int, int]]] = {}  # entry -> [(bucket, take)] left

    @property
    def balance(self):
        return sum(b["remaining"] for b in self.buckets.values())

    def expire_due(self):
        for b in self.buckets.values():
            if b["due"] and b["remaining"] > 0:
                b["remaining"], b["expired"] = 0, True

    def draw(self, credits):
        order = sorted((b for b in self.buckets.values() if b["remaining"] > 0),
                       key=lambda b: (b["days"] is None, b["days"] or 0, b["id"]))
        plan, left = [], credits
        for b in order:
            take = min(b["remaining"], left)
            if take:
                b["remaining"] -= take
                plan.append((b["id"], take))
                left -= take
        return plan


class LedgerMachine(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        LedgerMachine.n += 1
        c, _ = customers.upsert(external_id=f"sm-{LedgerMachine.n}", email="sm@example.com")
        self.cid = c.id
        self.m = Model()

    n = 0

    @rule(credits=st.integers(1, 60), days=st.one_of(st.none(), st.integers(1, 60)),
          due=st.booleans())
    def grant(self, credits, days, due):
        expires = None if days is None else utcnow() + timedelta(days=days)
        e = ledger.grant(customer_id=self.cid, credits=credits, source="promo", expires_at=expires)
        due = due and days is not None
        if due:  # this bucket's expiry passes now: move it into the past
            g = db.session.get(CreditGrant, e.grant_id)
            g.expires_at = utcnow() - timedelta(minutes=days)
            db.session.commit()
        self.m.buckets[e.grant_id] = {"id": e.grant_id, "remaining": credits,
                                      "days": -days if due else days, "due": due,
                                      "expired": False}

    @rule(credits=st.integers(1, 80))
    def debit(self, credits):
        self.m.expire_due()
        try:
            e = ledger.debit(customer_id=self.cid, credits=credits, feature="chat")
        except InsufficientCredits:
            assert self.m.balance < credits
            return
        assert self.m.balance >= credits
        self.m.debits[e.id] = self.m.draw(credits)

    @precondition(lambda self: any(self.m.debits.values()))
    @rule(data=st.data())
    def refund(self, data):
        entry_id = data.draw(st.sampled_from(sorted(k for k, v in self.m.debits.items() if v)))
        left = sum(t for _, t in self.m.debits[entry_id])
        credits = data.draw(st.integers(1, left))
        e = ledger.refund(entry_id=entry_id, credits=credits, reason="model")
        plan, give = self.m.debits[entry_id], credits
        while give:
            bid, take = plan[-1]
            back = min(take, give)
            bucket = self.m.buckets[bid]
            if bucket["expired"] or bucket["due"]:
                fresh = e.grant_id  # returned into a new refund bucket
                nb = self.m.buckets.setdefault(fresh, {"id": fresh, "remaining": 0, "days": 365,
                                                       "due": False, "expired": False})
                nb["remaining"] += back
            else:
                bucket["remaining"] += back
            give -= back
            plan[-1] = (bid, take - back)
            if plan[-1][1] == 0:
                plan.pop()

    @rule(credits=st.integers(1, 40))
    def adjust_up(self, credits):
        e = ledger.adjust(customer_id=self.cid, credits=credits, reason="model", actor=STAFF)
        self.m.buckets[e.grant_id] = {"id": e.grant_id, "remaining": credits, "days": None,
                                      "due": False, "expired": False}

    @rule(credits=st.integers(1, 40))
    def adjust_down(self, credits):
        self.m.expire_due()
        try:
            e = ledger.adjust(customer_id=self.cid, credits=-credits, reason="model", actor=STAFF)
        except InsufficientCredits:
            assert self.m.balance < credits
            return
        self.m.debits[e.id] = self.m.draw(credits)

    @rule()
    def expire(self):
        for bid, b in list(self.m.buckets.items()):
            if b["due"]:
                out = ledger.expire_grant(grant_id=bid)
                assert (out is not None) == (b["remaining"] > 0 and not b["expired"])
        self.m.expire_due()

    @precondition(lambda self: any(self.m.debits.values()))
    @rule(data=st.data())
    def refund_too_much(self, data):
        entry_id = data.draw(st.sampled_from(sorted(k for k, v in self.m.debits.items() if v)))
        left = sum(t for _, t in self.m.debits[entry_id])
        with pytest.raises(Conflict):
            ledger.refund(entry_id=entry_id, credits=left + 1, reason="model")

    @invariant()
    def agrees_with_model(self):
        assert ledger.balance(self.cid) == self.m.balance
        for bid, b in self.m.buckets.items():
            assert db.session.get(CreditGrant, bid).remaining == b["remaining"], bid

    @invariant()
    def reconciles(self):
        report = reconcile.run()
        assert report.ok, report.lines()


@pytest.mark.parametrize("steps", [30])
def test_ledger_state_machine(app, steps):
    LedgerMachine.TestCase.settings = settings(
        max_examples=15, stateful_step_count=steps, deadline=None,
        suppress_health_check=list(HealthCheck))
    LedgerMachine.TestCase().runTest()
