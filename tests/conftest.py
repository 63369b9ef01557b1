"""Shared fixtures: the same suite runs on SQLite and, with TEST_DATABASE_URL, on PostgreSQL.

Each test process gets a private PostgreSQL database (created here, dropped at the end), so
parallel runs (pytest-xdist, or two developers on one machine) never share rows.
"""
from __future__ import annotations

import os
import re
import shutil
import uuid

import pytest
from flask import g
from jinja2 import BytecodeCache
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

import models  # noqa: F401  (registers every table on the metadata)
from dashboard import create_app
from models import db
from services.core import settings as app_settings
from services.staff import accounts as staff_keys
from tests.factories import Factory
from tests.helpers import ApiClient, StaffClient
from tests.live import LiveServer, ai_env

# stripe_server and razorpay_server: fresh provider doubles per test (tests/fakes/fixtures.py).
pytest_plugins = ["tests.fakes.fixtures"]

PG_URL = os.environ.get("TEST_DATABASE_URL")

TEST_CONFIG = {
    "TESTING": True,
    "SECRET_KEY": "test-secret-key",
    "SESSION_COOKIE_SECURE": False,
    "REMEMBER_COOKIE_SECURE": False,
    "SCHEDULER_ENABLED": False,
    "LOG_JSON": False,
    "LOG_LEVEL": "WARNING",
    "ARGON2_TIME_COST": 1,
    "ARGON2_MEMORY_COST": 1024,
    "RATELIMIT_ENABLED": False,
}


def pytest_collection_modifyitems(config, items):
    if PG_URL:
        return
    if os.environ.get("CI"):
        raise pytest.UsageError("CI must run the PostgreSQL tests: set TEST_DATABASE_URL")
    skip = pytest.mark.skip(reason="TEST_DATABASE_URL not set (PostgreSQL tests skipped)")
    for item in items:
        if "pg" in item.keywords:
            item.add_marker(skip)


# TEST_DATABASE_APP_ROLE=1: the app (and the live servers) connect as a non-superuser role that
# owns nothing (services/db_roles.py, docs/security.md), as in production; the harness still
# creates the database and the schema as the owner. .ci/run runs some files this way.
APP_ROLE = os.environ.get("TEST_DATABASE_APP_ROLE") == "1"
_OWNER_URLS: dict[str, str] = {}  # the app's URL -> the owner's URL of the same database
_ENGINES: dict[str, object] = {}


def _engine(url: str):
    if url not in _ENGINES:
        _ENGINES[url] = create_engine(url)
    return _ENGINES[url]


def make_app_role(owner_url: str) -> str:
    """A fresh app role on the database of `owner_url`; answers the app's URL."""
    from services.core import db_roles

    name = f"cd_app_{re.sub(r'[^a-z0-9]', '', os.environ.get('PYTEST_XDIST_WORKER', 'main'))}" \
           f"_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    with _engine(owner_url).begin() as c:
        password = db_roles.create(c, name=name, password=uuid.uuid4().hex)
    app_url = make_url(owner_url).set(username=name, password=password) \
        .render_as_string(hide_password=False)
    _OWNER_URLS[app_url] = owner_url
    return app_url


def _drop_role(admin, app_url: str) -> None:
    with admin.connect() as c:
        c.execute(text(f'DROP ROLE IF EXISTS "{make_url(app_url).username}"'))


@pytest.fixture(scope="session")
def pg_url():
    """A private PostgreSQL database with the schema, for this test process (the app's URL)."""
    if not PG_URL:
        pytest.skip("TEST_DATABASE_URL not set")
    base = make_url(PG_URL)
    worker = re.sub(r"\W", "", os.environ.get("PYTEST_XDIST_WORKER", "main"))
    name = f"{base.database}_{worker}_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    admin = create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(text(f'CREATE DATABASE "{name}"'))
    url = base.set(database=name).render_as_string(hide_password=False)
    db.metadata.create_all(_engine(url))
    app_url = make_app_role(url) if APP_ROLE else url
    yield app_url
    for engine in _ENGINES.values():
        engine.dispose()
    with admin.connect() as c:
        c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    for role_url in _OWNER_URLS:
        _drop_role(admin, role_url)
    admin.dispose()


@pytest.fixture(scope="session")
def pg_owner_url(pg_url):
    """The owner's (superuser's) URL of the private database, whatever the app connects as."""
    return _OWNER_URLS.get(pg_url, pg_url)


@pytest.fixture(scope="session")
def app_role_url(pg_url, pg_owner_url):
    """The private database as the non-superuser app role (one made here if the suite does not
    already run as one)."""
    return pg_url if APP_ROLE else make_app_role(pg_owner_url)


