"""Screenshots of the platform pages for docs/screenshots (run: python -m tests.e2e.screenshots).

The browser tests take them on every run, so a page that breaks still fails them; they write
into docs/screenshots only with UPDATE_SCREENSHOTS=1 (otherwise into a temporary folder), so
an ordinary test run leaves the committed pictures alone.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

OUT = Path(__file__).resolve().parents[2] / "docs" / "screenshots"


def out_dir() -> Path:
    """docs/screenshots when UPDATE_SCREENSHOTS=1, else a fresh temporary folder."""
    if os.environ.get("UPDATE_SCREENSHOTS") == "1":
        OUT.mkdir(parents=True, exist_ok=True)
        return OUT
    return Path(tempfile.mkdtemp(prefix="creditdesk-shots-"))
PAGES = [  # (file name, path)
    ("settings", "/settings/"),
    ("staff", "/staff/"),
    ("api-keys", "/api-keys/"),
    ("audit", "/audit/"),
    ("webhooks", "/webhooks/"),
    ("database", "/admin/db/db_ledger_entries/"),
    ("password", "/account/password"),
]


def capture(page, out: Path = OUT) -> list[Path]:
    """Save the login page (signed out) and each platform page (signed in as admin)."""
    out.mkdir(parents=True, exist_ok=True)
    saved = []
    page.goto("/login")
    page.screenshot(path=str(out / "login.png"))
    saved.append(out / "login.png")
    from tests.e2e.conftest import DEMO_PASSWORDS, sign_in

    sign_in(page, *DEMO_PASSWORDS["admin"])
    page.wait_for_url(lambda url: "/login" not in url)
    for name, path in PAGES:
        page.goto(path)
        page.screenshot(path=str(out / f"{name}.png"), full_page=not path.startswith("/admin/db"))
        saved.append(out / f"{name}.png")
    # Flask-Admin's own templates use a few inline handlers that our CSP blocks (reading works).
    errors = getattr(page, "js_errors", None)
    if errors is not None:
        errors[:] = [e for e in errors if "/admin/db" not in e and "favicon.ico" not in e]
    page.goto("/webhooks/")
    first = page.locator("#results tbody tr a").first
    if first.count():
        first.click()
        page.screenshot(path=str(out / "webhook-detail.png"), full_page=True)
        saved.append(out / "webhook-detail.png")
    return saved


if __name__ == "__main__":  # pragma: no cover - a convenience for humans
    import pytest

    os.environ["UPDATE_SCREENSHOTS"] = "1"
    raise SystemExit(pytest.main(["-q", "-k", "screenshots", str(Path(__file__).parent)]))
