"""Fixtures and helpers for the runner and chat tests (imported by them; holds no tests itself).

`ai` starts two fake OpenAI-compatible servers (primary and fallback) on 127.0.0.1 and points
the app's AI_PROVIDERS at them, retries due at once (AI_RETRY_BASE_SECONDS=0) and polls leased
for 0 s, so a test drives the loops by calling them.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from flask import Flask
from sqlalchemy import func, select

from models import LedgerEntry, Task, TaskLog, db
from tests.fakes.openai_server import FakeOpenAI


@dataclass
class Fakes:
    primary: FakeOpenAI
    fallback: FakeOpenAI

    def configure(self, app: Flask, *, fallback: bool = True, **config) -> None:
        providers = [self.primary.app_config("primary")]
        if fallback:
            providers.append(self.fallback.app_config("fallback"))
        app.config.update({"AI_PROVIDERS": providers, "AI_RETRY_BASE_SECONDS": 0,
                           "AI_POLL_LEASE_SECONDS": 0, "AI_TASK_MAX_ATTEMPTS": 3, **config})


@pytest.fixture
def fakes() -> Iterator[Fakes]:
    with FakeOpenAI(label="primary") as primary, FakeOpenAI(label="fallback") as fallback:
        yield Fakes(primary, fallback)


def configure_ai(app: Flask, fakes: Fakes, **config) -> Fakes:
    fakes.configure(app, **config)
    return fakes


@pytest.fixture
def ai(app, fakes) -> Fakes:
    """Both fakes configured on the parametrized `app` (SQLite and PostgreSQL)."""
    return configure_ai(app, fakes)


def fresh(task_id: int) -> Task:
    db.session.rollback()
    db.session.expire_all()
    return db.session.get(Task, task_id)


def log_messages(task_id: int) -> list[str]:
    db.session.rollback()
    return list(db.session.scalars(select(TaskLog.message).where(TaskLog.task_id == task_id)
                                   .order_by(TaskLog.id)))


def entries_of(task_id: int) -> list[tuple[str, int]]:
    db.session.rollback()
    return [tuple(r) for r in db.session.execute(
        select(LedgerEntry.type, LedgerEntry.amount).where(LedgerEntry.task_id == task_id)
        .order_by(LedgerEntry.id))]


def entry_count(**where) -> int:
    q = select(func.count()).select_from(LedgerEntry)
    for k, v in where.items():
        q = q.where(getattr(LedgerEntry, k) == v)
    return db.session.scalar(q)


def chat_input(text: str = "hello there", **extra) -> dict:
    return {"messages": [{"role": "user", "content": text}], **extra}