_RESET_SEQUENCES = text(
    "SELECT setval(c.oid::regclass, 1, false) FROM pg_class c "
    "WHERE c.relkind = 'S' AND c.relnamespace = 'public'::regnamespace")


def _truncate_pg(*, fresh_storage: bool = False) -> None:
    """Empty every table before a test, as a fresh database would be (ids restart at 1).

    The immutable ledger tables refuse TRUNCATE and DELETE (triggers, migration 0010), and the app
    role may do neither. So the harness, and only the harness, empties them as the owner (a
    superuser) with session_replication_role = replica for this one transaction: triggers, the
    foreign-key checks among them, do not fire in replica mode. The app's role cannot set it
    (tests/ledger/test_db_hardening.py). One probe finds the tables a test wrote to; DELETE of
    those few and a reset of the sequences take ~4 ms where TRUNCATE of all 32 took ~170 ms.
    DELETE leaves dead rows and index entries behind; `fresh_storage=True` truncates instead,
    for a test whose query plans must not see an earlier test's bloat (tests/test_query_plans.py).
    """
    db.session.rollback()  # no lock of the app's session may make the reset wait
    db.session.close()
    url = db.engine.url.render_as_string(hide_password=False)
    tables = [f'"{t.name}"' for t in db.metadata.sorted_tables]
    with _engine(_OWNER_URLS.get(url, url)).begin() as c:
        c.execute(text("SET LOCAL session_replication_role = replica"))
        if fresh_storage:
            c.execute(text(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE"))
            return
        probe = " UNION ALL ".join(f"(SELECT '{t}' FROM {t} LIMIT 1)" for t in tables)
        for name in c.execute(text(probe)).scalars().all():
            c.execute(text(f"DELETE FROM {name}"))
        c.execute(_RESET_SEQUENCES)


def _share_url_builders() -> None:
    """Every test builds its own app, and werkzeug compiles two URL-builder functions per route
    for each (~650 `compile()` calls, half of create_app's time). The code depends only on the
    rule's text, its parsed parts and its default names, so apps in one test process share it.
    Rules with a default inside the URL (converted through the converter) compile as before."""
    from werkzeug.routing.rules import Rule

    compile_builder = Rule._compile_builder
    shared: dict[tuple, object] = {}

    def _compile_builder(self, append_unknown: bool = True):
        defaults = self.defaults or {}
        if any(dynamic and part in defaults for dynamic, part in self._trace):
            return compile_builder(self, append_unknown)
        key = (self.rule, tuple(self._trace), tuple(defaults), append_unknown)
        if key not in shared:
            shared[key] = compile_builder(self, append_unknown)
        return shared[key]

    Rule._compile_builder = _compile_builder


_share_url_builders()


class _SharedTemplateCode(BytecodeCache):
    """Compiled templates shared by the apps of one test process (every app compiles each
    template it renders again: a quarter of a dashboard test's time). Jinja checks each
    template's source checksum, and every app here has the same Jinja options."""

    def __init__(self) -> None:
        self.code: dict[str, bytes] = {}

    def load_bytecode(self, bucket) -> None:
        if bucket.key in self.code:
            bucket.bytecode_from_string(self.code[bucket.key])

    def dump_bytecode(self, bucket) -> None:
        self.code[bucket.key] = bucket.bytecode_to_string()


_TEMPLATE_CODE = _SharedTemplateCode()


def build_app(url: str, **extra):
    app = create_app({**TEST_CONFIG, "SQLALCHEMY_DATABASE_URI": url, **extra})
    app.jinja_env.bytecode_cache = _TEMPLATE_CODE

    def fresh_g():
        # A test keeps one app context open, which every test request reuses; in production each
        # request has its own. Without this, `g` (Flask-Login's cached user, the CSRF token)
        # would leak from one test client's request into another's.
        for name in list(vars(g)):
            delattr(g, name)

    app.before_request_funcs.setdefault(None, []).insert(0, fresh_g)
    return app


@pytest.fixture(scope="session")
def sqlite_schema(tmp_path_factory):
    """A SQLite file holding the empty schema, made once per test process: a test copies it
    (~1 ms) instead of creating the 32 tables again (~150 ms)."""
    path = tmp_path_factory.mktemp("schema") / "schema.sqlite3"
    engine = create_engine(f"sqlite:///{path}")
    db.metadata.create_all(engine)
    engine.dispose()
    return path


def fresh_sqlite_url(schema, tmp_path) -> str:
    """A new SQLite database with the empty schema, in this test's directory."""
    target = tmp_path / "test.sqlite3"
    shutil.copyfile(schema, target)
    return f"sqlite:///{target}"


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.pg)])
def db_url(request, tmp_path):
    """The database URL of this test: a fresh SQLite file with the schema, or the PostgreSQL
    test database (emptied by `app`)."""
    if request.param == "sqlite":
        return fresh_sqlite_url(request.getfixturevalue("sqlite_schema"), tmp_path)
    return request.getfixturevalue("pg_url")


