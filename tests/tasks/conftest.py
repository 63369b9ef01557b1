"""Fixtures of the runner and chat tests.

`ai` starts two fake OpenAI-compatible servers (primary and fallback) on 127.0.0.1 and points
the app's AI_PROVIDERS at them, retries due at once (AI_RETRY_BASE_SECONDS=0) and polls leased
for 0 s, so a test drives the loops by calling them.
"""
from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.fakes.openai_server import FakeOpenAI
from tests.tasks.helpers import Fakes, configure_ai


@pytest.fixture
def fakes() -> Iterator[Fakes]:
    with FakeOpenAI(label="primary") as primary, FakeOpenAI(label="fallback") as fallback:
        yield Fakes(primary, fallback)


@pytest.fixture
def ai(app, fakes) -> Fakes:
    """Both fakes configured on the parametrized `app` (SQLite and PostgreSQL)."""
    return configure_ai(app, fakes)
