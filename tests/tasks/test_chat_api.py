"""POST /api/v1/customers/{id}/chat against fake OpenAI-compatible servers over real HTTP:
hold an estimate, settle the actual tokens, refund the rest; fallback; refunds on failure."""
from __future__ import annotations

from models import Task, db
from services.ledger import posting as ledger
from services.ledger import reconcile
from tests.api.helpers import counts
from tests.helpers import ApiClient, assert_error
from tests.tasks.helpers import ACTUAL, HELD, HELLO, chat_url, entries_of, log_messages, setup


def test_chat_settles_the_actual_tokens_and_refunds_the_rest(api, ai, make):
    c = setup(make)
    status, body, _ = api.post(chat_url(), {"messages": HELLO, "max_tokens": 50})
    assert status == 200, body
    data = body["data"]
    assert data["message"] == {"role": "assistant", "content": "Echo: hello there"}
    assert (data["credits_charged"], data["credits_refunded"], data["balance"]) == \
        (ACTUAL, HELD - ACTUAL, 1000 - ACTUAL)
    assert data["usage"] == {"prompt_tokens": 8, "completion_tokens": 3, "total_tokens": 11}
    assert (data["provider"], data["cached"], data["finish_reason"]) == ("primary", False, "stop")
    assert entries_of(data["task_id"]) == [("debit", -HELD), ("refund", HELD - ACTUAL)]
    task = db.session.get(Task, data["task_id"])
    assert (task.type, task.status, task.provider, task.actual_credits) == \
        ("chat", "succeeded", "primary", ACTUAL)
    assert "content" not in task.output and task.input["characters"] == 11  # no prompt kept
    sent = ai.primary.last_request.body
    assert (sent["max_tokens"], sent["model"], sent["messages"]) == (50, "primary-chat", HELLO)
    assert ledger.balance(c.id) == 1000 - ACTUAL
    assert reconcile.run().ok


def test_the_estimate_uses_the_default_max_tokens_and_the_model_price(api, ai, app, make):
    app.config["AI_CHAT_DEFAULT_MAX_TOKENS"] = 100
    setup(make)
    make.feature_price(feature="chat:big-model", credits_per_unit=3, unit="1k tokens")
    data = api.post(chat_url(), {"messages": HELLO, "model": "big-model"})[1]["data"]
    # held ceil((11 + 100) x 3 / 1000) = 1; used ceil(11 x 3 / 1000) = 1
    assert (data["credits_charged"], data["credits_refunded"]) == (1, 0)
    task = db.session.get(Task, data["task_id"])
    assert task.type == "chat:big-model" and task.charged_credits == 1
    assert ai.primary.last_request.body["model"] == "big-model"
    assert ai.primary.last_request.body["max_tokens"] == 100


def test_no_credits_no_call(api, ai, make):
    setup(make, credits=HELD - 1)
    before = counts()
    status, body, _ = api.post(chat_url(), {"messages": HELLO, "max_tokens": 50})
    assert_error(status, body, "INSUFFICIENT_CREDITS", 402)
    assert ai.primary.requests == [] and counts() == before


def test_primary_down_the_fallback_answers(api, ai, make):
    setup(make)
    ai.primary.fail_next(1, 503)
    data = api.post(chat_url(), {"messages": HELLO, "max_tokens": 50})[1]["data"]
    assert (data["provider"], data["fallback_from"]) == ("fallback", ["primary"])
    assert data["credits_charged"] == ACTUAL
    assert db.session.get(Task, data["task_id"]).provider == "fallback"
    logs = log_messages(data["task_id"])
    assert any(m.startswith("primary failed") for m in logs) and "served by fallback" in logs


def test_both_down_full_refund_and_a_retryable_502(api, ai, make):
    c = setup(make)
    ai.primary.fail_next(1, 500)
    ai.fallback.fail_next(1, drop=True)
    status, body, _ = api.post(chat_url(), {"messages": HELLO, "max_tokens": 50})
    assert_error(status, body, "AI_PROVIDER_ERROR", 502, retryable=True)
    assert [p["provider"] for p in body["details"]["providers"]] == ["primary", "fallback"]
    assert body["details"]["balance"] == 1000 and ledger.balance(c.id) == 1000
    task = db.session.get(Task, body["details"]["task_id"])
    assert (task.status, task.refunded_credits) == ("failed", HELD)
    assert entries_of(task.id) == [("debit", -HELD), ("refund", HELD)]
    assert reconcile.run().ok


