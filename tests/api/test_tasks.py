"""Prepaid tasks over the API: charge the estimate, settle once, refund on failure."""
from __future__ import annotations

from sqlalchemy import func, select

from models import LedgerEntry, Task, db
from services.ledger import posting as ledger
from tests.api.helpers import counts
from tests.helpers import assert_error


def test_create_charges_the_estimate_from_feature_pricing(api, make):
    c = make.customer(external_id="t-1", credits=100)
    make.feature_price(feature="video", credits_per_unit=25)
    status, body, _ = api.post("/api/v1/tasks", {"customer": "t-1", "type": "video", "mode": "async",
                                                 "input": {"prompt": "a cat"}, "timeout_seconds": 60})
    assert status == 201
    data = body["data"]
    assert (data["status"], data["charged_credits"], data["balance"]) == ("pending", 25, 75)
    task = db.session.get(Task, data["task_id"])
    assert (task.mode, task.input, task.customer_id) == ("async", {"prompt": "a cat"}, c.id)


def test_create_with_caller_estimate_and_errors(api, make):
    make.customer(external_id="t-2", credits=10)
    status, body, _ = api.post("/api/v1/tasks", {"customer": "t-2", "type": "x", "estimated_credits": 4})
    assert status == 201 and body["data"]["balance"] == 6
    before = counts()
    assert_error(*api.post("/api/v1/tasks", {"customer": "t-2", "type": "x", "estimated_credits": 7})[:2],
                 "INSUFFICIENT_CREDITS", 402)
    assert_error(*api.post("/api/v1/tasks", {"customer": "t-2", "type": "unpriced"})[:2],
                 "VALIDATION_ERROR", 422)
    assert_error(*api.post("/api/v1/tasks", {"customer": "nobody", "type": "x",
                                             "estimated_credits": 1})[:2], "CUSTOMER_NOT_FOUND", 404)
    assert_error(*api.post("/api/v1/tasks", {"customer": "t-2", "type": "x", "estimated_credits": 1,
                                             "mode": "batch"})[:2], "VALIDATION_ERROR", 422)
    assert counts() == before


def test_create_is_idempotent_by_key(api, make):
    make.customer(external_id="t-3", credits=10)
    body = {"customer": "t-3", "type": "x", "estimated_credits": 4}
    first = api.post("/api/v1/tasks", body, headers={"Idempotency-Key": "task-a"})
    second = api.post("/api/v1/tasks", body, headers={"Idempotency-Key": "task-a"})
    assert first[1] == second[1] and db.session.scalar(select(func.count()).select_from(Task)) == 1


def test_complete_refunds_the_difference_exactly_once(api, make):
    c = make.customer(external_id="t-4", credits=100)
    task_id = api.post("/api/v1/tasks", {"customer": "t-4", "type": "x",
                                         "estimated_credits": 40})[1]["data"]["task_id"]
    status, body, _ = api.post(f"/api/v1/tasks/{task_id}/complete",
                               {"actual_credits": 15, "output": {"url": "https://x/y.mp4"}})
    data = body["data"]
    assert status == 200 and data["status"] == "succeeded"
    assert (data["actual_credits"], data["refunded_credits"], data["balance"]) == (15, 25, 85)
    assert data["output"] == {"url": "https://x/y.mp4"}
    assert_error(*api.post(f"/api/v1/tasks/{task_id}/complete", {"actual_credits": 15})[:2],
                 "TASK_ALREADY_FINISHED", 409)
    assert_error(*api.post(f"/api/v1/tasks/{task_id}/fail", {"error": "late"})[:2],
                 "TASK_ALREADY_FINISHED", 409)
    assert ledger.balance(c.id) == 85


def test_complete_never_charges_more_than_the_estimate(api, make):
    make.customer(external_id="t-5", credits=100)
    task_id = api.post("/api/v1/tasks", {"customer": "t-5", "type": "x",
                                         "estimated_credits": 10})[1]["data"]["task_id"]
    data = api.post(f"/api/v1/tasks/{task_id}/complete", {"actual_credits": 500})[1]["data"]
    assert (data["actual_credits"], data["refunded_credits"], data["balance"]) == (10, 0, 90)
    # The charge is capped; the usage is kept, so a too-low estimate shows.
    assert data["usage_credits"] == 500
    assert api.get(f"/api/v1/tasks/{task_id}")[1]["data"]["usage_credits"] == 500


def test_usage_is_recorded_only_for_completed_tasks(api, make):
    make.customer(external_id="t-5b", credits=100)
    made = [api.post("/api/v1/tasks", {"customer": "t-5b", "type": "x", "estimated_credits": 10})
            [1]["data"]["task_id"] for _ in range(2)]
    done = api.post(f"/api/v1/tasks/{made[0]}/complete", {"actual_credits": 7})[1]["data"]
    failed = api.post(f"/api/v1/tasks/{made[1]}/fail", {"error": "x"})[1]["data"]
    assert (done["actual_credits"], done["usage_credits"]) == (7, 7)
    assert (failed["actual_credits"], failed["usage_credits"]) == (0, None)


def test_fail_refunds_everything(api, make):
    make.customer(external_id="t-6", credits=100)
    task_id = api.post("/api/v1/tasks", {"customer": "t-6", "type": "x",
                                         "estimated_credits": 30})[1]["data"]["task_id"]
    status, body, _ = api.post(f"/api/v1/tasks/{task_id}/fail", {"error": "provider 500"},
                               headers={"Idempotency-Key": "fail-1"})
    data = body["data"]
    assert status == 200 and (data["status"], data["refunded_credits"], data["balance"]) == \
        ("failed", 30, 100)
    again = api.post(f"/api/v1/tasks/{task_id}/fail", {"error": "provider 500"},
                     headers={"Idempotency-Key": "fail-1"})
    assert again[0] == 200 and again[1] == body  # a retried fail replays instead of 409
    refunds = db.session.scalar(select(func.count()).select_from(LedgerEntry).where(
        LedgerEntry.task_id == task_id, LedgerEntry.type == "refund"))
    assert refunds == 1


def test_get_task_and_not_found(api, api_as, make):
    make.customer(external_id="t-7", credits=100)
    task_id = api.post("/api/v1/tasks", {"customer": "t-7", "type": "x",
                                         "estimated_credits": 5})[1]["data"]["task_id"]
    status, body, _ = api.get(f"/api/v1/tasks/{task_id}")
    assert status == 200 and body["data"]["customer"] == "t-7" and body["data"]["status"] == "pending"
    # past bigint no route matches (dashboard.RowId): 404 all the same
    for missing, code in ((999999, "TASK_NOT_FOUND"), (2**63 - 1, "TASK_NOT_FOUND"),
                          (2**63, "NOT_FOUND"), (10**30, "NOT_FOUND")):
        assert_error(*api.get(f"/api/v1/tasks/{missing}")[:2], code, 404)
        assert_error(*api.post(f"/api/v1/tasks/{missing}/complete", {"actual_credits": 1})[:2],
                     code, 404)
        assert_error(*api.post(f"/api/v1/tasks/{missing}/fail", {"error": "x"})[:2], code, 404)
    assert api.get("/api/v1/tasks/abc")[0] == 404
    assert_error(*api_as("customers:read").get(f"/api/v1/tasks/{task_id}")[:2], "AUTH_FORBIDDEN", 403)
