"""Rate limits and database outages against real gunicorn workers (tests/live.py) and real Redis.

Each test has its own Redis key prefix, so parallel test processes never share counters.
"""
from __future__ import annotations

import os
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from services.staff import accounts as staff_service
from tests.live import LiveServer, bearer, free_port

REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
CRON = ("cron", "cron-test-password")  # tests/conftest.py LIVE_SECRETS


@pytest.fixture
def redis_env():
    """REDIS_URL and a fresh key prefix for one live server. Without Redis: skipped, unless
    TEST_REDIS_URL or CI is set (.ci/run sets TEST_REDIS_URL), then it fails."""
    import redis

    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1)
    try:
        client.ping()
    except redis.RedisError:
        if os.environ.get("CI") or os.environ.get("TEST_REDIS_URL"):
            pytest.fail(f"The Redis tests must run: nothing answers at {REDIS_URL}")
        pytest.skip(f"no Redis at {REDIS_URL}")
    prefix = f"cdtest-{uuid.uuid4().hex[:12]}"
    yield {"REDIS_URL": REDIS_URL, "RATELIMIT_KEY_PREFIX": prefix}
    keys = list(client.scan_iter(f"*{prefix}*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()


def fresh(url: str, method: str = "GET", **kw) -> requests.Response:
    """One request on its own connection, so that consecutive calls reach different workers."""
    headers = {"Connection": "close", **kw.pop("headers", {})}
    return requests.request(method, url, headers=headers, timeout=30, **kw)


def debit(server: LiveServer, key: str, customer: str, n: int) -> requests.Response:
    return fresh(f"{server.url}/api/v1/customers/{customer}/debits", "POST",
                 json={"feature": "chat", "credits": 1},
                 headers=bearer(key, **{"Idempotency-Key": f"{customer}-debit-{n}"}))


def test_customer_limit_is_shared_by_workers_and_spares_other_customers(live, make, redis_env):
    _, key = make.api_key()
    make.customer(external_id="heavy", credits=1000)
    make.customer(external_id="light", credits=1000)
    server = live(workers=3, API_CUSTOMER_RATE_LIMIT="50 per minute", **redis_env)
    with ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(lambda n: debit(server, key, "heavy", n), range(120)))
    codes = [a.status_code for a in answers]
    assert codes.count(201) == 50 and codes.count(429) == 70, (sorted(set(codes)), server.log()[-3000:])
    refused = next(a for a in answers if a.status_code == 429)
    body = refused.json()
    assert body["code"] == "RATE_LIMITED" and body["retryable"] is True and "'heavy'" in body["error"]
    assert 1 <= int(refused.headers["Retry-After"]) <= 60
    assert server.get("/api/v1/customers/heavy", headers=bearer(key)).json()["data"]["balance"] == 950
    # another customer has its own budget, through the same key
    assert [debit(server, key, "light", n).status_code for n in range(5)] == [201] * 5
    # a batch: each item counts for its own customer; heavy's items are refused one by one
    items = [{"customer": c, "feature": "chat", "credits": 1, "idempotency_key": f"batch-{i}"}
             for i, c in enumerate(["light", "heavy", "light"])]
    batch = fresh(f"{server.url}/api/v1/debits/batch", "POST", json={"debits": items},
                  headers=bearer(key)).json()["data"]
    assert [r["success"] for r in batch["results"]] == [True, False, True]
    assert batch["results"][1]["code"] == "RATE_LIMITED"


def test_a_key_limit_throttles_that_key_only(live, make, redis_env):
    capped, capped_plain = make.api_key()
    staff_service.set_api_key_rate_limit(key_id=capped.id, rate_limit="5 per minute")
    _, free = make.api_key()
    make.customer(external_id="k1")
    server = live(workers=3, **redis_env)
    url = f"{server.url}/api/v1/customers/k1"
    codes = [fresh(url, headers=bearer(capped_plain)).status_code for _ in range(8)]
    assert codes == [200] * 5 + [429] * 3, server.log()[-3000:]
    assert {fresh(url, headers=bearer(free)).status_code for _ in range(30)} == {200}


def test_ip_limit_counts_unauthenticated_calls_only(live, make, redis_env):
    _, key = make.api_key()
    make.customer(external_id="ip1")
    server = live(workers=3, API_IP_RATE_LIMIT="10 per minute", **redis_env)
    garbage = [fresh(f"{server.url}/api/v1/customers/ip1", headers=bearer("cdk_nothing_real")).status_code
               for _ in range(12)]
    assert garbage == [401] * 10 + [429] * 2, server.log()[-3000:]
    wrong_cron = fresh(f"{server.url}/api/distribute-credits", "POST", auth=("cron", "guess"))
    assert wrong_cron.status_code == 429  # a password guesser shares the address's budget
    # the same address, with real credentials, is never throttled by that budget
    assert {fresh(f"{server.url}/api/v1/customers/ip1", headers=bearer(key)).status_code
            for _ in range(15)} == {200}
    cron = [fresh(f"{server.url}/api/distribute-credits", "POST", auth=CRON) for _ in range(3)]
    assert [r.status_code for r in cron] == [200] * 3, cron[0].text
    assert cron[0].json()["success"] is True


def test_in_memory_counters_with_several_workers_log_a_warning(live, redis_env):
    server = live(workers=2, REDIS_URL=None)
    assert "api.limits.memory_storage" in server.log()
    assert "WEB_CONCURRENCY=2" in server.log()
    shared = live(workers=2, **redis_env)
    assert "api.limits.memory_storage" not in shared.log()


def test_an_unreachable_database_is_503_database_unavailable(tmp_path):
    dead = f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/creditdesk"  # nothing listens
    with LiveServer(dead, tmp_path / "gunicorn.log", workers=2,
                    env={"CRON_JOBS_USERNAME": CRON[0], "CRON_JOBS_PASSWORD": CRON[1]}) as server:
        calls = [fresh(f"{server.url}/api/health"),
                 fresh(f"{server.url}/api/v1/customers/c1", headers=bearer("cdk_abcd1234_secret")),
                 fresh(f"{server.url}/api/v1/customers/c1/debits", "POST", json={"feature": "chat"},
                       headers=bearer("cdk_abcd1234_secret", **{"Idempotency-Key": "d1"}))]
        for resp in calls:
            body = resp.json()
            assert resp.status_code == 503, (resp.text, server.log()[-3000:])
            assert body["code"] == "DATABASE_UNAVAILABLE" and body["retryable"] is True
            assert int(resp.headers["Retry-After"]) > 0
