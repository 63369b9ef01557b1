"""The immutable ledger holds in the database: no TRUNCATE, and an app role that cannot get around
the triggers (no ownership, no superuser, no session_replication_role). PostgreSQL only: SQLite
has no TRUNCATE, and `DELETE FROM` fires the row triggers that test_ledger.py covers.
"""
from __future__ import annotations

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from models import db
from services.ledger import posting as ledger
from services.ledger import reconcile
from tests.conftest import build_app
from tests.factories import Factory
from tests.helpers import ApiClient

pytestmark = pytest.mark.pg


@pytest.fixture
def owner(pg_app, pg_owner_url):
    """A connection as the database owner (a superuser, as the test harness is)."""
    engine = create_engine(pg_owner_url)
    with engine.connect() as conn:
        conn.execute(text("SET lock_timeout = '10s'"))  # a lock held by mistake fails, not hangs
        conn.commit()
        yield conn
    engine.dispose()


@pytest.fixture
def as_role(pg_app, app_role_url):
    engine = create_engine(app_role_url)
    with engine.connect() as conn:
        yield conn
    engine.dispose()


def _history(factory) -> int:
    c = factory.customer(credits=40)
    ledger.debit(customer_id=c.id, credits=5, feature="chat")
    customer_id = c.id
    db.session.commit()  # the app's session holds no lock while the owner tries a TRUNCATE
    return customer_id


@pytest.mark.parametrize("sql", ["TRUNCATE ledger_entries CASCADE", "TRUNCATE allocations",
                                 "TRUNCATE customers CASCADE", "TRUNCATE accounts, ledger_entries, "
                                 "allocations, credit_grants, customers RESTART IDENTITY CASCADE"])
def test_truncate_of_the_ledger_is_refused_even_for_the_owner(factory, owner, sql):
    customer_id = _history(factory)
    with pytest.raises(DBAPIError, match="immutable"):
        owner.execute(text(sql))
    owner.rollback()
    assert ledger.balance(customer_id) == 35 and reconcile.run().ok


@pytest.mark.parametrize("sql", [
    "TRUNCATE ledger_entries CASCADE",
    "TRUNCATE accounts CASCADE",
    "SET session_replication_role = replica",
    "UPDATE ledger_entries SET amount = amount - 1",
    "DELETE FROM allocations",
    "ALTER TABLE ledger_entries DISABLE TRIGGER ledger_entries_immutable",
    "DROP TRIGGER ledger_entries_no_truncate ON ledger_entries",
    "CREATE TABLE evil (id int)",
])
def test_the_app_role_cannot_get_around_the_triggers(factory, owner, as_role, sql):
    customer_id = _history(factory)
    with pytest.raises(DBAPIError, match="permission denied|immutable|must be owner"):
        as_role.execute(text(sql))
    as_role.rollback()
    assert ledger.balance(customer_id) == 35 and reconcile.run().ok


def test_the_app_role_is_no_superuser_and_owns_nothing(as_role):
    me = as_role.execute(text(
        "SELECT rolsuper, rolcreaterole, rolcreatedb, rolreplication, rolbypassrls, "
        "(SELECT count(*) FROM pg_class WHERE relowner = r.oid) FROM pg_roles r "
        "WHERE rolname = current_user")).one()
    assert tuple(me) == (False, False, False, False, False, 0)
    assert as_role.execute(text(
        "SELECT bool_or(has_table_privilege(c.oid, 'TRUNCATE')) FROM pg_class c "
        "JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = 'public' AND c.relkind = 'r'")).scalar() is False


def test_debits_and_grants_work_through_the_app_as_the_role(app_role_url):
    app = build_app(app_role_url)
    with app.app_context():
        make = Factory()
        c = make.customer(external_id="role-1", credits=100)
        api = ApiClient(app, make.api_key()[1])
        status, body, _ = api.post("/api/v1/customers/role-1/debits", {"feature": "chat", "credits": 7},
                                   headers={"Idempotency-Key": "role-debit-1"})
        assert status == 201 and body["data"]["balance"] == 93, body
        status, body, _ = api.post("/api/v1/customers/role-1/grants",
                                   {"credits": 10, "source": "promo", "reason": "role test"})
        assert status == 201, body
        assert ledger.balance(c.id) == 103 and reconcile.run().ok
        assert db.session.execute(text("SELECT current_user")).scalar() == \
            make_url(app_role_url).username
        db.session.remove()
        db.engine.dispose()


def test_create_db_role_command(pg_app, pg_owner_url, monkeypatch):
    name = f"cd_cli_{__import__('os').getpid()}"
    monkeypatch.setenv("CD_ROLE_PASSWORD", "s3cret-'quoted\"-password")
    owner_app = build_app(pg_owner_url)
    runner = owner_app.test_cli_runner()
    owner_ctx = owner_app.app_context()  # the command runs as the owner, not as pg_app's user
    owner_ctx.push()
    with create_engine(pg_owner_url).begin() as c:  # as after `flask db upgrade`
        c.execute(text("CREATE TABLE IF NOT EXISTS alembic_version (version_num varchar(32))"))
    try:
        result = runner.invoke(args=["create-db-role", "--name", name,
                                     "--password-env", "CD_ROLE_PASSWORD"])
        assert result.exit_code == 0, result.output
        assert "s3cret" not in result.output
        again = runner.invoke(args=["create-db-role", "--name", name,
                                    "--password-env", "CD_ROLE_PASSWORD"])
        assert again.exit_code == 0, again.output  # re-running resets the role, no error
        engine = create_engine(make_url(pg_owner_url).set(username=name))
        with engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM ledger_entries")).scalar() == 0
            for sql in ("TRUNCATE customers CASCADE", "UPDATE alembic_version SET version_num = 'x'"):
                with pytest.raises(DBAPIError, match="permission denied"):
                    conn.execute(text(sql))
                conn.rollback()
        engine.dispose()
        refused = runner.invoke(args=["create-db-role", "--name", make_url(pg_owner_url).username])
        assert refused.exit_code != 0 and "owner" in refused.output
    finally:
        db.session.remove()
        db.engine.dispose()
        owner_ctx.pop()
        with create_engine(pg_owner_url, isolation_level="AUTOCOMMIT").connect() as c:
            if c.execute(text("SELECT 1 FROM pg_roles WHERE rolname = :n"), {"n": name}).first():
                c.execute(text(f'DROP OWNED BY "{name}"'))
                c.execute(text(f'DROP ROLE "{name}"'))
            c.execute(text("DROP TABLE IF EXISTS alembic_version"))


def test_migration_0010_adds_the_truncate_triggers(pg_owner_url):
    from flask_migrate import downgrade, upgrade

    base = make_url(pg_owner_url)
    name = f"{base.database}_m0010"
    admin = create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        c.execute(text(f'CREATE DATABASE "{name}"'))
    url = base.set(database=name).render_as_string(hide_password=False)
    found = "SELECT tgname FROM pg_trigger WHERE tgname LIKE '%no_truncate' ORDER BY 1"
    try:
        app = build_app(url)
        with app.app_context():
            upgrade()
            assert db.session.execute(text(found)).scalars().all() == \
                ["allocations_no_truncate", "ledger_entries_no_truncate"]
            with pytest.raises(DBAPIError, match="immutable"):
                db.session.execute(text("TRUNCATE ledger_entries CASCADE"))
            db.session.rollback()
            downgrade(revision="0006")
            assert db.session.execute(text(found)).scalars().all() == []
            db.session.remove()
            db.engine.dispose()
    finally:
        with admin.connect() as c:
            c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
