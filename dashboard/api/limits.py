"""Rate limits that follow who is calling (docs/api.md, "Rate limits").

- A valid API key is not throttled: the product backend calls with one key for all its users.
  A key may carry its own limit (api_keys.rate_limit: the API keys page, or
  `create-api-key --rate-limit`); API_KEY_RATE_LIMIT is a default for keys without one (unset).
- Each customer has API_CUSTOMER_RATE_LIMIT (600 per minute) over what spends their credits:
  debits, each batch item, task creation and chat, whichever key calls. Over it: 429
  RATE_LIMITED naming the customer (a batch item gets that as its own result).
- Unauthenticated calls (no key, a wrong key, wrong cron credentials) have API_IP_RATE_LIMIT per
  address. A valid key or valid cron credentials never count against it.

Counters live in Redis when REDIS_URL is set (one budget across workers and replicas), in the
process's memory otherwise (each worker counts alone: a warning says so when WEB_CONCURRENCY > 1).
A storage failure never fails a call: it is logged and the call is allowed, because money calls
must not depend on the limiter's storage.
"""
from __future__ import annotations

import logging
import math
import time
from collections import defaultdict

from flask import Flask, current_app, g, request
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from limits import RateLimitItem, parse_many

from dashboard.api import cron
from dashboard.api.auth import current_api_key
from services.core.errors import RateLimited

log = logging.getLogger("creditdesk.api.limits")

DEFAULT_IP_LIMIT = "120 per minute"
DEFAULT_CUSTOMER_LIMIT = "600 per minute"
# A hung Redis must not hang a debit: give up quickly, log, allow.
REDIS_TIMEOUTS = {"socket_timeout": 0.5, "socket_connect_timeout": 0.5}


def _limiter() -> Limiter | None:
    return current_app.extensions.get("creditdesk_limiter")


def _is_api() -> bool:
    return request.path.startswith("/api/") or request.path == "/api"


def _rate_key() -> str:
    key = current_api_key() if _is_api() else None
    return f"key:{key.id}" if key is not None else f"ip:{get_remote_address()}"


OFF = ("", "off", "none", "0")


def _key_limit(key) -> str:
    """The key's own limit, else API_KEY_RATE_LIMIT; "" means not throttled."""
    raw = (getattr(key, "rate_limit", None) or current_app.config.get("API_KEY_RATE_LIMIT") or "").strip()
    return "" if raw.lower() in OFF else raw


def _exempt() -> bool:
    """True when this request is not counted by the per-key / per-IP limit."""
    if not _is_api():
        return True
    if request.blueprint in current_app.extensions.get("creditdesk_api_unlimited", set()):
        return True
    key = current_api_key()
    if key is not None:
        return not _key_limit(key)
    return cron.valid_credentials()


def _unthrottled_key() -> bool:
    if not _is_api():
        return False
    key = current_api_key()
    return key is not None and not _key_limit(key)


def _limit_value() -> str:
    key = current_api_key()
    if key is not None:
        return _key_limit(key)
    return current_app.config.get("API_IP_RATE_LIMIT") or DEFAULT_IP_LIMIT


def _customer_items() -> list[RateLimitItem]:
    raw = (current_app.config.get("API_CUSTOMER_RATE_LIMIT") or "").strip()
    if raw.lower() in OFF:
        return []
    cache = current_app.extensions.setdefault("creditdesk_customer_limits", {})
    if raw not in cache:
        cache[raw] = parse_many(raw)
    return cache[raw]


def _seconds_until(reset_time: float, item: RateLimitItem) -> int:
    return max(1, min(math.ceil(reset_time - time.time()), int(item.get_expiry())))


def _prefix() -> str:
    return current_app.extensions["creditdesk_limit_prefix"]


def _hit(items: list[RateLimitItem], customer: str, cost: int = 1) -> RateLimitItem | None:
    """Count `cost` calls for the customer; the limit it breaks (nothing is counted then), or None.
    One limit is one atomic hit; with several ("600 per minute; 10000 per hour") a refusal by the
    second may leave the first counted, which errs on the side of refusing."""
    limiter, prefix = _limiter(), _prefix()
    if len(items) > 1:
        for item in items:
            if not limiter.limiter.test(item, prefix, "customer", customer, cost=cost):
                return item
    for item in items:
        if not limiter.limiter.hit(item, prefix, "customer", customer, cost=cost):
            return item
    return None


def _refusal(item: RateLimitItem, customer: str) -> RateLimited:
    try:
        stats = _limiter().limiter.get_window_stats(item, _prefix(), "customer", customer)
        wait = _seconds_until(stats.reset_time, item)
    except Exception:  # noqa: BLE001 - the refusal stands; only its hint is unknown
        wait = int(item.get_expiry())
    return RateLimited(f"Too many requests for customer {customer!r}: the limit is {item}. Retry in "
                       f"{wait} s.", retry_after=wait,
                       details={"customer": customer, "limit": str(item), "retry_after": wait})


def _active() -> list[RateLimitItem]:
    limiter = _limiter()
    if limiter is None or not limiter.enabled:
        return []
    return _customer_items()


_COUNTED = "creditdesk.customer_counted"


