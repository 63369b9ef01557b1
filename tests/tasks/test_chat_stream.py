"""Streamed chat (server-sent events) and the prompt cache, against the fake OpenAI servers."""
from __future__ import annotations

import math

from sqlalchemy import select

from models import LedgerEntry, PromptCache, Task, db
from services.ledger import posting as ledger
from services.ledger import reconcile
from services.tasks import chat
from tests.helpers import assert_error
from tests.tasks.helpers import ACTUAL, HELD, HELLO, chat_url, entries_of, log_messages, setup, sse_events


def stream(api, body: dict, headers: dict | None = None):
    resp = api.client.post(chat_url(), json=body, headers=api.headers(headers))
    return resp, sse_events(resp.get_data(as_text=True)) if resp.status_code == 200 else []


def test_a_stream_sends_deltas_then_settles_the_actual_tokens_before_done(api, ai, make):
    c = setup(make)
    resp, events = stream(api, {"messages": HELLO, "max_tokens": 50, "stream": True})
    assert resp.status_code == 200 and resp.mimetype == "text/event-stream"
    assert [e for e, _ in events] == ["delta", "delta", "delta", "done"]
    assert "".join(d["content"] for e, d in events if e == "delta") == "Echo: hello there"
    done = events[-1][1]
    assert (done["credits_charged"], done["credits_refunded"], done["balance"]) == \
        (ACTUAL, HELD - ACTUAL, 1000 - ACTUAL)
    assert done["usage"] == {"prompt_tokens": 8, "completion_tokens": 3, "total_tokens": 11}
    sent = ai.primary.last_request.body
    assert sent["stream"] is True and sent["stream_options"] == {"include_usage": True}
    assert entries_of(done["task_id"]) == [("debit", -HELD), ("refund", HELD - ACTUAL)]
    assert db.session.get(Task, done["task_id"]).input["stream"] is True
    assert ledger.balance(c.id) == 1000 - ACTUAL and reconcile.run().ok


def test_accept_event_stream_asks_for_a_stream_too(api, ai, make):
    setup(make)
    resp, events = stream(api, {"messages": HELLO, "max_tokens": 50},
                          headers={"Accept": "text/event-stream"})
    assert resp.mimetype == "text/event-stream" and events[-1][0] == "done"


def test_checks_happen_before_the_stream_starts(api, ai, make):
    setup(make, credits=10)
    resp = api.client.post(chat_url(), json={"messages": HELLO, "max_tokens": 50, "stream": True},
                           headers=api.headers())
    assert_error(resp.status_code, resp.get_json(), "INSUFFICIENT_CREDITS", 402)
    assert ai.primary.requests == []


def test_a_failure_before_the_first_token_falls_back(api, ai, make):
    setup(make)
    ai.primary.fail_next(1, 502)
    _, events = stream(api, {"messages": HELLO, "max_tokens": 50, "stream": True})
    done = events[-1][1]
    assert events[-1][0] == "done" and (done["provider"], done["fallback_from"]) == \
        ("fallback", ["primary"])
    assert "".join(d["content"] for e, d in events if e == "delta") == "Echo: hello there"


def test_a_stream_broken_half_way_is_refunded_in_full(api, ai, make):
    c = setup(make)
    ai.primary.drop_stream_after = 1
    _, events = stream(api, {"messages": HELLO, "max_tokens": 50, "stream": True})
    assert [e for e, _ in events] == ["delta", "error"]
    err = events[-1][1]
    assert (err["code"], err["retryable"], err["success"]) == ("AI_PROVIDER_ERROR", True, False)
    assert ai.fallback.requests == []  # the client had part of an answer: no switching
    task = db.session.get(Task, err["details"]["task_id"])
    assert (task.status, task.refunded_credits) == ("failed", HELD)
    assert ledger.balance(c.id) == 1000 and reconcile.run().ok


def test_a_client_that_hangs_up_pays_for_what_it_was_sent(api, ai, make):
    c = setup(make)
    resp = api.client.post(chat_url(), json={"messages": HELLO, "max_tokens": 50, "stream": True},
                           headers=api.headers(), buffered=False)
    first = next(iter(resp.response))
    assert b"event: delta" in first and b'"Echo:"' in first
    resp.close()
    db.session.rollback()
    task = db.session.scalar(select(Task).order_by(Task.id.desc()))
    # prompt estimate 11 tokens + ceil(len("Echo:") / 3) = 2
    assert (task.status, task.actual_credits, task.refunded_credits) == ("succeeded", 13, HELD - 13)
    assert task.output == {"abandoned": True, "characters": 5}
    assert "client disconnected mid-stream; charged the text sent" in log_messages(task.id)
    assert ledger.balance(c.id) == 1000 - 13


def test_the_stream_outlives_the_session_of_its_request(app, ai, make):
    """A WSGI server iterates the body after Flask tore the request down (and removed its
    session): the iterator must hold no ORM object (tests/server/ proves it under gunicorn)."""
    customer_id = setup(make).id
    with app.test_request_context():
        events = chat.stream(external_id="u1", messages=HELLO, max_tokens=50)
    db.session.remove()
    out = list(events)
    assert [e for e, _ in out] == ["delta", "delta", "delta", "done"]
    assert entries_of(out[-1][1]["task_id"]) == [("debit", -HELD), ("refund", HELD - ACTUAL)]
    assert ledger.balance(customer_id) == 1000 - ACTUAL


