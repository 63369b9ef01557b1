"""Helpers of the runner and chat tests (fixtures `fakes` and `ai`: tests/tasks/conftest.py)."""
from __future__ import annotations

import json
from dataclasses import dataclass

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


def configure_ai(app: Flask, fakes: Fakes, **config) -> Fakes:
    fakes.configure(app, **config)
    return fakes


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


HELLO = [{"role": "user", "content": "hello there"}]
# services.tasks.runner.metering: prompt ceil(11/3) + 4 + 3 = 11 tokens, + max_tokens 50 = 61 credits
# held at 1 credit per token. The fake counts words: prompt 8, answer "Echo: hello there" 3.
HELD, ACTUAL = 61, 11


def chat_url(external_id: str = "u1") -> str:
    return f"/api/v1/customers/{external_id}/chat"


def setup(make, credits: int = 1000, external_id: str = "u1"):
    make.feature_price(feature="chat", credits_per_unit=1, unit="token")
    return make.customer(external_id=external_id, credits=credits)


def sse_events(raw: str) -> list[tuple[str, dict]]:
    out = []
    for block in raw.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines())
        out.append((lines["event"], json.loads(lines["data"])))
    return out
