"""`flask db upgrade` builds the schema on SQLite and PostgreSQL, and it matches the models."""
import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from flask_migrate import upgrade
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from models import db
from tests.conftest import PG_URL, build_app


def _schema_diff(url: str) -> list:
    engine = create_engine(url)
    with engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True})
        diff = compare_metadata(ctx, db.metadata)
    engine.dispose()
    return diff


def _upgrade(url: str) -> None:
    app = build_app(url)
    with app.app_context():
        upgrade()
        db.engine.dispose()


def test_upgrade_on_sqlite_matches_models(tmp_path):
    url = f"sqlite:///{tmp_path / 'migrated.sqlite3'}"
    _upgrade(url)
    assert _schema_diff(url) == []
    engine = create_engine(url)
    with engine.connect() as c:
        triggers = c.execute(text("SELECT name FROM sqlite_master WHERE type='trigger'")).scalars().all()
    assert {"ledger_entries_no_update", "allocations_no_delete"} <= set(triggers)


@pytest.mark.pg
def test_upgrade_on_postgresql_matches_models():
    base = make_url(PG_URL)
    name = f"{base.database}_migrations_{__import__('os').getpid()}"
    admin = create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        c.execute(text(f'CREATE DATABASE "{name}"'))
    url = base.set(database=name).render_as_string(hide_password=False)
    try:
        _upgrade(url)
        assert _schema_diff(url) == []
    finally:
        with admin.connect() as c:
            c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
