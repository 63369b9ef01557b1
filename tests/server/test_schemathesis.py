"""Schemathesis fuzzes the live server (gunicorn, provider doubles) with /api/openapi.json.

Every operation is called with generated valid and invalid inputs, authenticated the way its
security requirement says (a bearer key holding every scope; Basic auth for the cron route), and
with path and body values bound to seeded rows often enough to reach the success paths. Any
5xx, undocumented status, undocumented content type or answer off its schema fails the test, and
so does a request the document calls invalid that the API accepts (negative_data_rejection).
Run as the `st` CLI so that its Hypothesis settings never touch the suite's.
"""
from __future__ import annotations

import json
import os
import random
import re
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from services.tasks import prepaid as tasks
from tests.conftest import LIVE_SECRETS, PG_URL

ST = str(Path(sys.executable).parent / "st")
CHECKS = ",".join(("not_a_server_error", "status_code_conformance", "content_type_conformance",
                   "response_schema_conformance", "negative_data_rejection"))
# Operation ids left out of the run, each with the server bug that keeps it out. Empty: the
# streamed chat's 500 (DetachedInstanceError inside the stream) is fixed on branch `chat`.
EXCLUDED_OPERATIONS: dict[str, str] = {}
MAX_EXAMPLES = 12  # per operation: the run stays well under two minutes on two cores

CONFIG = """
# An invalid body can also be refused for its size first: 413 PAYLOAD_TOO_LARGE is documented;
# an invalid query string so long that gunicorn refuses the request line: 414 (documented).
[checks.negative_data_rejection]
expected-statuses = ["400", "401", "403", "404", "405", "406", "409", "413", "414", "415", "422",
                     "428", "429", "5xx"]

[auth.openapi.apiKey]
bearer = "${{ST_API_KEY}}"

[auth.openapi.basicAuth]
username = "{cron_user}"
password = "{cron_password}"

[dictionaries.customers]
values = {customers}

[dictionaries.tasks]
values = {tasks}

[dictionaries.features]
values = {features}

[dictionaries.packages]
values = {packages}

[dictionaries.payments]
values = {payments}

[parameters]
"path.external_id" = {{ dictionary = "customers", probability = 0.6 }}
"path.task_id" = {{ dictionary = "tasks", probability = 0.8 }}
"body.customer" = {{ dictionary = "customers", probability = 0.8 }}
"body.debits[*].customer" = {{ dictionary = "customers", probability = 0.8 }}
"body.feature" = {{ dictionary = "features", probability = 0.8 }}
"body.debits[*].feature" = {{ dictionary = "features", probability = 0.8 }}
"body.type" = {{ dictionary = "features", probability = 0.8 }}
"body.package_id" = {{ dictionary = "packages", probability = 0.8 }}
"body.payment_id" = {{ dictionary = "payments", probability = 0.5 }}
"""


@pytest.fixture
def db_url(request, tmp_path):
    """One database is enough for a contract test: PostgreSQL when the suite has it."""
    if PG_URL:
        return request.getfixturevalue("pg_url")
    return f"sqlite:///{tmp_path / 'test.sqlite3'}"


def _seed(make) -> dict:
    """Customers rich enough for any generated debit, priced features, a package, open tasks."""
    customers = []
    for n in range(2):
        c = make.customer(external_id=f"st_customer_{n}")
        make.grant(c, credits=900_000_000)
        customers.append(c)
    features = ["chat", "image"]
    for feature in features:
        make.feature_price(feature=feature, credits_per_unit=1)
    package = make.package(credits=500, price_minor=500)
    payment = make.payment(customers[0], provider="stripe", credits=500, amount_minor=500)
    open_tasks = [tasks.create(type="image", customer_id=customers[0].id, estimated_credits=10).id
                  for _ in range(6)]
    return {"customers": [c.external_id for c in customers], "tasks": open_tasks,
            "features": features, "packages": [package.id], "payments": [payment.id]}


