"""The task runner against fake OpenAI-compatible servers over real HTTP (SQLite and PostgreSQL):
sync and async lifecycles, fallback, retries with backoff, refunds, exactly-once settlement."""
from __future__ import annotations

from datetime import timedelta

from sqlalchemy import text

from models import Task, db, utcnow
from services.ledger import posting as ledger
from services.ledger import reconcile
from services.tasks import prepaid as tasks
from services.tasks.runner import loops
from tests.tasks.helpers import chat_input, entries_of, fresh, log_messages


def test_sync_chat_task_runs_once_and_settles_the_actual_tokens(ai, make):
    c = make.customer(credits=1000)
    make.feature_price(feature="chat", credits_per_unit=1, unit="token")
    t = tasks.create(customer_id=c.id, type="chat", estimated_credits=100, input=chat_input())

    out = loops.run_main()
    assert (out.claimed, out.succeeded, out.failed) == (1, 1, 0)
    task = fresh(t.id)
    # The fake counts words: prompt (2 words + 3) + 3 = 8, answer "Echo: hello there" = 3.
    assert (task.status, task.actual_credits, task.refunded_credits) == ("succeeded", 11, 89)
    assert (task.provider, task.attempts) == ("primary", 1)
    assert task.output["content"] == "Echo: hello there"
    assert task.output["usage"] == {"prompt_tokens": 8, "completion_tokens": 3, "total_tokens": 11}
    assert entries_of(t.id) == [("debit", -100), ("refund", 89)]
    assert ledger.balance(c.id) == 1000 - 11
    assert ai.primary.calls_per_task() == {t.id: 1} and ai.fallback.requests == []
    sent = ai.primary.last_request
    assert sent.header("Authorization") == f"Bearer {ai.primary.api_key}"
    assert sent.body["model"] == "primary-chat" and sent.body["messages"][0]["content"] == "hello there"
    assert "served by primary" in log_messages(t.id)
    assert loops.run_main().claimed == 0  # nothing left: a finished task is never run again
    assert reconcile.run().ok


def test_image_task_is_priced_per_image(ai, make):
    c = make.customer(credits=100)
    make.feature_price(feature="image", credits_per_unit=5, unit="image")
    t = tasks.create(customer_id=c.id, type="image", estimated_credits=30,
                     input={"prompt": "a red fox", "n": 2, "size": "512x512"})
    loops.run_main()
    task = fresh(t.id)
    assert (task.status, task.actual_credits, task.refunded_credits) == ("succeeded", 10, 20)
    assert len(task.output["images"]) == 2 and task.output["images"][0].startswith(ai.primary.url)
    assert ai.primary.last_request.body == {"model": "primary-image", "prompt": "a red fox", "n": 2,
                                            "size": "512x512"}


def test_async_video_task_is_submitted_polled_and_settled(ai, make):
    c = make.customer(credits=200)
    make.feature_price(feature="video", credits_per_unit=5, unit="second")
    t = tasks.create(customer_id=c.id, type="video", mode="async", estimated_credits=50,
                     input={"prompt": "waves at dusk", "seconds": 4})
    ai.primary.polls_to_finish = 2

    out = loops.run_main()
    assert (out.claimed, out.submitted) == (1, 1)
    task = fresh(t.id)
    assert task.status == "processing" and task.external_task_id.startswith("video_")
    assert task.provider == "primary" and task.external_task_id in ai.primary.jobs
    assert f"submitted to primary as {task.external_task_id}" in log_messages(t.id)

    first = loops.run_query()
    assert (first.running, first.succeeded) == (1, 0) and fresh(t.id).status == "processing"
    second = loops.run_query()
    assert second.succeeded == 1
    task = fresh(t.id)
    assert (task.status, task.actual_credits, task.refunded_credits) == ("succeeded", 20, 30)
    assert task.output["video_id"] == task.external_task_id
    assert task.output["content_url"].endswith(f"/v1/videos/{task.external_task_id}/content")
    assert ledger.balance(c.id) == 180
    assert loops.run_query().claimed == 0
    assert len(ai.primary.answered("POST", "/v1/videos")) == 1
    assert len(ai.primary.answered("GET", "/v1/videos/")) == 2


def test_async_chat_job_that_fails_at_the_provider_is_refunded(ai, make):
    c = make.customer(credits=100)
    ai.primary.fail_jobs = True
    t = tasks.create(customer_id=c.id, type="chat", mode="async", estimated_credits=40,
                     input=chat_input("summarise this"))
    loops.run_main()
    task = fresh(t.id)
    assert task.external_task_id.startswith("resp_")
    # server_error is retryable: resubmitted until AI_TASK_MAX_ATTEMPTS, then refunded.
    for _ in range(3):
        loops.run_query()
        loops.run_main()
    task = fresh(t.id)
    assert (task.status, task.attempts, task.refunded_credits) == ("failed", 3, 40)
    assert "The job failed at the provider." in task.error
    assert ledger.balance(c.id) == 100
    assert len(ai.primary.answered("POST", "/v1/responses")) == 3
    assert reconcile.run().ok


