"""Jinja filters: one format for numbers, money and dates everywhere."""
from __future__ import annotations

from datetime import datetime

from flask import Flask
from markupsafe import Markup, escape

DATE_FMT = "%Y-%m-%d %H:%M"
ZERO_DECIMAL = {"JPY", "KRW", "VND", "CLP", "ISK", "UGX"}
SYMBOLS = {"USD": "$", "EUR": "€", "GBP": "£", "INR": "₹", "JPY": "¥"}


def credits(value) -> str:
    """12,345 (and −1,200 with a real minus sign)."""
    if value is None:
        return "—"
    v = int(value)
    return f"−{abs(v):,}" if v < 0 else f"{v:,}"


def signed(value) -> str:
    if value is None:
        return "—"
    v = int(value)
    return f"+{v:,}" if v > 0 else credits(v)


def money(minor, currency: str | None = "USD") -> str:
    if minor is None:
        return "—"
    cur = (currency or "USD").upper()
    sym = SYMBOLS.get(cur, "")
    if cur in ZERO_DECIMAL:
        text = f"{int(minor):,}"
    else:
        text = f"{int(minor) / 100:,.2f}"
    neg = text.startswith("-")
    text = text.lstrip("-")
    out = f"{sym}{text}" if sym else f"{text} {cur}"
    return f"−{out}" if neg else out


def dt(value: datetime | None) -> str:
    """Every timestamp is stored in UTC and shown as such."""
    return "—" if value is None else value.strftime(DATE_FMT) + " UTC"


def dt_tag(value: datetime | None) -> Markup:
    """A <time> element with the machine-readable value (escaped; no user data inside)."""
    if value is None:
        return Markup("—")
    return Markup('<time datetime="{}Z">{}</time>').format(
        escape(value.isoformat(timespec="seconds")), dt(value))


def init_app(app: Flask) -> None:
    app.jinja_env.filters.update(credits=credits, signed=signed, money=money, dt=dt,
                                 dt_tag=dt_tag)
