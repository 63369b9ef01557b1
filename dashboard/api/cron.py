"""POST /api/distribute-credits: the cron trigger of the monthly distribution (seed 000 contract).

Basic auth against CRON_JOBS_USERNAME / CRON_JOBS_PASSWORD, compared in constant time.
Unset -> 500 CRON_BASIC_AUTH_MISCONFIGURED; wrong or missing -> 401 AUTH_UNAUTHORIZED with
`WWW-Authenticate: Basic realm="Secure Area"`; the job failing -> 500 CREDITS_DISTRIBUTION_FAILED
(retryable: the run of a period is claimed once, so a retry never distributes twice).
"""
from __future__ import annotations

import hmac
import logging

from flask import Blueprint, current_app, request
from pydantic import BaseModel, Field

from dashboard.api.core import describe, fail, ok

bp = Blueprint("api_cron", __name__, url_prefix="/api")
log = logging.getLogger("creditdesk.api.cron")

CHALLENGE = {"WWW-Authenticate": 'Basic realm="Secure Area"'}


class DistributionOut(BaseModel):
    usersCount: int = Field(description="customers considered")  # noqa: N815 - seed 000 contract
    processedCount: int = Field(description="customers credited")  # noqa: N815
    errorCount: int = Field(description="customers that failed (see the job run)")  # noqa: N815


def _same(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8"))


def _authorized(username: str, password: str) -> bool:
    auth = request.authorization
    if auth is None or auth.type != "basic":
        return False
    # Both comparisons always run, so timing does not tell which part was wrong.
    user_ok = _same(auth.username or "", username)
    password_ok = _same(auth.password or "", password)
    return user_ok and password_ok


def valid_credentials() -> bool:
    """This request carries the configured cron credentials (false when they are not configured).

    The rate limiter asks too: valid cron credentials never count against the per-IP budget of
    unauthenticated calls, wrong ones do (a password guesser is throttled)."""
    cfg = current_app.config
    username, password = cfg.get("CRON_JOBS_USERNAME"), cfg.get("CRON_JOBS_PASSWORD")
    return bool(username and password) and _authorized(username, password)


@bp.post("/distribute-credits")
@describe(summary="Run the monthly credits distribution now (cron)", response=DistributionOut,
          auth="basic", tag="ops",
          errors=("AUTH_UNAUTHORIZED", "CRON_BASIC_AUTH_MISCONFIGURED", "CREDITS_DISTRIBUTION_FAILED"),
          description="Basic auth with CRON_JOBS_USERNAME / CRON_JOBS_PASSWORD. Runs the "
                      "distribution of the current period once; a second call for the same period "
                      "is a no-op that reports the first run's counts.")
def distribute_credits():
    cfg = current_app.config
    username, password = cfg.get("CRON_JOBS_USERNAME"), cfg.get("CRON_JOBS_PASSWORD")
    if not username or not password:
        log.error("api.cron.misconfigured")
        return fail("CRON_BASIC_AUTH_MISCONFIGURED",
                    "Cron basic auth is not configured: set CRON_JOBS_USERNAME and CRON_JOBS_PASSWORD.",
                    500)
    if not _authorized(username, password):
        return fail("AUTH_UNAUTHORIZED", "Unauthorized", 401, headers=CHALLENGE)
    try:
        from services.jobs import distribution

        result = distribution.run(trigger="cron")
    except Exception:  # noqa: BLE001 - every failure of the job is this one answer
        log.exception("api.cron.distribution_failed")
        return fail("CREDITS_DISTRIBUTION_FAILED", "Distribute credits job failed", 500,
                    retryable=True)
    log.info("api.cron.distribution_done", extra={
        "run_id": result.run_id, "users_count": result.users_count,
        "processed_count": result.processed_count, "error_count": result.error_count})
    return ok({"usersCount": result.users_count, "processedCount": result.processed_count,
               "errorCount": result.error_count})
