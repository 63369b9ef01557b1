"""Geometry of the server-rendered SVG charts (templates/analytics/_charts.html draws them).

No JavaScript and no inline style: coordinates here, colours from classes in static/app.css,
tooltips as SVG <title> elements.
"""
from __future__ import annotations

import math
from datetime import date

W, H = 720, 220
PAD_L, PAD_R, PAD_T, PAD_B = 52, 12, 10, 24


def nice_max(value: float) -> float:
    """The smallest 1, 2, 2.5 or 5 x 10^k at or above value (at least 1)."""
    if value <= 1:
        return 1
    exp = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 2.5, 5, 10):
        if value <= step * exp:
            return step * exp
    return 10 * exp


def compact(value: float) -> str:
    """1234 -> 1.2k, 2500000 -> 2.5M (axis labels)."""
    v = abs(value)
    sign = "−" if value < 0 else ""
    for div, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if v >= div:
            text = f"{v / div:.1f}".rstrip("0").rstrip(".")
            return f"{sign}{text}{suffix}"
    return f"{sign}{v:,.0f}" if v == int(v) else f"{sign}{v:,.2f}"


def _frame(days: list[date], top: float, width: int, height: int, unit: str = "") -> dict:
    x0, x1, y0, y1 = PAD_L, width - PAD_R, PAD_T, height - PAD_B
    n = max(len(days), 1)
    step = (x1 - x0) / n
    yticks = [(round(y1 - (y1 - y0) * f, 1), compact(top * f) + unit) for f in (0, .25, .5, .75, 1)]
    marks = sorted({0, n // 2, n - 1}) if n > 2 else list(range(n))
    xticks = [(round(x0 + step * (i + .5), 1), days[i].strftime("%b %d")) for i in marks if days]
    return {"width": width, "height": height, "x0": x0, "x1": x1, "y0": y0, "y1": y1,
            "step": step, "yticks": yticks, "xticks": xticks}


def lines(days: list[date], series: list[tuple[str, str, list[int]]], *, width: int = W,
          height: int = H, unit: str = "") -> dict:
    """Line chart: one polyline per (label, css class, values); a dot with a tooltip per point."""
    top = nice_max(max((v for _l, _c, vals in series for v in vals), default=0))
    f = _frame(days, top, width, height, unit)
    out = []
    for label, cls, values in series:
        pts = []
        dots = []
        for i, v in enumerate(values):
            x = round(f["x0"] + f["step"] * (i + .5), 1)
            y = round(f["y1"] - (f["y1"] - f["y0"]) * max(v, 0) / top, 1)
            pts.append(f"{x},{y}")
            dots.append({"x": x, "y": y, "title": f"{days[i]:%Y-%m-%d} · {label}: {v:,}{unit}"})
        out.append({"label": label, "cls": cls, "points": " ".join(pts),
                    "dots": dots if len(values) <= 120 else [], "total": sum(values)})
    f["series"] = out
    return f


def columns(days: list[date], series: list[tuple[str, str, list[int]]], *, width: int = W,
            height: int = H, unit: str = "", fmt=None) -> dict:
    """Stacked columns per day; one segment per (label, css class, values)."""
    totals = [sum(vals[i] for _l, _c, vals in series) for i in range(len(days))]
    top = nice_max(max(totals, default=0))
    f = _frame(days, top, width, height, unit)
    if fmt is not None:  # money: ticks in the currency's format
        f["yticks"] = [(y, _tick(fmt, top * k))
                       for (y, _t), k in zip(f["yticks"], (0, .25, .5, .75, 1), strict=True)]
    fmt = fmt or (lambda v: f"{v:,}{unit}")
    bar_w = max(round(f["step"] * .72, 1), 1)
    bars = []
    for i, d in enumerate(days):
        base = f["y1"]
        x = round(f["x0"] + f["step"] * i + (f["step"] - bar_w) / 2, 1)
        for label, cls, values in series:
            v = max(values[i], 0)
            if not v:
                continue
            h = (f["y1"] - f["y0"]) * v / top
            bars.append({"x": x, "y": round(base - h, 1), "w": bar_w, "h": round(max(h, .5), 1),
                         "cls": cls, "title": f"{d:%Y-%m-%d} · {label}: {fmt(values[i])}"})
            base -= h
    f["bars"] = bars
    f["legend"] = [{"label": label, "cls": cls, "total": sum(vals)} for label, cls, vals in series]
    return f


def _tick(fmt, value: float) -> str:
    try:
        return fmt(value)
    except (TypeError, ValueError):
        return compact(value)


def hbars(items: list[tuple[str, int, int]], *, width: int = 100) -> list[dict]:
    """Horizontal bars: (label, value, part of it) -> widths in percent of the largest value."""
    top = max((v for _l, v, _p in items), default=0) or 1
    return [{"label": label, "value": v, "part": p, "w": round(width * v / top, 2),
             "pw": round(width * max(min(p, v), 0) / top, 2)} for label, v, p in items]
