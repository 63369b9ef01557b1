"""The API's SQL debit (creditdesk_api_debit, services/ledger/sqldebit.py) writes exactly what the
Python path writes.

The property: a random history (grants of every source with expiries before and after the grace,
priced and explicit debits, quantities, references, reused and new Idempotency-Keys, changes of
the expiry settings, low-balance and auto top-up thresholds) is run twice through the API on
PostgreSQL, once with API_SQL_DEBIT on and once off, from the same empty database; every answer
and every row must be the same: entries (balances, keys, request fingerprints, actors, request
ids), allocations, buckets, balances, outbox notices, auto top-up attempts and stored replies.
Hypothesis prints the failing history (and its seed with --hypothesis-seed).
"""
from __future__ import annotations

from datetime import timedelta

import pytest
from hypothesis import HealthCheck, Phase, event, given, settings, target
from hypothesis import strategies as st
from sqlalchemy import text

from models import AutoTopup, db, utcnow
from services.core import settings as app_settings
from services.ledger import posting as ledger
from services.ledger import sqldebit
from services.ledger.rules import POSTABLE_SOURCES, Actor
from tests.conftest import _truncate_pg
from tests.factories import Factory
from tests.helpers import ApiClient

pytestmark = pytest.mark.pg

EXTERNAL_ID = "prop-1"
GRANT = st.tuples(st.just("grant"), st.integers(1, 200), st.sampled_from(POSTABLE_SOURCES),
                  st.one_of(st.none(), st.integers(-80, 80)))  # expiry in hours from now (+30 min)
DEBIT = st.tuples(st.just("debit"), st.one_of(st.none(), st.integers(1, 80)),
                  st.sampled_from(["chat", "image", "unpriced"]),
                  st.one_of(st.none(), st.integers(1, 6)),
                  st.one_of(st.none(), st.sampled_from(["k1", "k2", "k3"])),
                  st.sampled_from([None, "ref-a", "ref-b"]))
SETTING = st.tuples(st.just("setting"), st.sampled_from([0, 24, 48]), st.booleans())
HISTORY = st.fixed_dictionaries({
    "low_setting": st.sampled_from([0, 5, 30, 100]),
    "customer_threshold": st.sampled_from([None, None, 0, 20]),
    "topup": st.sampled_from([None, None, 10, 40]),
    "steps": st.lists(st.one_of(GRANT, DEBIT, DEBIT, DEBIT, SETTING), min_size=3, max_size=16),
})


def _ordinals(sql: str) -> dict[int, int]:
    return {row[0]: n for n, row in enumerate(db.session.execute(text(sql)))}


def _snapshot(base) -> dict:
    """Every row the debits touch, with ids replaced by their order, timestamps left out and
    expiries in minutes after the run's start."""
    q = db.session.execute
    entries = _ordinals("SELECT id FROM ledger_entries ORDER BY id")
    grants = _ordinals("SELECT id FROM credit_grants ORDER BY id")

    def entry_id(i):
        return None if i is None else entries[i]

    def body(b):
        if isinstance(b, dict) and isinstance(b.get("data"), dict) and "entry_id" in b["data"]:
            return {**b, "data": {**b["data"], "entry_id": entry_id(b["data"]["entry_id"])}}
        return b

    return {
        "entries": [(*r[1:-3], None if r[-3] is None else grants[r[-3]], entry_id(r[-2]), r[-1])
                    for r in q(text(
            "SELECT id, type, amount, balance_before, balance_after, feature, quantity, reference, "
            "idempotency_key, request_hash, request_id, actor_type, actor_id, reason, "
            "metadata::text, grant_id, related_entry_id, customer_id FROM ledger_entries "
            "ORDER BY id"))],
        "allocations": [(entries[e], grants[g], c) for e, g, c in q(text(
            "SELECT entry_id, grant_id, credits FROM allocations ORDER BY id"))],
        "grants": [(*r[:-2], r[-2] and round((r[-2] - base).total_seconds() / 60), r[-1])
                   for r in q(text("SELECT source, amount, remaining, expires_at, expired_at IS NULL "
                                   "FROM credit_grants ORDER BY id"))],
        "accounts": [tuple(r) for r in q(text("SELECT balance, version FROM accounts ORDER BY id"))],
        "events": [(t, d) for t, d in q(text(
            "SELECT type, data::text FROM outbox_events ORDER BY id"))],
        "topups": [(s, b, k.rsplit(":", 1)[0], entry_id(int(k.rsplit(":", 1)[1])))
                   for s, b, k in q(text(
                       "SELECT status, balance_at_trigger, key FROM auto_topup_attempts ORDER BY id"))],
        "replies": [(sc, k, h, st_, rs, body(b)) for sc, k, h, st_, rs, b in q(text(
            "SELECT scope, key, request_hash, status, response_status, response_body "
            "FROM idempotency_records ORDER BY scope, key"))],
    }


