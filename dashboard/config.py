"""Settings read from the environment, in one place."""
from __future__ import annotations

import os
import secrets
import sys
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
INSTANCE = ROOT / "instance"


def _flag(name: str, default: bool | None) -> bool | None:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    return raw.strip().lower() in {"1", "true", "yes", "on"}


def _secret_key() -> str:
    """SECRET_KEY from the environment, else one generated once and kept under instance/."""
    if key := os.environ.get("SECRET_KEY"):
        return key
    INSTANCE.mkdir(exist_ok=True)
    path = INSTANCE / "secret_key"
    if not path.exists():
        path.write_text(secrets.token_hex(32))
        path.chmod(0o600)
    return path.read_text().strip()


def _engine_options() -> dict:
    """Connection pool. SQLAlchemy's default (5 kept + 10 overflow per process) covers a gunicorn
    worker's threads; DB_POOL_SIZE / DB_MAX_OVERFLOW override it. SQLAlchemy's own pre-ping (a
    round trip before every use) is replaced by services.core.db's: see DB_POOL_PING_IDLE_SECONDS."""
    opts: dict = {"pool_pre_ping": False}
    if os.environ.get("DB_POOL_SIZE"):
        opts["pool_size"] = int(os.environ["DB_POOL_SIZE"])
    if os.environ.get("DB_MAX_OVERFLOW"):
        opts["max_overflow"] = int(os.environ["DB_MAX_OVERFLOW"])
    return opts


def _ai_providers() -> list[dict]:
    """AI provider endpoints in fallback order (docs/tasks.md): AI_PROVIDER_NAMES lists them
    ("primary,fallback" by default); each is AI_<NAME>_BASE_URL (with /v1), AI_<NAME>_API_KEY,
    AI_<NAME>_TIMEOUT (read, seconds), AI_<NAME>_CONNECT_TIMEOUT and AI_<NAME>_{CHAT,IMAGE,VIDEO}_MODEL.
    A name without a base URL is left out."""
    out = []
    for name in (os.environ.get("AI_PROVIDER_NAMES") or "primary,fallback").split(","):
        name = name.strip()
        env = f"AI_{name.upper()}_"
        if not name or not os.environ.get(env + "BASE_URL"):
            continue
        entry = {"name": name, "base_url": os.environ[env + "BASE_URL"],
                 "api_key": os.environ.get(env + "API_KEY", ""),
                 "timeout": float(os.environ.get(env + "TIMEOUT", "60")),
                 "connect_timeout": float(os.environ.get(env + "CONNECT_TIMEOUT", "5"))}
        for kind in ("chat", "image", "video"):
            if os.environ.get(f"{env}{kind.upper()}_MODEL"):
                entry[f"{kind}_model"] = os.environ[f"{env}{kind.upper()}_MODEL"]
        out.append(entry)
    return out


def _web_workers() -> int:
    """WEB_CONCURRENCY, gunicorn's worker count (gunicorn.conf.py starts 3 when it is unset)."""
    default = "3" if os.path.basename(sys.argv[0]).startswith("gunicorn") else "1"
    try:
        return int(os.environ.get("WEB_CONCURRENCY") or default)
    except ValueError:
        return 1


def _job_schedules() -> dict:
    """JOBS_<NAME>_CRON and JOBS_<NAME>_MISFIRE_MINUTES over each job's defaults (jobs/schedules.py)."""
    return {name: value for name, value in os.environ.items()
            if name.startswith("JOBS_") and name.endswith(("_CRON", "_MISFIRE_MINUTES")) and value}


