"""Fixtures of the job tests."""
from __future__ import annotations

import pytest

from tests.jobs.helpers import Breakage


@pytest.fixture
def breakage(app, db_url, request):
    """Inject real failures (database triggers) into this test's database; healed afterwards."""
    owner = request.getfixturevalue("pg_owner_url") if db_url.startswith("postgresql") else None
    b = Breakage(owner)
    yield b
    b.close()