@pytest.fixture
def app(db_url):
    """The app with an empty schema, inside an app context."""
    app = build_app(db_url)
    with app.app_context():
        if not db_url.startswith("sqlite"):
            _truncate_pg()
        app_settings.clear_cache()
        staff_keys.forget_api_key()  # the per-process API key cache: nothing from another test
        yield app
        db.session.remove()
        db.engine.dispose()


@pytest.fixture
def pg_app(pg_url):
    """PostgreSQL only (row locks, SKIP LOCKED, advisory locks, processes)."""
    app = build_app(pg_url)
    with app.app_context():
        _truncate_pg()
        app_settings.clear_cache()
        staff_keys.forget_api_key()  # the per-process API key cache: nothing from another test
        yield app
        db.session.remove()
        db.engine.dispose()


@pytest.fixture
def sqlite_app(tmp_path, sqlite_schema):
    app = build_app(fresh_sqlite_url(sqlite_schema, tmp_path))
    with app.app_context():
        app_settings.clear_cache()
        staff_keys.forget_api_key()  # the per-process API key cache: nothing from another test
        yield app
        db.session.remove()
        db.engine.dispose()


@pytest.fixture
def make(app):
    return Factory()


@pytest.fixture
def factory():
    """Factory for tests on one database (with pg_app or sqlite_app); `make` brings `app`."""
    return Factory()


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def login(app, make):
    """login("admin") -> a StaffClient signed in with a fresh staff member of that role."""
    def _login(role: str = "admin", **kw) -> StaffClient:
        staff = make.staff(role=role, **kw)
        c = StaffClient(app.test_client(), staff)
        c.sign_in()
        return c
    return _login


@pytest.fixture
def api(app, make):
    """An API client holding a key with every scope."""
    _, plain = make.api_key()
    return ApiClient(app, plain)


@pytest.fixture
def api_as(app, make):
    """api_as("debits:write", ...) -> a client whose key has exactly those scopes."""
    def _client(*scopes: str) -> ApiClient:
        _, plain = make.api_key(scopes=list(scopes))
        return ApiClient(app, plain)
    return _client


LIVE_SECRETS = {"CRON_JOBS_USERNAME": "cron", "CRON_JOBS_PASSWORD": "cron-test-password",
                "CUSTOMER_WEBHOOK_SECRET": "customer-webhook-test-secret"}


@pytest.fixture
def pay_app(app, stripe_server, razorpay_server):
    """The app pointed at both provider fakes, with the customer webhook secret set
    (tests/payments/, tests/refunds/)."""
    app.config.update(stripe_server.app_config(), **razorpay_server.app_config(),
                      PAYMENT_PROVIDER_TIMEOUT=2,
                      CUSTOMER_WEBHOOK_SECRET=LIVE_SECRETS["CUSTOMER_WEBHOOK_SECRET"])
    return app


@pytest.fixture
def pay_api(pay_app, make):
    """An API client whose key has the payments:write scope only."""
    _, plain = make.api_key(scopes=["payments:write"])
    return ApiClient(pay_app, plain)


@pytest.fixture
def live(app, db_url, tmp_path):
    """live(workers=2, **env) -> a started LiveServer (tests/live.py) on this test's database.

    Every provider points at a fresh double (`server.stripe`, `server.razorpay`, `server.ai`),
    cron and customer-webhook secrets are LIVE_SECRETS; `env` adds or overrides variables (None
    removes one). Rows the test writes must be committed before the server can see them.
    """
    from tests.fakes.openai_server import FakeOpenAI
    from tests.fakes.razorpay_server import FakeRazorpay
    from tests.fakes.stripe_server import FakeStripe

    db.session.commit()
    started: list[LiveServer] = []
    with FakeStripe() as stripe, FakeRazorpay() as razorpay, FakeOpenAI(label="primary") as ai:
        def start(*, workers: int = 2, threads: int = 3, **env) -> LiveServer:
            full = {**stripe.app_config(), **razorpay.app_config(), **ai_env(ai),
                    "AI_PROVIDER_NAMES": "primary", **LIVE_SECRETS, **env}
            server = LiveServer(db_url, tmp_path / f"gunicorn{len(started)}.log",
                                workers=workers, threads=threads, env=full)
            server.stripe, server.razorpay, server.ai = stripe, razorpay, ai
            started.append(server)
            return server.start()

        yield start
        for server in started:
            server.stop()