def from_env() -> dict:
    """The whole configuration as a dict; `create_app(config=...)` overrides any of it."""
    INSTANCE.mkdir(exist_ok=True)
    return {
        "SECRET_KEY": _secret_key(),
        "SQLALCHEMY_DATABASE_URI": os.environ.get(
            "DATABASE_URL", f"sqlite:///{INSTANCE / 'creditdesk.sqlite3'}"
        ),
        "SQLALCHEMY_ENGINE_OPTIONS": _engine_options(),
        # None when unset: then on under gunicorn only (jobs/scheduler.py enabled()).
        "SCHEDULER_ENABLED": _flag("SCHEDULER_ENABLED", None),
        # Heartbeat age after which a running job run counts as crashed (docs/jobs.md).
        "JOBS_STALE_SECONDS": int(os.environ.get("JOBS_STALE_SECONDS", "120")),
        **_job_schedules(),
        # How often a follower tries for the scheduler lock (jobs/scheduler.py's default when unset).
        "JOBS_LEADER_RETRY_SECONDS": float(os.environ["JOBS_LEADER_RETRY_SECONDS"])
        if os.environ.get("JOBS_LEADER_RETRY_SECONDS") else None,
        "WEB_CONCURRENCY": _web_workers(),
        "CRON_JOBS_USERNAME": os.environ.get("CRON_JOBS_USERNAME"),
        "CRON_JOBS_PASSWORD": os.environ.get("CRON_JOBS_PASSWORD"),
        "STRIPE_SECRET_KEY": os.environ.get("STRIPE_SECRET_KEY"),
        "STRIPE_WEBHOOK_SECRET": os.environ.get("STRIPE_WEBHOOK_SECRET"),
        "STRIPE_API_BASE": os.environ.get("STRIPE_API_BASE"),
        "RAZORPAY_KEY_ID": os.environ.get("RAZORPAY_KEY_ID"),
        "RAZORPAY_KEY_SECRET": os.environ.get("RAZORPAY_KEY_SECRET"),
        "RAZORPAY_WEBHOOK_SECRET": os.environ.get("RAZORPAY_WEBHOOK_SECRET"),
        "RAZORPAY_API_BASE": os.environ.get("RAZORPAY_API_BASE"),
        "CUSTOMER_WEBHOOK_SECRET": os.environ.get("CUSTOMER_WEBHOOK_SECRET"),
        # The sandbox (docs/payments.md): "auto" acts only for providers on local doubles; "0" off.
        "PAYMENT_SANDBOX": os.environ.get("PAYMENT_SANDBOX", "auto"),
        "SANDBOX_WEBHOOK_URL": os.environ.get("SANDBOX_WEBHOOK_URL") or None,
        # Outbound webhooks (docs/webhooks.md): private/loopback URLs only when this is set.
        "WEBHOOK_ALLOW_PRIVATE_URLS": _flag("WEBHOOK_ALLOW_PRIVATE_URLS", False),
        "WEBHOOK_CONCURRENCY": int(os.environ.get("WEBHOOK_CONCURRENCY", "4")),
        # Rate limits (dashboard/api/limits.py, docs/api.md "Rate limits"): counters in Redis when
        # REDIS_URL is set, else in each process's memory.
        "REDIS_URL": os.environ.get("REDIS_URL") or None,
        "RATELIMIT_KEY_PREFIX": os.environ.get("RATELIMIT_KEY_PREFIX", "creditdesk"),
        "API_CUSTOMER_RATE_LIMIT": os.environ.get("API_CUSTOMER_RATE_LIMIT", "600 per minute"),
        # keys are not throttled unless they carry their own limit; this is a default for the others
        "API_KEY_RATE_LIMIT": os.environ.get("API_KEY_RATE_LIMIT", ""),
        "API_IP_RATE_LIMIT": os.environ.get("API_IP_RATE_LIMIT", "120 per minute"),
        # A verified API key is kept this many seconds per process (0: read on every call); a
        # revoked key stops everywhere within it (docs/security.md).
        "API_KEY_CACHE_SECONDS": float(os.environ.get("API_KEY_CACHE_SECONDS", "5")),
        # A pooled connection idle longer than this is pinged before use, and replaced if the
        # database closed it (a restart); busier ones are not (0: ping every use, like
        # SQLAlchemy's pre-ping). DB_POOL_PRE_PING=0 never pings.
        "DB_POOL_PING_IDLE_SECONDS": (float(os.environ.get("DB_POOL_PING_IDLE_SECONDS", "1"))
                                      if _flag("DB_POOL_PRE_PING", True) else None),
        # The single API debit as one PostgreSQL statement (services/ledger/sqldebit.py); 0 runs
        # every debit through the Python path (same rows, about twice the CPU per debit).
        "API_SQL_DEBIT": _flag("API_SQL_DEBIT", True),
        "PUBLIC_BASE_URL": os.environ.get("PUBLIC_BASE_URL", "http://127.0.0.1:5000"),
        "SESSION_COOKIE_SECURE": _flag("SESSION_COOKIE_SECURE", True),
        "SESSION_COOKIE_HTTPONLY": True,
        "SESSION_COOKIE_SAMESITE": "Lax",
        "PERMANENT_SESSION_LIFETIME": timedelta(hours=8),
        "REMEMBER_COOKIE_DURATION": timedelta(hours=8),
        "REMEMBER_COOKIE_SECURE": _flag("SESSION_COOKIE_SECURE", True),
        "REMEMBER_COOKIE_HTTPONLY": True,
        # Staff sign-in (docs/security.md): per-account lock shared by every process, a coarse
        # per-address guard, HSTS over https, and the proxies trusted for client address/scheme.
        "LOGIN_MAX_FAILURES": int(os.environ.get("LOGIN_MAX_FAILURES", "5")),
        "LOGIN_FAILURE_WINDOW_SECONDS": int(os.environ.get("LOGIN_FAILURE_WINDOW_SECONDS", "900")),
        "LOGIN_LOCK_SECONDS": int(os.environ.get("LOGIN_LOCK_SECONDS", "900")),
        "LOGIN_MAX_FAILURES_PER_IP": int(os.environ.get("LOGIN_MAX_FAILURES_PER_IP", "100")),
        "LOGIN_IP_WINDOW_SECONDS": int(os.environ.get("LOGIN_IP_WINDOW_SECONDS", "900")),
        "HSTS_MAX_AGE": int(os.environ.get("HSTS_MAX_AGE", str(365 * 24 * 3600))),
        "PROXY_FIX_X_FOR": int(os.environ.get("PROXY_FIX_X_FOR", "0")),
        "PROXY_FIX_X_PROTO": int(os.environ.get("PROXY_FIX_X_PROTO", "0")),
        "WTF_CSRF_TIME_LIMIT": None,  # tied to the session, which already expires in hours
        "MAX_CONTENT_LENGTH": 2 * 1024 * 1024,
        "LOG_LEVEL": os.environ.get("LOG_LEVEL", "INFO"),
        "LOG_JSON": _flag("LOG_JSON", True),
        # argon2id at OWASP strength; tests lower it through create_app(config=...)
        "ARGON2_TIME_COST": int(os.environ.get("ARGON2_TIME_COST", "3")),
        "ARGON2_MEMORY_COST": int(os.environ.get("ARGON2_MEMORY_COST", str(64 * 1024))),
        # Provider-backed tasks and the metered chat endpoint (docs/tasks.md, docs/api.md)
        "AI_PROVIDERS": _ai_providers(),
        "AI_RUNNER_TYPES": os.environ.get("AI_RUNNER_TYPES", ""),
        "AI_TASK_MAX_ATTEMPTS": int(os.environ.get("AI_TASK_MAX_ATTEMPTS", "3")),
        "AI_RETRY_BASE_SECONDS": float(os.environ.get("AI_RETRY_BASE_SECONDS", "10")),
        "AI_RETRY_MAX_SECONDS": float(os.environ.get("AI_RETRY_MAX_SECONDS", "600")),
        "AI_RUNNER_BATCH": int(os.environ.get("AI_RUNNER_BATCH", "10")),
        "AI_RUNNER_CONCURRENCY": int(os.environ.get("AI_RUNNER_CONCURRENCY", "4")),
        "AI_RUNNER_MAX_TASKS_PER_RUN": int(os.environ.get("AI_RUNNER_MAX_TASKS_PER_RUN", "500")),
        "AI_POLL_LEASE_SECONDS": float(os.environ.get("AI_POLL_LEASE_SECONDS", "25")),
        "AI_CHAT_DEFAULT_MAX_TOKENS": int(os.environ.get("AI_CHAT_DEFAULT_MAX_TOKENS", "1024")),
        "AI_CHAT_CACHE_TTL_SECONDS": int(os.environ.get("AI_CHAT_CACHE_TTL_SECONDS", "0")),
        "AI_CHAT_CACHE_HIT_PERCENT": int(os.environ.get("AI_CHAT_CACHE_HIT_PERCENT", "100")),
    }