def _run(app, history: dict, *, sql: bool) -> tuple[list, dict]:
    """The history from an empty database: the answers and the rows."""
    app.config["API_SQL_DEBIT"] = sql
    _truncate_pg()
    app_settings.clear_cache()
    from services.staff import accounts as staff_keys
    staff_keys.forget_api_key()
    make = Factory()
    app_settings.update(key="low_balance_threshold", value=history["low_setting"], reason="test")
    app_settings.update(key="expiry_grace_hours", value=0, reason="test")
    app_settings.update(key="paid_credits_never_expire", value=True, reason="test")
    customer = make.customer(external_id=EXTERNAL_ID)
    if history["customer_threshold"] is not None:
        customer.low_balance_threshold = history["customer_threshold"]
    make.feature_price(feature="chat", credits_per_unit=1)
    make.feature_price(feature="image", credits_per_unit=7)
    if history["topup"] is not None:
        db.session.add(AutoTopup(customer_id=customer.id, enabled=True, threshold=history["topup"],
                                 package_id=make.package(credits=100).id, monthly_limit=2))
    db.session.commit()
    customer_id = customer.id
    api = ApiClient(app, make.api_key(scopes=["debits:write", "grants:write"])[1])
    base = utcnow()
    answers = []
    for i, step in enumerate(history["steps"]):
        if step[0] == "grant":
            _, credits, source, hours = step
            e = ledger.grant(customer_id=customer_id, credits=credits, source=source,
                             reason="history", actor=Actor("staff", "1"))
            if hours is not None:  # 30 minutes off every grace boundary: no step is near one
                db.session.execute(text("UPDATE credit_grants SET expires_at = :at WHERE id = :id"),
                                   {"at": base + timedelta(hours=hours, minutes=30), "id": e.grant_id})
                db.session.commit()
        elif step[0] == "setting":
            _, grace, paid_never = step
            app_settings.update(key="expiry_grace_hours", value=grace, reason="test")
            app_settings.update(key="paid_credits_never_expire", value=paid_never, reason="test")
        else:
            _, credits, feature, quantity, key, reference = step
            body = {"feature": feature, "quantity": quantity, "credits": credits,
                    "reference": reference, "metadata": {"ref": reference} if reference == "ref-b" else None}
            headers = {"X-Request-Id": f"step-{i}", **({"Idempotency-Key": key} if key else {})}
            status, answer, resp = api.post(f"/api/v1/customers/{EXTERNAL_ID}/debits",
                                            {k: v for k, v in body.items() if v is not None},
                                            headers=headers)
            answers.append((status, answer.get("code") if status >= 300 else None,
                            resp.headers.get("Idempotent-Replayed")))
        db.session.remove()
    return answers, _snapshot(base)