def test_the_live_api_answers_as_its_openapi_document_says(live, make, tmp_path):
    _, key = make.api_key()
    seeded = _seed(make)
    server = live(workers=2, threads=4)
    config = tmp_path / "schemathesis.toml"
    config.write_text(CONFIG.format(
        cron_user=LIVE_SECRETS["CRON_JOBS_USERNAME"], cron_password=LIVE_SECRETS["CRON_JOBS_PASSWORD"],
        **{name: json.dumps(values) for name, values in seeded.items()}))
    seed = int(os.environ.get("SCHEMATHESIS_SEED") or random.randrange(2**31))
    print(f"schemathesis seed {seed} (SCHEMATHESIS_SEED={seed} to replay)")
    har = tmp_path / "schemathesis.har"
    started = time.monotonic()
    # One worker: hypothesis parses lambda sources with ast.parse, which CPython 3.11.7 does not
    # survive from two threads at once (SystemError "AST constructor recursion depth mismatch").
    run = subprocess.run(
        [ST, "--no-color", "--config-file", str(config), "run", f"{server.url}/api/openapi.json",
         "--checks", CHECKS, "--max-examples", str(MAX_EXAMPLES), "--seed", str(seed),
         "--workers", "1", "--request-timeout", "20", "--generation-database", "none",
         "--suppress-health-check", "all", "--warnings", "off",
         "--report", "har", "--report-har-path", str(har),
         *[arg for op in EXCLUDED_OPERATIONS for arg in ("--exclude-operation-id", op)]],
        capture_output=True, text=True, timeout=240, env={**os.environ, "ST_API_KEY": key},
        cwd=tmp_path)  # schemathesis keeps state under ./.schemathesis
    elapsed = time.monotonic() - started
    (tmp_path / "schemathesis.out").write_text(run.stdout + run.stderr)
    assert run.returncode == 0, f"schemathesis found problems:\n{run.stdout[-20000:]}\n" \
                                f"{run.stderr[-3000:]}\nserver log:\n{server.log()[-4000:]}"
    reached = _statuses(har, server.get("/api/openapi.json").json())
    print(f"schemathesis: {elapsed:.0f} s; statuses per operation:")
    for name, statuses in sorted(reached.items()):
        print(f"  {name}: {sorted(statuses)}")
    succeeded = {name for name, statuses in reached.items() if any(s < 300 for s in statuses)}
    assert succeeded >= MUST_SUCCEED, f"never reached a success: {sorted(MUST_SUCCEED - succeeded)}"


# Operations the seeded rows let a generated request complete (webhooks need the providers'
# signatures, Razorpay verify a paid order, a refund an eligible purchase: fuzzed for errors only).
MUST_SUCCEED = {
    "POST /api/v1/customers/{external_id}/purchases", "POST /api/v1/customers/{external_id}/chat",
    "POST /api/v1/tasks/{task_id}/complete", "POST /api/v1/tasks/{task_id}/fail",
    "GET /api/health", "POST /api/distribute-credits",
    "PUT /api/v1/customers/{external_id}", "GET /api/v1/customers/{external_id}",
    "GET /api/v1/customers/{external_id}/ledger", "POST /api/v1/customers/{external_id}/debits",
    "POST /api/v1/customers/{external_id}/grants", "POST /api/v1/debits/batch",
    "GET /api/v1/packages", "GET /api/v1/plans", "POST /api/v1/tasks", "GET /api/v1/tasks/{task_id}",
    "GET /api/v1/customers/{external_id}/refund-eligibility",
    "GET /api/v1/customers/{external_id}/refunds",
}


def _statuses(har: Path, doc: dict) -> dict[str, set[int]]:
    """Operation -> the statuses the server answered it with, from schemathesis' HAR log."""
    patterns = [(re.compile("^" + re.sub(r"\\{\w+\\}", "[^/]+", re.escape(path)) + "$"), path)
                for path in doc["paths"]]
    documented = {f"{method.upper()} {path}" for path, item in doc["paths"].items() for method in item}
    out: dict[str, set[int]] = {}
    for entry in json.loads(har.read_text())["log"]["entries"]:
        path = urlsplit(entry["request"]["url"]).path
        for pattern, template in patterns:
            name = f"{entry['request']['method']} {template}"
            if pattern.match(path) and name in documented:  # not the coverage phase's 405 probes
                out.setdefault(name, set()).add(entry["response"]["status"])
                break
    return out
