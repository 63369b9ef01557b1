"""Fixtures of tests/events: a real HTTP receiver on 127.0.0.1 and the app allowing it."""
from __future__ import annotations

import pytest

from tests.events.helpers import Receiver


@pytest.fixture
def receiver():
    """A webhook receiver (http.server in a thread); `receiver.answers` scripts its statuses."""
    with Receiver() as r:
        yield r


@pytest.fixture
def local_app(app):
    """The app allowed to send to 127.0.0.1 (WEBHOOK_ALLOW_PRIVATE_URLS=1)."""
    app.config["WEBHOOK_ALLOW_PRIVATE_URLS"] = True
    return app
