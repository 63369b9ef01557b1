"""Browser tests: the real app served on 127.0.0.1 and Debian's Chromium driven by Playwright.

Fixtures
- `live_server` (session): a fresh SQLite file seeded with `services.demo.dataset.load(customers=60,
  months=2)` and the demo staff, served by werkzeug in a thread. Its `.url` is the base URL.
- `browser` (session): headless Chromium from /usr/bin/chromium (never a downloaded browser).
- `page`: a new browser context and page per test, with `base_url` set to the server, so
  `page.goto("/customers/")` works.
- `login_as(role)`: signs the page in through the login form as the demo admin, support or
  finance user and returns the page (on the overview).

The server is shared by every browser test of a session: a test that changes data should use
names of its own (for example with a uuid) rather than expect an untouched demo set.
"""
from __future__ import annotations

import os
import shutil
import threading
from dataclasses import dataclass
from pathlib import Path

import pytest

CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run", "--disable-sync"]
DEMO_PASSWORDS = {
    "admin": ("admin@creditdesk.test", "demo-admin-password"),
    "support": ("support@creditdesk.test", "demo-support-password"),
    "finance": ("finance@creditdesk.test", "demo-finance-password"),
}
E2E_DIR = Path(__file__).resolve().parent


def pytest_configure(config):
    # pytest-xdist registers this marker; register it too so that `-p no:xdist` still runs.
    config.addinivalue_line("markers", "xdist_group(name): run these tests on one xdist worker")


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    """Every test under tests/e2e is an e2e test and runs on one xdist worker (one server)."""
    for item in items:
        if Path(str(item.fspath)).resolve().is_relative_to(E2E_DIR):
            item.add_marker(pytest.mark.e2e)
            item.add_marker(pytest.mark.xdist_group("e2e"))


@dataclass
class LiveServer:
    url: str
    app: object
    db_path: Path


@pytest.fixture(scope="session")
def live_server(tmp_path_factory):
    """The whole app on a free port of 127.0.0.1 with a seeded SQLite database."""
    from werkzeug.serving import make_server

    import models  # noqa: F401  (every table on the metadata)
    from dashboard import create_app
    from models import db
    from services.core import settings as app_settings
    from services.demo import dataset as demo

    db_path = tmp_path_factory.mktemp("e2e") / "e2e.sqlite3"
    app = create_app({
        "TESTING": False,  # real error pages and real CSRF, as in production
        "SECRET_KEY": "e2e-secret-key",
        "SQLALCHEMY_DATABASE_URI": f"sqlite:///{db_path}",
        "SESSION_COOKIE_SECURE": False,  # plain http on 127.0.0.1
        "REMEMBER_COOKIE_SECURE": False,
        "SCHEDULER_ENABLED": False,
        "LOG_JSON": False,
        "LOG_LEVEL": "WARNING",
        "ARGON2_TIME_COST": 1,
        "ARGON2_MEMORY_COST": 1024,
    })
    with app.app_context():
        db.create_all()
        demo.load(customers=60, months=2, seed=11)
        app_settings.clear_cache()
        db.session.remove()
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, name="e2e-server", daemon=True)
    thread.start()
    try:
        yield LiveServer(url=f"http://127.0.0.1:{server.server_port}", app=app, db_path=db_path)
    finally:
        server.shutdown()
        thread.join(timeout=10)
        with app.app_context():
            db.engine.dispose()


@pytest.fixture(scope="session")
def browser():
    if not Path(CHROMIUM).exists() and not shutil.which("chromium"):
        pytest.fail(f"Chromium not found at {CHROMIUM}: apt-get install -y chromium")
    from playwright.sync_api import expect, sync_playwright

    # Assertions wait as long as actions do: a loaded CI machine answers an htmx request later.
    expect.set_options(timeout=10_000)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser, live_server):
    context = browser.new_context(base_url=live_server.url, viewport={"width": 1360, "height": 900})
    context.set_default_timeout(10_000)
    pg = context.new_page()
    errors: list[str] = []
    # A CSP violation or script error shows up here; tests may assert `page.js_errors == []`.
    pg.on("pageerror", lambda exc: errors.append(str(exc)))
    pg.on("console", lambda msg: errors.append(f"{msg.text} at {msg.location.get('url')}")
          if msg.type == "error" else None)
    pg.js_errors = errors
    yield pg
    context.close()


def sign_in(pg, email: str, password: str) -> None:
    pg.goto("/login")
    pg.get_by_label("Email").fill(email)
    pg.get_by_label("Password").fill(password)
    pg.get_by_role("button", name="Sign in").click()


@pytest.fixture
def login_as(page):
    """login_as("admin" | "support" | "finance") -> the page, signed in, on the overview."""
    def _login(role: str = "admin"):
        email, password = DEMO_PASSWORDS[role]
        sign_in(page, email, password)
        page.wait_for_url(lambda url: "/login" not in url)
        return page
    return _login
