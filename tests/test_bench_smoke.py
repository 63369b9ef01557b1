"""`make bench-smoke` in the suite: the benchmark scripts still run end to end on tiny data.

Nothing here looks at a time: only that each script finishes, prints its table and finds the
ledger consistent afterwards (bench/api_debits.py exits 1 when services.ledger.reconcile does not).
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import PG_URL

ROOT = Path(__file__).resolve().parent.parent
pytestmark = [pytest.mark.pg, pytest.mark.slow]


def run(script: str) -> str:
    env = {**os.environ, "BENCH_DATABASE_URL": PG_URL}
    res = subprocess.run([sys.executable, str(ROOT / "bench" / script), "--smoke"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return res.stdout


def test_api_debits_smoke_prints_every_scenario_and_a_consistent_ledger():
    out = run("api_debits.py")
    assert "consistent" in out
    for name in ("ours single", "ours hot customer", "ours batch 10", "(a) pgbench single",
                 "(a) pgbench hot", "(b) bare Flask single", "(b) bare Flask hot"):
        assert f"\n{name} " in out, name
    assert "ours single / (b) bare Flask single" in out


def test_pages_smoke_serves_every_page():
    out = run("pages.py")
    assert "consistent" in out
    for name in ("overview (30 days)", "customer detail", "transactions, one customer",
                 "API ledger, first page"):
        assert f"\n{name}" in out, name
