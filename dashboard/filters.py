"""Jinja filters: one format for numbers, money and dates everywhere."""
from __future__ import annotations

import json
from datetime import datetime

from flask import Flask
from markupsafe import Markup, escape

from services.core import money as minor

DATE_FMT = "%Y-%m-%d %H:%M"
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


def money(value, currency: str | None = "USD") -> str:
    """Minor units as staff read them: $19.99, ¥500, 12.345 KWD (decimals: services/core/money)."""
    if value is None:
        return "—"
    cur = (currency or "USD").upper()
    sym = SYMBOLS.get(cur, "")
    text = f"{minor.from_minor(value, cur):,.{minor.minor_units(cur)}f}"
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


def tojson_text(value) -> str:
    """A JSON-ish value as plain text (strings bare, the rest as JSON); autoescaped by Jinja."""
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, sort_keys=True, default=str)


def tojson_pretty(value) -> str:
    """Indented JSON as plain text for a <pre> (autoescaped; never marked safe)."""
    if value is None:
        return "—"
    return json.dumps(value, ensure_ascii=False, sort_keys=True, indent=2, default=str)


def truncate_action(action: str) -> str:
    """The area of a dotted action: "staff.create" -> "staff"."""
    return (action or "").split(".", 1)[0]


def init_app(app: Flask) -> None:
    app.jinja_env.filters.update(credits=credits, signed=signed, money=money, dt=dt,
                                 dt_tag=dt_tag, tojson_text=tojson_text,
                                 tojson_pretty=tojson_pretty, truncate_action=truncate_action)
