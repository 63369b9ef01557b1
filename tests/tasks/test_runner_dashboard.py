"""The tasks page shows what the runner did (provider, attempts, external id, next attempt, logs),
and staff retry and cancel-with-refund work on runner tasks."""
from __future__ import annotations

import re

from services.ledger import posting as ledger
from services.tasks import prepaid as tasks
from services.tasks.runner import loops
from tests.tasks.helpers import chat_input, fresh


def test_detail_and_list_show_provider_attempts_external_id_and_logs(ai, app, login, make):
    c = make.customer(credits=100)
    sync = tasks.create(customer_id=c.id, type="chat", estimated_credits=10, input=chat_input())
    job = tasks.create(customer_id=c.id, type="video", mode="async", estimated_credits=10,
                       input={"prompt": "x"})
    ai.primary.fail_next(1, 503, path="/v1/chat/completions")
    app.config["AI_POLL_LEASE_SECONDS"] = 25
    ai.primary.polls_to_finish = 2
    loops.run_main()
    loops.run_query()  # leases the job for 25 s: its next poll shows
    staff = login("support")
    page = staff.get(f"/tasks/{sync.id}").get_data(as_text=True)
    assert "fallback" in page and "served by fallback" in page and "primary failed" in page
    job_page = staff.get(f"/tasks/{job.id}").get_data(as_text=True)
    external = fresh(job.id).external_task_id
    assert external in job_page and "Next poll" in job_page
    assert "via fallback" in staff.get("/tasks/").get_data(as_text=True)


def test_staff_retry_of_a_failed_runner_task_runs_it_again(ai, login, make):
    c = make.customer(credits=100)
    t = tasks.create(customer_id=c.id, type="chat", estimated_credits=10, input=chat_input())
    ai.primary.fail_next(3, 500)
    ai.fallback.fail_next(3, 500)
    loops.run_main()
    assert fresh(t.id).status == "failed" and ledger.balance(c.id) == 100
    admin = login("admin")
    assert admin.post(f"/tasks/{t.id}/retry").status_code == 303
    assert (fresh(t.id).status, ledger.balance(c.id)) == ("pending", 90)
    loops.run_main()
    task = fresh(t.id)
    # 3 runs, the staff retry (services.tasks.prepaid counts it), and the run that served it
    assert (task.status, task.attempts, task.provider) == ("succeeded", 5, "primary")


def test_staff_cancel_of_a_task_waiting_for_its_retry_refunds_it(ai, app, login, make):
    app.config["AI_RETRY_BASE_SECONDS"] = 60
    c = make.customer(credits=100)
    t = tasks.create(customer_id=c.id, type="chat", estimated_credits=10, input=chat_input())
    ai.primary.fail_next(1, 500)
    ai.fallback.fail_next(1, 500)
    loops.run_main()
    assert "Next attempt" in login("support").get(f"/tasks/{t.id}").get_data(as_text=True)
    resp = login("admin").post(f"/tasks/{t.id}/cancel", data={"reason": "provider outage"})
    assert resp.status_code == 303
    assert (fresh(t.id).status, ledger.balance(c.id)) == ("cancelled", 100)
    assert loops.run_main().claimed == 0


def test_usage_above_the_charge_shows_on_the_list_and_the_detail(ai, login, make):
    c = make.customer(credits=1000)
    make.feature_price(feature="chat", credits_per_unit=1, unit="token")
    over = tasks.create(customer_id=c.id, type="chat", estimated_credits=5, input=chat_input())
    within = tasks.create(customer_id=c.id, type="chat", estimated_credits=50, input=chat_input())
    assert loops.run_main().succeeded == 2
    staff = login("support")
    rows = {m.group(1): m.group(0) for m in re.finditer(
        r'href="/tasks/(\d+)".*?</tr>', staff.get("/tasks/").get_data(as_text=True), re.S)}
    # The fake counts 11 tokens: 5 charged and 11 used (capped); 11 of 50 used.
    assert re.search(r'class="num">5</td>\s*<td class="num">11 <span[^>]*>capped</span>',
                     rows[str(over.id)])
    assert re.search(r'class="num">50</td>\s*<td class="num">11</td>', rows[str(within.id)])
    detail = staff.get(f"/tasks/{over.id}").get_data(as_text=True)
    assert re.search(r"Usage</div><div class=\"value\">11</div><div class=\"hint\">6 over the "
                     r"estimate, not charged", detail)
