"""The chat contract over real HTTP against gunicorn (several workers): JSON and streamed.

A streamed answer is iterated after Flask tore the request down; only a real server shows it
(the test client keeps the request's context alive). Seeded rows are committed before the
server reads them; the database is read back after each step.
"""
from __future__ import annotations

import math
import time

import requests

from services.tasks.runner import metering
from tests.live import bearer
from tests.server.conftest import eventually, sse, task_entries, task_row

HELLO = [{"role": "user", "content": "hello there"}]
# services.tasks.runner.metering at 1 credit per token: prompt ceil(11/3) + 4 + 3 = 11 tokens estimated,
# + max_tokens. The fake counts words: prompt "hello there" = 2 + 3 + 3 = 8 tokens.
PROMPT_ESTIMATE = 11


def held(max_tokens: int) -> int:
    return PROMPT_ESTIMATE + max_tokens


def test_chat_json_and_streams_settle_once_over_real_http(live, make):
    _, key = make.api_key()
    make.feature_price(feature="chat", credits_per_unit=1, unit="token")
    make.customer(external_id="chat_1", credits=1000)
    server = live(workers=2)
    ai = server.ai
    url = "/api/v1/customers/chat_1/chat"

    # JSON: settled on the tokens used; the API request id reaches the provider.
    got = server.post(url, json={"messages": HELLO, "max_tokens": 50},
                      headers=bearer(key, **{"X-Request-Id": "contract-chat-json"}))
    assert got.status_code == 200, got.text
    data = got.json()["data"]
    assert (data["credits_charged"], data["credits_refunded"], data["balance"]) == \
        (11, held(50) - 11, 1000 - 11)
    assert ai.last_request.header("X-Request-Id") == "contract-chat-json"
    assert task_entries(data["task_id"]) == [("debit", -held(50)), ("refund", held(50) - 11)]
    balance = data["balance"]

    # Streamed: deltas arrive one by one while the provider is still writing.
    words = [f"w{i}" for i in range(8)]
    ai.reply_text, ai.stream_delay = " ".join(words), 0.15
    started = time.monotonic()
    with server.post(url, json={"messages": HELLO, "max_tokens": 50, "stream": True}, stream=True,
                     headers=bearer(key, **{"X-Request-Id": "contract-chat-sse"})) as resp:
        assert resp.status_code == 200 and resp.headers["Content-Type"].startswith(
            "text/event-stream"), resp.text
        events, arrived = [], []
        for event in sse(resp):
            events.append(event)
            arrived.append(time.monotonic() - started)
    assert [e for e, _ in events] == ["delta"] * 8 + ["done"], server.log()[-3000:]
    assert "".join(d["content"] for e, d in events if e == "delta") == " ".join(words)
    # 12 provider events x 0.15 s: buffered, the first delta would come with the last one.
    assert arrived[-1] - arrived[0] > 0.8, arrived
    assert ai.last_request.header("X-Request-Id") == "contract-chat-sse"
    done = events[-1][1]
    actual = 8 + len(words)
    assert (done["credits_charged"], done["credits_refunded"], done["balance"]) == \
        (actual, held(50) - actual, balance - actual)
    assert task_entries(done["task_id"]) == [("debit", -held(50)), ("refund", held(50) - actual)]
    assert task_row(done["task_id"]).status == "succeeded"
    balance = done["balance"]

    # The provider breaks after two words: an `error` event, the hold refunded in full.
    ai.reply_text, ai.stream_delay, ai.drop_stream_after = "one two three four", 0.0, 2
    with server.post(url, json={"messages": HELLO, "max_tokens": 50, "stream": True},
                     stream=True, headers=bearer(key)) as resp:
        events = list(sse(resp))
    assert [e for e, _ in events] == ["delta", "delta", "error"]
    err = events[-1][1]
    assert (err["success"], err["code"], err["retryable"]) == (False, "AI_PROVIDER_ERROR", True)
    assert task_entries(err["details"]["task_id"]) == [("debit", -held(50)), ("refund", held(50))]

    # Checks fail before the stream starts: a JSON envelope, never HTML.
    poor = server.post("/api/v1/customers/nobody/chat", stream=True, headers=bearer(key),
                       json={"messages": HELLO, "stream": True})
    assert poor.status_code == 404 and poor.json()["code"] == "CUSTOMER_NOT_FOUND"

    # A client that hangs up mid-stream pays for what was sent; the rest comes back at once.
    reply = " ".join(f"word{i}" for i in range(80))
    ai.reply_text, ai.stream_delay = reply, 0.03
    hangup = requests.Session()  # its own connection, closed under the server's feet
    resp = hangup.post(server.url + url, json={"messages": HELLO, "max_tokens": 200,
                                               "stream": True}, headers=bearer(key), stream=True,
                       timeout=30)
    stream = sse(resp)
    first = [next(stream), next(stream)]
    assert [e for e, _ in first] == ["delta", "delta"]
    resp.close()  # closes the socket mid-body, as a closed browser tab does
    hangup.close()
    task_id = max(t for t in _chat_tasks())
    task = eventually(lambda: (t := task_row(task_id)).status != "processing" and t, timeout=15)
    assert task and task.status == "succeeded", server.log()[-3000:]
    assert task.output["abandoned"] is True and 0 < task.output["characters"] < len(reply)
    assert task.actual_credits == PROMPT_ESTIMATE + math.ceil(task.output["characters"] / 3)
    assert task.actual_credits < metering.estimate_text_tokens(reply) + PROMPT_ESTIMATE
    assert task_entries(task_id) == [("debit", -held(200)),
                                     ("refund", held(200) - task.actual_credits)]
    again = server.get("/api/v1/customers/chat_1", headers=bearer(key)).json()["data"]
    assert again["balance"] == balance - task.actual_credits
    assert "Traceback" not in server.log(), server.log()[-3000:]


def _chat_tasks() -> list[int]:
    from sqlalchemy import select

    from models import Task, db
    db.session.rollback()
    return list(db.session.scalars(select(Task.id).where(Task.type == "chat")))