def test_async_chat_job_succeeds_with_usage_tokens(ai, make):
    c = make.customer(credits=100)
    make.feature_price(feature="chat", credits_per_unit=1, unit="token")
    t = tasks.create(customer_id=c.id, type="chat", mode="async", estimated_credits=40,
                     input={"prompt": "two words"})
    loops.run_main()
    loops.run_query()
    task = fresh(t.id)
    body = ai.primary.answered("POST", "/v1/responses")[0].body
    assert body["background"] is True and body["input"] == [{"role": "user", "content": "two words"}]
    # The fake counts the words of the input's JSON and of its answer "Echo: <that JSON>".
    assert task.status == "succeeded" and task.output["content"].startswith("Echo: ")
    assert task.actual_credits == task.output["usage"]["total_tokens"]
    assert ledger.balance(c.id) == 100 - task.actual_credits


def test_primary_failure_falls_back_and_the_log_says_who_served(ai, make):
    c = make.customer(credits=100)
    t = tasks.create(customer_id=c.id, type="chat", estimated_credits=10, input=chat_input())
    ai.primary.fail_next(1, 503)
    out = loops.run_main()
    assert out.succeeded == 1
    task = fresh(t.id)
    assert (task.status, task.provider, task.attempts) == ("succeeded", "fallback", 1)
    messages = log_messages(t.id)
    assert any(m.startswith("primary failed:") for m in messages)
    assert "fallback: fallback took over from primary" in messages
    assert "served by fallback" in messages
    assert ai.fallback.calls_per_task() == {t.id: 1} and ai.primary.calls_per_task() == {}


def test_a_dropped_connection_is_retryable_too(ai, make):
    c = make.customer(credits=100)
    t = tasks.create(customer_id=c.id, type="chat", estimated_credits=10, input=chat_input())
    ai.primary.fail_next(1, drop=True)
    loops.run_main()
    assert fresh(t.id).provider == "fallback" and fresh(t.id).status == "succeeded"


def test_a_non_retryable_error_fails_at_once_without_fallback(ai, make):
    c = make.customer(credits=100)
    t = tasks.create(customer_id=c.id, type="chat", estimated_credits=10, input=chat_input())
    ai.primary.fail_next(1, 400, body={"error": {"message": "content policy", "type": "invalid"}})
    out = loops.run_main()
    assert (out.failed, out.retried) == (1, 0)
    task = fresh(t.id)
    assert (task.status, task.refunded_credits, task.attempts) == ("failed", 10, 1)
    assert "content policy" in task.error and "not retryable" in task.error
    assert ai.fallback.requests == [] and ledger.balance(c.id) == 100


def test_both_providers_failing_retries_then_refunds_in_full(ai, make):
    c = make.customer(credits=100)
    t = tasks.create(customer_id=c.id, type="chat", estimated_credits=25, input=chat_input())
    ai.primary.fail_next(3, 500)
    ai.fallback.fail_next(3, 429)
    out = loops.run_main()
    assert (out.claimed, out.retried, out.failed) == (3, 2, 1)
    task = fresh(t.id)
    assert (task.status, task.attempts, task.refunded_credits, task.actual_credits) == \
        ("failed", 3, 25, 0)
    assert "after 3 attempt(s)" in task.error
    assert entries_of(t.id) == [("debit", -25), ("refund", 25)]
    assert ledger.balance(c.id) == 100
    assert len(ai.primary.requests) == 3 and len(ai.fallback.requests) == 3
    heads = [r.header("X-Client-Request-Id") for r in ai.primary.requests]
    assert heads == [f"creditdesk-task-{t.id}-{n}" for n in (1, 2, 3)]
    retries = [m for m in log_messages(t.id) if "retry in" in m]
    assert retries == ["attempt 1 of 3 failed; retry in 0 s", "attempt 2 of 3 failed; retry in 0 s"]
    assert reconcile.run().ok


def test_a_retry_waits_for_its_backoff(ai, app, make):
    app.config.update(AI_RETRY_BASE_SECONDS=30, AI_RETRY_MAX_SECONDS=45)
    c = make.customer(credits=100)
    t = tasks.create(customer_id=c.id, type="chat", estimated_credits=10, input=chat_input())
    ai.primary.fail_next(1, 500)
    ai.fallback.fail_next(1, 500)
    before = utcnow()
    assert loops.run_main().retried == 1
    task = fresh(t.id)
    assert task.status == "pending" and task.next_attempt_at >= before + timedelta(seconds=30)
    assert loops.settings().backoff(1) == 30 and loops.settings().backoff(2) == 45  # capped
    assert loops.run_main().claimed == 0  # not due yet
    db.session.execute(text("UPDATE tasks SET next_attempt_at = :t WHERE id = :i"),
                       {"t": utcnow() - timedelta(seconds=1), "i": t.id})
    db.session.commit()
    assert loops.run_main().succeeded == 1
    assert (fresh(t.id).status, fresh(t.id).attempts) == ("succeeded", 2)