def test_a_provider_refusal_is_not_retried_elsewhere(api, ai, make):
    setup(make)
    ai.primary.fail_next(1, 400, body={"error": {"message": "maximum context length exceeded"}})
    status, body, _ = api.post(chat_url(), {"messages": HELLO, "max_tokens": 50})
    assert_error(status, body, "AI_PROVIDER_ERROR", 502, retryable=False)
    assert "maximum context length" in body["error"] and ai.fallback.requests == []


def test_validation_auth_and_configuration_errors(api, api_as, ai, app, make):
    setup(make)
    bad = [{"messages": []}, {"messages": [{"role": "robot", "content": "x"}]},
           {"messages": HELLO, "max_tokens": 0}, {"messages": HELLO, "max_tokens": "5"},
           {"messages": HELLO, "temperature": 1}, {"messages": HELLO, "model": "a b"},
           {"messages": [{"role": "user", "content": "x" * 32_001}]}]
    for body in bad:
        assert_error(*api.post(chat_url(), body)[:2], "VALIDATION_ERROR", 422)
    assert_error(*api.post(chat_url("nobody"), {"messages": HELLO})[:2], "CUSTOMER_NOT_FOUND", 404)
    assert_error(*api_as("debits:write").post(chat_url(), {"messages": HELLO})[:2],
                 "AUTH_FORBIDDEN", 403)
    assert_error(*ApiClient(app, None).post(chat_url(), {"messages": HELLO})[:2],
                 "AUTH_UNAUTHORIZED", 401)
    app.config["AI_PROVIDERS"] = []
    assert_error(*api.post(chat_url(), {"messages": HELLO})[:2], "AI_NOT_CONFIGURED", 503)
    assert ai.primary.requests == []


def test_an_unpriced_chat_is_refused(api, ai, make):
    make.customer(external_id="u1", credits=100)
    assert_error(*api.post(chat_url(), {"messages": HELLO})[:2], "VALIDATION_ERROR", 422)


def test_idempotency_key_replays_the_answer_without_a_second_call(api, ai, make):
    c = setup(make)
    body = {"messages": HELLO, "max_tokens": 50}
    first = api.post(chat_url(), body, headers={"Idempotency-Key": "chat-1"})
    second = api.post(chat_url(), body, headers={"Idempotency-Key": "chat-1"})
    assert first[1] == second[1] and second[2].headers["Idempotent-Replayed"] == "true"
    assert len(ai.primary.requests) == 1 and ledger.balance(c.id) == 1000 - ACTUAL


def test_openapi_documents_the_chat_route(api, client):
    doc = client.get("/api/openapi.json").get_json()
    op = doc["paths"]["/api/v1/customers/{external_id}/chat"]["post"]
    assert op["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith("/ChatIn")
    assert {"402", "502", "503"} <= set(op["responses"]) and op["x-scopes"] == ["tasks:write"]
    assert {"messages", "model", "max_tokens", "stream"} == \
        set(doc["components"]["schemas"]["ChatIn"]["properties"])


def test_chat_is_rate_limited_like_the_other_routes(tmp_path, fakes):
    from models import db as _db
    from tests.conftest import build_app
    from tests.factories import Factory

    app = build_app(f"sqlite:///{tmp_path / 'rl.sqlite3'}", RATELIMIT_ENABLED=True,
                    API_KEY_RATE_LIMIT="2 per minute")
    fakes.configure(app)
    with app.app_context():
        _db.create_all()
        make = Factory()
        setup(make)
        client = ApiClient(app, make.api_key()[1])
        codes = [client.post(chat_url(), {"messages": HELLO, "max_tokens": 5})[0] for _ in range(3)]
        assert codes == [200, 200, 429]
        assert len(fakes.primary.requests) == 2
        _db.session.remove()
        _db.engine.dispose()
