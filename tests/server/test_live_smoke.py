"""The live-server layer itself: gunicorn boots from gunicorn.conf.py with several workers."""
from __future__ import annotations

from tests.live import bearer


def test_gunicorn_serves_the_api_from_several_workers(live, make):
    _, key = make.api_key()
    c = make.customer(external_id="live_1")
    make.grant(c, credits=50)
    server = live(workers=2)
    assert len(server.worker_pids()) == 2
    health = server.get("/api/health")
    assert health.status_code == 200 and health.json()["data"]["database"] == "ok"
    got = server.get("/api/v1/customers/live_1", headers=bearer(key))
    assert got.status_code == 200, got.text
    assert got.json()["data"]["balance"] == 50
