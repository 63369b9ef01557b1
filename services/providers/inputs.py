"""Checks both provider clients make on what they send: money in minor units, an ISO currency."""
from __future__ import annotations

import re


def check_minor(amount: int) -> None:
    """Refuse anything but a positive integer of minor units (bool is an int too)."""
    if isinstance(amount, bool) or not isinstance(amount, int) or amount <= 0:
        raise ValueError(f"amount must be a positive integer of minor units, got {amount!r}")


def currency_code(code: str) -> str:
    """The three-letter code as given; each provider wants its own case."""
    if not re.fullmatch(r"[A-Za-z]{3}", code or ""):
        raise ValueError(f"not an ISO 4217 currency code: {code!r}")
    return code