def check_customer(customer: str) -> None:
    """Count one call that spends this customer's credits; RateLimited (429) over the limit.
    Counted once per request, however many times a request's paths ask."""
    items = _active()
    if not items or request.environ.get(_COUNTED) == customer:
        return
    try:
        broken = _hit(items, customer)
    except Exception:  # noqa: BLE001 - see the module docstring: log and allow
        log.warning("api.limits.storage_failed", exc_info=True, extra={"customer": customer})
        return
    if broken is not None:
        err = _refusal(broken, customer)
        g.retry_after = err.retry_after
        log.info("api.limits.customer", extra={"customer": customer, "limit": str(broken)})
        raise err
    request.environ[_COUNTED] = customer


def check_batch(customers: list[str]) -> dict[int, RateLimited]:
    """Count each batch item for its customer: {index: RateLimited} for the items over the limit.

    Items of one customer are counted in one round trip when they all fit; otherwise one at a
    time, in order, so exactly the customer's remaining budget goes through."""
    items = _active()
    refused: dict[int, RateLimited] = {}
    if not items:
        return refused
    by_customer: dict[str, list[int]] = defaultdict(list)
    for i, c in enumerate(customers):
        by_customer[c].append(i)
    try:
        for customer, indexes in by_customer.items():
            if _hit(items, customer, cost=len(indexes)) is None:
                continue
            for n in range(len(indexes)):
                broken = _hit(items, customer)
                if broken is not None:
                    refused.update(dict.fromkeys(indexes[n:], _refusal(broken, customer)))
                    break
    except Exception:  # noqa: BLE001 - log and allow
        log.warning("api.limits.storage_failed", exc_info=True)
    return refused


def _retry_after_header(resp):
    if resp.status_code == 429 and "Retry-After" not in resp.headers and g.get("retry_after"):
        resp.headers["Retry-After"] = str(g.retry_after)
    return resp


def retry_after_seconds() -> int:
    """Seconds until the per-key / per-IP limit this request broke lets a call through."""
    limiter = _limiter()
    current = limiter.current_limit if limiter else None
    if current is None:
        return 60
    return _seconds_until(current.reset_at, current.limit)


def breach_message() -> str:
    """What the per-key / per-IP 429 says: whose budget ran out."""
    key = current_api_key() if _is_api() else None
    limiter = _limiter()
    current = limiter.current_limit if limiter else None
    limit = f" ({current.limit})" if current is not None else ""
    who = f"this API key{limit}" if key is not None else f"unauthenticated calls from this address{limit}"
    return f"Too many requests from {who}; retry after the delay in Retry-After."


def init_app(app: Flask) -> Limiter:
    cfg = app.config
    if cfg.get("REDIS_URL") and not cfg.get("RATELIMIT_STORAGE_URI"):
        cfg["RATELIMIT_STORAGE_URI"] = cfg["REDIS_URL"]
    cfg.setdefault("RATELIMIT_STORAGE_URI", "memory://")
    cfg.setdefault("RATELIMIT_STRATEGY", "moving-window")  # exact: N in any window, no edge bursts
    if cfg["RATELIMIT_STORAGE_URI"].startswith(("redis", "rediss")):
        cfg.setdefault("RATELIMIT_STORAGE_OPTIONS", dict(REDIS_TIMEOUTS))
    # RATELIMIT_KEY_PREFIX: one deployment (or one test) per prefix on a shared Redis.
    prefix = cfg.get("RATELIMIT_KEY_PREFIX") or "creditdesk"
    limiter = Limiter(key_func=_rate_key, application_limits=[_limit_value],
                      application_limits_exempt_when=_exempt, headers_enabled=False,
                      key_prefix=prefix, swallow_errors=True)
    limiter.init_app(app)
    # The everyday call (a valid key without its own limit) is exempt from every limit Flask-Limiter
    # holds (the per-key limit is its only API limit): say so before it resolves them.
    limiter.request_filter(_unthrottled_key)
    # ...and skip Flask-Limiter's per-request work altogether for that call (it resolves the
    # endpoint, its exemptions and its limits before it asks the filter): the per-key / per-IP
    # limit applies to keys with a limit and to calls without a valid key, as before.
    hooks = app.before_request_funcs.setdefault(None, [])
    check = limiter._check_request_limit

    def _check_unless_unthrottled():
        return None if _unthrottled_key() else check()

    if check in hooks:  # not there when limits are disabled (RATELIMIT_ENABLED=False)
        hooks[hooks.index(check)] = _check_unless_unthrottled
    for name in ("API_CUSTOMER_RATE_LIMIT", "API_KEY_RATE_LIMIT", "API_IP_RATE_LIMIT"):
        raw = (cfg.get(name) or "").strip()
        if raw.lower() not in OFF:
            try:  # a typo must stop the start, not turn every money call into a 500
                parse_many(raw)
            except ValueError:
                raise ValueError(f"{name}={raw!r} is not a rate limit (write e.g. "
                                 "'600 per minute' or '10/second; 500/hour')") from None
    app.extensions["creditdesk_limiter"] = limiter
    app.extensions["creditdesk_limit_prefix"] = prefix
    app.after_request(_retry_after_header)
    if (limiter.enabled and cfg["RATELIMIT_STORAGE_URI"].startswith("memory")
            and cfg.get("WEB_CONCURRENCY", 1) > 1):
        log.warning("api.limits.memory_storage: rate-limit counters are kept in this process's "
                    "memory while WEB_CONCURRENCY=%s; every worker counts alone, so each limit is "
                    "multiplied by the number of workers and replicas. Set REDIS_URL.",
                    cfg["WEB_CONCURRENCY"], extra={"workers": cfg["WEB_CONCURRENCY"]})
    return limiter


__all__ = ["breach_message", "check_batch", "check_customer", "init_app", "retry_after_seconds"]