@pytest.fixture
def taken(monkeypatch):
    """What sqldebit.debit answered on each call (None: left to the Python path): a spy, the
    real function runs."""
    seen: list[bool] = []
    real = sqldebit.debit

    def spy(**kw):
        done = real(**kw)
        seen.append(done is not None)
        return done

    monkeypatch.setattr(sqldebit, "debit", spy)
    return seen


@settings(max_examples=40, deadline=None, phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.shrink],
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(history=HISTORY)
def test_sql_and_python_debits_write_the_same_rows(pg_app, taken, history):
    taken.clear()
    answers_sql, rows_sql = _run(pg_app, history, sql=True)
    event(f"SQL took {sum(taken)} of {len(answers_sql)} debits")
    target(sum(taken))  # steer towards histories the SQL path takes more of
    answers_py, rows_py = _run(pg_app, history, sql=False)
    assert answers_sql == answers_py
    for table in rows_py:
        assert rows_sql[table] == rows_py[table], table


def test_a_realistic_history_is_mostly_taken_in_sql_with_the_same_rows(pg_app, taken):
    """So that the property above is not vacuous: here SQL takes the everyday debits."""
    steps = [("grant", 60, "purchase", None), ("grant", 40, "promo", 20), ("grant", 30, "promo", -5)]
    steps += [("debit", None, "chat", None, None, None)] * 3
    steps += [("debit", 4, "image", 2, f"k{i}", "ref-a") for i in (1, 2, 3)]
    steps += [("debit", 4, "image", 2, "k1", "ref-a"), ("debit", 5, "image", 2, "k1", "ref-a"),
              ("setting", 0, False), ("debit", None, "image", 3, None, None),
              ("debit", None, "chat", None, "k9", None)]
    history = {"low_setting": 5, "customer_threshold": None, "topup": 10, "steps": steps}
    answers_sql, rows_sql = _run(pg_app, history, sql=True)
    answers_py, rows_py = _run(pg_app, history, sql=False)
    assert (answers_sql, rows_sql) == (answers_py, rows_py)
    assert sum(taken) >= 6, taken
    assert [a[:3] for a in answers_sql] == [(201, None, None)] * 6 + [
        (201, None, "true"), (409, "IDEMPOTENCY_KEY_REUSED", None)] + [(201, None, None)] * 2


# --- what the function takes and what it leaves to the Python path ----------------------------------

def _plain(_make, **kw):
    args = dict(external_id="sd-1", credits=None, feature="chat", quantity=None, reference=None,
                meta=None, ledger_key=None, actor=Actor("api_key", "1"), reply=None)
    return sqldebit.debit(**{**args, **kw})


def test_the_everyday_debit_is_taken_in_sql_and_the_rest_is_left(pg_app):
    make = Factory()
    cid = make.customer(external_id="sd-1", credits=1000).id
    make.feature_price(feature="chat", credits_per_unit=3)
    first = _plain(make)
    assert (first["credits"], first["balance"]) == (3, 997)
    done = _plain(make, credits=5, quantity=2, ledger_key="api-debit:k1:x")
    assert (done["entry_id"] > first["entry_id"], done["credits"], done["balance"]) == (True, 5, 992)
    # Left to the Python path, having written nothing: the key used, an unknown customer, a short
    # balance, an unpriced feature, a balance ending below the threshold (100 by default).
    for kw in ({"credits": 5, "ledger_key": "api-debit:k1:x"}, {"external_id": "nobody"},
               {"credits": 10**6}, {"feature": "unpriced"}, {"credits": 900}):
        assert _plain(make, **kw) is None, kw
    assert ledger.balance(cid) == 992
    # A bucket past its expiry: the Python path expires it first.
    e = ledger.grant(customer_id=cid, credits=10, source="promo", reason="test")
    db.session.execute(text("UPDATE credit_grants SET expires_at = :at WHERE id = :id"),
                       {"at": utcnow() - timedelta(days=1), "id": e.grant_id})
    db.session.commit()
    assert _plain(make) is None
    assert ledger.balance(cid) == 1002
