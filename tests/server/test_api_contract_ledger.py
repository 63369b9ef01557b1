"""The money contract over real HTTP against gunicorn (2 workers, SQLite and PostgreSQL):
debits with Idempotency-Key replays (also concurrent, across workers), batch debits, prepaid
tasks (create, complete with usage above the estimate, fail) and the cron trigger.

One server boot serves every check; each answer is compared with the rows the server wrote.
"""
from __future__ import annotations

import base64
from concurrent.futures import ThreadPoolExecutor

import requests
from sqlalchemy import func, select

from models import Customer, LedgerEntry, db
from services import ledger
from tests.conftest import LIVE_SECRETS
from tests.live import bearer
from tests.server.conftest import task_entries, task_row


def balance(external_id: str) -> int:
    db.session.rollback()
    return ledger.balance(db.session.scalar(select(Customer.id)
                                            .where(Customer.external_id == external_id)))


def entries(**where) -> int:
    db.session.rollback()
    q = select(func.count()).select_from(LedgerEntry)
    for k, v in where.items():
        q = q.where(getattr(LedgerEntry, k) == v)
    return db.session.scalar(q)


def basic(user: str, password: str) -> dict:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def test_debits_batches_tasks_and_cron_over_real_http(live, make):
    _, key = make.api_key()
    make.feature_price(feature="chat", credits_per_unit=2)
    make.customer(external_id="led_a", credits=100)
    make.customer(external_id="led_b", credits=3)
    server = live(workers=2)
    auth = bearer(key)

    # Single debit, then its replay: the same answer, one ledger entry.
    first = server.post("/api/v1/customers/led_a/debits", json={"feature": "chat", "quantity": 2},
                        headers={**auth, "Idempotency-Key": "d-1"})
    assert first.status_code == 201, first.text
    assert (first.json()["data"]["credits"], first.json()["data"]["balance"]) == (4, 96)
    again = server.post("/api/v1/customers/led_a/debits", json={"feature": "chat", "quantity": 2},
                        headers={**auth, "Idempotency-Key": "d-1"})
    assert again.status_code == 201 and again.json() == first.json()
    assert again.headers.get("Idempotent-Replayed") == "true"
    reused = server.post("/api/v1/customers/led_a/debits", json={"feature": "chat", "credits": 1},
                         headers={**auth, "Idempotency-Key": "d-1"})
    assert (reused.status_code, reused.json()["code"]) == (409, "IDEMPOTENCY_KEY_REUSED")
    assert entries(type="debit") == 1 and balance("led_a") == 96

    # One key sent 8 times at once from 8 connections (both workers): one debit.
    def send(_):
        with requests.Session() as s:
            r = s.post(server.url + "/api/v1/customers/led_a/debits", timeout=30,
                       json={"feature": "x", "credits": 5}, headers={**auth, "Idempotency-Key": "d-2"})
            return r.status_code, r.json()
    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(send, range(8)))
    ok = [body for status, body in answers if status == 201]
    busy = [body for status, body in answers if status == 409]
    assert len(ok) + len(busy) == 8 and ok, answers
    assert {b["data"]["entry_id"] for b in ok} == {ok[0]["data"]["entry_id"]}
    assert all(b["code"] == "IDEMPOTENCY_KEY_IN_USE" and b["retryable"] for b in busy), busy
    assert balance("led_a") == 91

    # A debit the balance cannot cover: 402, nothing written.
    poor = server.post("/api/v1/customers/led_b/debits", json={"feature": "x", "credits": 4},
                       headers=auth)
    assert (poor.status_code, poor.json()["code"], poor.json()["success"]) == \
        (402, "INSUFFICIENT_CREDITS", False)

    # Batch: one result per item, in order; an item replayed by key is not charged twice.
    items = [{"customer": "led_a", "feature": "chat", "quantity": 1, "idempotency_key": "b-1"},
             {"customer": "led_b", "feature": "x", "credits": 4, "idempotency_key": "b-2"},
             {"customer": "nobody", "feature": "x", "credits": 1, "idempotency_key": "b-3"},
             {"customer": "led_b", "feature": "x", "credits": 3, "idempotency_key": "b-4"}]
    batch = server.post("/api/v1/debits/batch", json={"debits": items}, headers=auth)
    assert batch.status_code == 200, batch.text
    res = batch.json()["data"]["results"]
    assert [(r["index"], r["success"], r.get("code")) for r in res] == [
        (0, True, None), (1, False, "INSUFFICIENT_CREDITS"), (2, False, "CUSTOMER_NOT_FOUND"),
        (3, True, None)]
    replay = server.post("/api/v1/debits/batch", json={"debits": items[:1]}, headers=auth)
    assert replay.json()["data"]["results"][0]["replayed"] is True
    assert (balance("led_a"), balance("led_b")) == (89, 0)

    # Prepaid tasks: the estimate is charged; complete refunds the rest and keeps the usage;
    # a usage above the estimate is capped; fail refunds in full; a second settle is 409.
    def task(estimate: int) -> int:
        r = server.post("/api/v1/tasks", headers=auth, json={
            "customer": "led_a", "type": "video", "estimated_credits": estimate})
        assert r.status_code == 201 and r.json()["data"]["charged_credits"] == estimate, r.text
        return r.json()["data"]["task_id"]
    small, big, failing = task(10), task(10), task(20)
    assert balance("led_a") == 89 - 40
    done = server.post(f"/api/v1/tasks/{small}/complete", headers=auth, json={"actual_credits": 4})
    assert done.status_code == 200, done.text
    d = done.json()["data"]
    assert (d["status"], d["actual_credits"], d["usage_credits"], d["refunded_credits"]) == \
        ("succeeded", 4, 4, 6)
    over = server.post(f"/api/v1/tasks/{big}/complete", headers=auth,
                       json={"actual_credits": 25}).json()["data"]
    assert (over["actual_credits"], over["usage_credits"], over["refunded_credits"]) == (10, 25, 0)
    read = server.get(f"/api/v1/tasks/{big}", headers=auth).json()["data"]
    assert (read["actual_credits"], read["usage_credits"]) == (10, 25)
    failed = server.post(f"/api/v1/tasks/{failing}/fail", headers=auth, json={"error": "gpu lost"})
    assert (failed.json()["data"]["status"], failed.json()["data"]["refunded_credits"]) == \
        ("failed", 20)
    late = server.post(f"/api/v1/tasks/{small}/complete", headers=auth, json={"actual_credits": 1})
    assert (late.status_code, late.json()["code"]) == (409, "TASK_ALREADY_FINISHED")
    assert task_entries(small) == [("debit", -10), ("refund", 6)]
    assert task_entries(big) == [("debit", -10)]
    assert task_entries(failing) == [("debit", -20), ("refund", 20)]
    assert task_row(big).usage_credits == 25
    assert balance("led_a") == 89 - 4 - 10
    missing = server.get("/api/v1/tasks/999999", headers=auth)
    assert (missing.status_code, missing.json()["code"]) == (404, "TASK_NOT_FOUND")

    # Cron: Basic auth from the environment; wrong credentials are 401 with the challenge.
    wrong = server.post("/api/distribute-credits", headers=basic("cron", "nope"))
    assert (wrong.status_code, wrong.json()["code"]) == (401, "AUTH_UNAUTHORIZED")
    assert wrong.headers["WWW-Authenticate"].startswith("Basic")
    cron = basic(LIVE_SECRETS["CRON_JOBS_USERNAME"], LIVE_SECRETS["CRON_JOBS_PASSWORD"])
    run = server.post("/api/distribute-credits", headers=cron)
    assert run.status_code == 200, run.text
    assert run.json() == {"success": True, "data": {"usersCount": 2, "processedCount": 2,
                                                    "errorCount": 0}}
    grants = entries(type="grant")
    rerun = server.post("/api/distribute-credits", headers=cron)  # cron fired twice
    assert rerun.status_code == 200 and rerun.json()["data"]["processedCount"] == 2
    assert entries(type="grant") == grants
    assert "Traceback" not in server.log(), server.log()[-3000:]
