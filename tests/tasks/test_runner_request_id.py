"""X-Request-Id reaches the AI provider: the API request that caused a call is named in it, so
the provider's logs join ours. Chat calls carry the chat request's id; runner calls carry the id
of the request that created (charged) the task. Also: usage above the estimate is recorded."""
from __future__ import annotations

from models import Task, db
from services.tasks import prepaid as tasks
from services.tasks.runner import loops
from tests.tasks.helpers import HELLO, chat_input, chat_url, fresh, setup


def test_chat_calls_carry_the_api_request_id(api, ai, make):
    setup(make)
    status, _, resp = api.post(chat_url(), {"messages": HELLO, "max_tokens": 50},
                               headers={"X-Request-Id": "req-chat-json"})
    assert status == 200 and resp.headers["X-Request-Id"] == "req-chat-json"
    assert ai.primary.last_request.header("X-Request-Id") == "req-chat-json"
    resp = api.client.post(chat_url(), json={"messages": HELLO, "max_tokens": 50, "stream": True},
                           headers=api.headers({"X-Request-Id": "req-chat-sse"}))
    assert "event: done" in resp.get_data(as_text=True)
    assert ai.primary.last_request.header("X-Request-Id") == "req-chat-sse"
    # Without one, the server's own id goes along (the one it answered in X-Request-Id).
    _, _, resp = api.post(chat_url(), {"messages": HELLO, "max_tokens": 40})
    assert ai.primary.last_request.header("X-Request-Id") == resp.headers["X-Request-Id"]


def test_runner_calls_carry_the_id_of_the_request_that_created_the_task(api, ai, make):
    make.customer(external_id="rq", credits=1000)
    make.feature_price(feature="chat", credits_per_unit=1, unit="token")
    make.feature_price(feature="video", credits_per_unit=5, unit="second")
    sync = api.post("/api/v1/tasks", {"customer": "rq", "type": "chat", "estimated_credits": 100,
                                      "input": chat_input()},
                    headers={"X-Request-Id": "req-task-sync"})[1]["data"]["task_id"]
    video = api.post("/api/v1/tasks", {"customer": "rq", "type": "video", "mode": "async",
                                       "estimated_credits": 50, "input": {"prompt": "waves"}},
                     headers={"X-Request-Id": "req-task-video"})[1]["data"]["task_id"]
    quiet = tasks.create(customer_id=db.session.get(Task, sync).customer_id, type="chat",
                         estimated_credits=100, input=chat_input()).id  # no request at all

    assert loops.run_main().claimed == 3
    assert loops.run_query().succeeded == 1
    seen = {}
    for r in ai.primary.answered("POST", "/v1/") + ai.primary.answered("GET", "/v1/"):
        task_id = int(r.header("X-Client-Request-Id").split("-")[2])
        seen.setdefault(task_id, set()).add(r.header("X-Request-Id"))
    assert seen == {sync: {"req-task-sync"}, video: {"req-task-video"}, quiet: {None}}
    assert fresh(video).status == "succeeded"


def test_usage_above_the_estimate_is_kept_next_to_the_capped_charge(ai, make):
    c = make.customer(credits=1000)
    make.feature_price(feature="chat", credits_per_unit=1, unit="token")
    t = tasks.create(customer_id=c.id, type="chat", estimated_credits=5, input=chat_input())
    assert loops.run_main().succeeded == 1
    task = fresh(t.id)
    # The fake counts 11 tokens; 5 were charged up front and nothing more is taken.
    assert (task.actual_credits, task.usage_credits, task.refunded_credits) == (5, 11, 0)
