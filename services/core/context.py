"""Per-request context that services may read without importing Flask (request id for tracing)."""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

_request_id: ContextVar[str | None] = ContextVar("request_id", default=None)


def request_id() -> str | None:
    return _request_id.get()


def set_request_id(value: str | None):
    return _request_id.set(value)


def reset_request_id(token) -> None:
    _request_id.reset(token)


@contextmanager
def request_scope(value: str | None) -> Iterator[None]:
    """Run a block under `value` as the request id (a runner thread, a streamed response's later
    steps): logs, ledger entries and provider calls made inside carry it."""
    token = _request_id.set(value)
    try:
        yield
    finally:
        _request_id.reset(token)
