"""GET /api/health: public liveness and database check for load balancers and ops."""
from __future__ import annotations

import logging

from flask import Blueprint
from pydantic import BaseModel
from sqlalchemy import text

from dashboard.api.core import describe, fail, ok
from models import db

DB_RETRY_AFTER = 5  # as dashboard/api/__init__.py answers on every other route

bp = Blueprint("api_health", __name__, url_prefix="/api")
RATE_LIMIT = None  # probes from load balancers must never be throttled
log = logging.getLogger("creditdesk.api.health")


class Health(BaseModel):
    status: str
    database: str


@bp.get("/health")
@describe(summary="Service and database health", response=Health, auth="none", tag="ops",
          description="Answers 503 DATABASE_UNAVAILABLE (with Retry-After) when the database does "
                      "not answer.")
def health():
    try:
        db.session.execute(text("SELECT 1"))
        db.session.rollback()
    except Exception:  # noqa: BLE001 - any failure means "down"
        log.warning("api.health.database_down", exc_info=True)
        db.session.rollback()
        return fail("DATABASE_UNAVAILABLE", "The database is not reachable.", 503, retryable=True,
                    details={"status": "degraded", "database": "down"},
                    headers={"Retry-After": str(DB_RETRY_AFTER)})
    return ok({"status": "ok", "database": "ok"})
