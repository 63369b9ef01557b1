"""pytest fixtures for the provider fakes.

Load them from tests/conftest.py with `pytest_plugins = ["tests.fakes.fixtures"]` (or
`from tests.fakes.fixtures import *`). Each test gets fresh servers on free ports; use
`stripe_server.app_config()` / `razorpay_server.app_config()` (or `payment_provider_config`)
as Flask config so the SDKs talk to them.
"""
from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.fakes.razorpay_server import FakeRazorpay
from tests.fakes.stripe_server import FakeStripe

__all__ = ["payment_provider_config", "razorpay_server", "stripe_server"]


@pytest.fixture
def stripe_server() -> Iterator[FakeStripe]:
    """A fake Stripe API on 127.0.0.1, started for this test and stopped after it."""
    with FakeStripe() as server:
        yield server


@pytest.fixture
def razorpay_server() -> Iterator[FakeRazorpay]:
    """A fake Razorpay API on 127.0.0.1, started for this test and stopped after it."""
    with FakeRazorpay() as server:
        yield server


@pytest.fixture
def payment_provider_config(stripe_server: FakeStripe, razorpay_server: FakeRazorpay) -> dict:
    """Every STRIPE_* and RAZORPAY_* config key, pointed at the two fakes."""
    return {**stripe_server.app_config(), **razorpay_server.app_config(),
            "PUBLIC_BASE_URL": "http://127.0.0.1:5000"}
