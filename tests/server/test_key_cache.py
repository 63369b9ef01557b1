"""The per-process API key cache (services/staff/accounts.py, API_KEY_CACHE_SECONDS) against real
gunicorn workers: a key revoked in another process stops in every worker within the bound that
docs/security.md states, and a new key works on its first call."""
from __future__ import annotations

import time

import requests

from services.staff import accounts as staff_service
from tests.live import bearer

BOUND = 2  # seconds: API_KEY_CACHE_SECONDS of the server below


def fresh(url: str, key: str) -> int:
    """One call on its own connection, so that consecutive calls reach different workers."""
    return requests.get(url, headers={"Connection": "close", **bearer(key)}, timeout=30).status_code


def test_a_revoked_key_stops_in_every_worker_within_the_cache_bound(live, make):
    key, plain = make.api_key()
    make.customer(external_id="kc1")
    server = live(workers=3, API_KEY_CACHE_SECONDS=str(BOUND))
    url = f"{server.url}/api/v1/customers/kc1"
    # every worker has verified (and cached) the key
    assert {fresh(url, plain) for _ in range(24)} == {200}, server.log()[-3000:]
    staff_service.revoke_api_key(key_id=key.id)  # here, not in the workers: their caches hold it
    revoked = time.monotonic()
    time.sleep(max(0.0, revoked + BOUND + 0.5 - time.monotonic()))
    assert {fresh(url, plain) for _ in range(24)} == {401}, server.log()[-3000:]
    # a key made after the server started works at once in every worker (nothing negative cached)
    _, new = make.api_key()
    assert {fresh(url, new) for _ in range(12)} == {200}