def test_claim_order_is_priority_then_age_and_only_runnable_types(ai, make):
    c = make.customer(credits=1000)
    old = tasks.create(customer_id=c.id, type="chat", estimated_credits=1, input=chat_input())
    urgent = tasks.create(customer_id=c.id, type="chat", estimated_credits=1, priority=5,
                          input=chat_input())
    newer = tasks.create(customer_id=c.id, type="chat", estimated_credits=1, input=chat_input())
    foreign = tasks.create(customer_id=c.id, type="lip-sync", estimated_credits=1)
    family = tasks.create(customer_id=c.id, type="chat:gpt-4o", estimated_credits=1,
                          input=chat_input())
    overdue = tasks.create(customer_id=c.id, type="chat", estimated_credits=1, input=chat_input())
    db.session.execute(text("UPDATE tasks SET deadline_at = :t WHERE id = :i"),
                       {"t": utcnow() - timedelta(seconds=1), "i": overdue.id})
    db.session.commit()
    assert loops.claim(limit=1) == [urgent.id]
    assert loops.claim(limit=10) == [old.id, newer.id, family.id]
    assert fresh(foreign.id).status == "pending"  # a type the runner does not know: the product's
    assert fresh(overdue.id).status == "pending"  # past its deadline: the timeout sweep refunds it
    assert (fresh(old.id).status, fresh(old.id).attempts) == ("processing", 1)


def test_nothing_runs_without_a_configured_provider(app, make):
    c = make.customer(credits=10)
    t = tasks.create(customer_id=c.id, type="chat", estimated_credits=1, input=chat_input())
    app.config["AI_PROVIDERS"] = []
    assert loops.run_main().claimed == 0 and not loops.has_work("main")
    assert fresh(t.id).status == "pending"


def test_ai_runner_types_limits_what_runs(ai, app, make):
    app.config["AI_RUNNER_TYPES"] = "image,video"
    c = make.customer(credits=10)
    t = tasks.create(customer_id=c.id, type="chat", estimated_credits=1, input=chat_input())
    assert loops.run_main().claimed == 0 and fresh(t.id).status == "pending"


def test_a_task_cancelled_while_its_job_runs_is_settled_once(ai, make):
    c = make.customer(credits=100)
    staff = make.staff(role="admin")
    t = tasks.create(customer_id=c.id, type="video", mode="async", estimated_credits=30,
                     input={"prompt": "x"})
    loops.run_main()
    tasks.cancel_by_staff(task_id=t.id, reason="customer asked", staff=staff)
    out = loops.run_query()
    assert out.claimed == 0  # cancelled: no longer polled
    task = fresh(t.id)
    assert (task.status, task.refunded_credits) == ("cancelled", 30)
    assert entries_of(t.id) == [("debit", -30), ("refund", 30)]


def test_a_late_answer_for_a_finished_task_is_skipped(ai, make):
    """The poll answers success after the task timed out: no second settlement."""
    c = make.customer(credits=100)
    t = tasks.create(customer_id=c.id, type="video", mode="async", estimated_credits=30,
                     input={"prompt": "x"})
    loops.run_main()
    task = fresh(t.id)
    tasks.time_out(task_id=t.id)
    from services.tasks.runner import registry
    kind = registry.lookup("video")
    poll = kind.provider_named("async", "primary").query(task.external_task_id)
    assert poll.status == "succeeded"
    out = loops.LoopResult()
    loops._guarded(t.id, out, loops.settings(), lambda task, o, cfg: kind.handler.succeed(task, poll.result))
    assert out.skipped == 1
    assert entries_of(t.id) == [("debit", -30), ("refund", 30)] and fresh(t.id).status == "timed_out"


def test_unknown_mode_for_a_type_is_refunded(ai, make):
    c = make.customer(credits=100)
    t = tasks.create(customer_id=c.id, type="image", mode="async", estimated_credits=7,
                     input={"prompt": "x"})
    out = loops.run_main()
    assert out.failed == 1
    task = fresh(t.id)
    assert task.status == "failed" and "do not run in async mode" in task.error
    assert ledger.balance(c.id) == 100 and ai.primary.requests == []
    assert isinstance(task, Task)


def test_a_loop_run_works_on_several_tasks_at_once(ai, app, make):
    """AI_RUNNER_CONCURRENCY threads: the fake holds each answer until 3 calls are in flight."""
    app.config["AI_RUNNER_CONCURRENCY"] = 3
    c = make.customer(credits=100)
    ids = [tasks.create(customer_id=c.id, type="chat", estimated_credits=10, input=chat_input()).id
           for _ in range(3)]
    ai.primary.gather = 3
    out = loops.run_main()
    assert (out.claimed, out.succeeded) == (3, 3)
    assert ai.primary.max_in_flight == 3
    assert [fresh(i).status for i in ids] == ["succeeded"] * 3
    assert ai.primary.calls_per_task() == dict.fromkeys(ids, 1)
