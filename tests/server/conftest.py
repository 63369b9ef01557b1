"""Helpers of the real-server contract tests: reading server-sent events off a live socket,
and reading rows the server wrote (the test's session must not answer from its own cache)."""
from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator

import requests
from sqlalchemy import select

from models import LedgerEntry, Task, db


def sse(resp: requests.Response) -> Iterator[tuple[str, dict]]:
    """(event, data) pairs of a streamed `requests` response, each as soon as its blank line
    arrives (iter_lines with chunk_size=1: nothing waits for a buffer to fill)."""
    name, data = None, []
    for raw in resp.iter_lines(chunk_size=1, decode_unicode=True):
        if raw:
            field, _, value = raw.partition(":")
            if field == "event":
                name = value.strip()
            elif field == "data":
                data.append(value.strip())
            continue
        if name or data:
            yield name or "message", json.loads("\n".join(data))
        name, data = None, []


def task_entries(task_id: int) -> list[tuple[str, int]]:
    """(type, amount) of the ledger entries of a task, oldest first, as the database has them."""
    db.session.rollback()
    return [tuple(r) for r in db.session.execute(
        select(LedgerEntry.type, LedgerEntry.amount).where(LedgerEntry.task_id == task_id)
        .order_by(LedgerEntry.id))]


def task_row(task_id: int) -> Task:
    db.session.rollback()
    db.session.expire_all()
    return db.session.get(Task, task_id)


def eventually(check: Callable[[], object], *, timeout: float = 10.0, every: float = 0.05):
    """check()'s first truthy answer within `timeout` seconds (the server settles in its own
    process: a hang-up is noticed at its next write), else its last answer."""
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got or time.monotonic() > deadline:
            return got
        time.sleep(every)