def test_an_error_of_ours_mid_stream_is_an_error_event_and_a_full_refund(api, ai, make,
                                                                         monkeypatch):
    c = setup(make)

    def broken(*_a, **_k):
        raise RuntimeError("a bug in settlement")
    monkeypatch.setattr(chat, "_settle", broken)  # fault injection: no real path breaks here
    resp, events = stream(api, {"messages": HELLO, "max_tokens": 50, "stream": True})
    assert resp.status_code == 200 and [e for e, _ in events][-1] == "error"
    err = events[-1][1]
    assert (err["success"], err["code"], err["retryable"]) == (False, "INTERNAL_ERROR", True)
    assert err["error"].endswith("the hold was refunded.")
    task = db.session.get(Task, err["details"]["task_id"])
    db.session.refresh(task)
    assert (task.status, task.refunded_credits) == ("failed", HELD)
    assert ledger.balance(c.id) == 1000 and reconcile.run().ok


def test_a_stream_key_is_spent_once_per_api_key(api, api_as, ai, make):
    c = setup(make)
    body = {"messages": HELLO, "max_tokens": 50, "stream": True}
    assert stream(api, body, {"Idempotency-Key": "s-1"})[1][-1][0] == "done"
    resp = api.client.post(chat_url(), json=body, headers=api.headers({"Idempotency-Key": "s-1"}))
    assert_error(resp.status_code, resp.get_json(), "CONFLICT", 409)
    assert len(ai.primary.requests) == 1 and ledger.balance(c.id) == 1000 - ACTUAL
    # Another API key's "s-1" is its own.
    assert stream(api_as("tasks:write"), body, {"Idempotency-Key": "s-1"})[1][-1][0] == "done"
    assert ledger.balance(c.id) == 1000 - 2 * ACTUAL


# --- the prompt cache ---------------------------------------------------------------------------

def test_a_cache_hit_answers_without_a_call_and_is_charged_by_the_rule(api, ai, app, make):
    app.config.update(AI_CHAT_CACHE_TTL_SECONDS=3600, AI_CHAT_CACHE_HIT_PERCENT=50)
    c = setup(make)
    first = api.post(chat_url(), {"messages": HELLO, "max_tokens": 50})[1]["data"]
    assert first["cached"] is False
    # Same prompt once whitespace and case are normalized: a hit.
    again = [{"role": "user", "content": "  Hello   THERE "}]
    hit = api.post(chat_url(), {"messages": again, "max_tokens": 50})[1]["data"]
    assert (hit["cached"], hit["provider"], hit["task_id"]) == (True, "cache", None)
    assert hit["message"]["content"] == "Echo: hello there"
    assert hit["credits_charged"] == math.ceil(ACTUAL * 50 / 100) == 6
    assert len(ai.primary.requests) == 1
    entry = db.session.scalar(select(LedgerEntry).order_by(LedgerEntry.id.desc()))
    row = db.session.scalar(select(PromptCache))
    assert (entry.type, entry.amount, entry.feature, entry.reference) == \
        ("debit", -6, "chat", f"prompt-cache:{row.id}")
    assert ledger.balance(c.id) == 1000 - ACTUAL - 6
    assert chat.cache_stats() == {"entries": 1, "hits": 1}
    # A streamed request is served from the cache too.
    _, events = stream(api, {"messages": HELLO, "max_tokens": 50, "stream": True})
    assert [e for e, _ in events] == ["delta", "done"] and events[-1][1]["cached"] is True
    assert chat.cache_stats()["hits"] == 2 and len(ai.primary.requests) == 1
    # Another model or another max_tokens is another prompt.
    api.post(chat_url(), {"messages": HELLO, "max_tokens": 40})
    assert len(ai.primary.requests) == 2
    assert reconcile.run().ok


def test_a_hit_needs_credits_and_a_refused_hit_is_not_counted(api, ai, app, make):
    app.config.update(AI_CHAT_CACHE_TTL_SECONDS=3600, AI_CHAT_CACHE_HIT_PERCENT=100)
    setup(make, credits=HELD)
    api.post(chat_url(), {"messages": HELLO, "max_tokens": 50})
    setup_other = make.customer(external_id="poor", credits=5)
    status, body, _ = api.post(chat_url("poor"), {"messages": HELLO, "max_tokens": 50})
    assert_error(status, body, "INSUFFICIENT_CREDITS", 402)
    assert chat.cache_stats()["hits"] == 0 and ledger.balance(setup_other.id) == 5


def test_a_free_hit_rule_charges_nothing_but_counts(api, ai, app, make):
    app.config.update(AI_CHAT_CACHE_TTL_SECONDS=3600, AI_CHAT_CACHE_HIT_PERCENT=0)
    c = setup(make)
    api.post(chat_url(), {"messages": HELLO, "max_tokens": 50})
    hit = api.post(chat_url(), {"messages": HELLO, "max_tokens": 50})[1]["data"]
    assert (hit["cached"], hit["credits_charged"], hit["balance"]) == (True, 0, 1000 - ACTUAL)
    assert chat.cache_stats()["hits"] == 1 and ledger.balance(c.id) == 1000 - ACTUAL


def test_the_cache_is_off_by_default_and_truncated_answers_are_not_kept(api, ai, app, make):
    setup(make)
    api.post(chat_url(), {"messages": HELLO, "max_tokens": 50})
    api.post(chat_url(), {"messages": HELLO, "max_tokens": 50})
    assert len(ai.primary.requests) == 2 and chat.cache_stats() == {"entries": 0, "hits": 0}
    app.config["AI_CHAT_CACHE_TTL_SECONDS"] = 3600
    api.post(chat_url(), {"messages": HELLO, "max_tokens": 2})  # finish_reason "length"
    assert chat.cache_stats()["entries"] == 0
