"""The Creditdesk web application."""
from __future__ import annotations

from flask import Flask
from werkzeug.routing import IntegerConverter

from dashboard import (
    admin,
    api,
    auth,
    cli,
    config,
    errors,
    extensions,
    filters,
    inputs,
    logs,
    security,
    views,
)
from jobs import scheduler
from models.base import MAX_ROW_ID
from services.core.db import configure_engine


class App(Flask):
    """Flask, minus the coroutine check it makes on every view and hook of every request
    (ensure_sync): nothing here is async, and an async view would fail its first test."""

    def ensure_sync(self, func):
        return func


class RowId(IntegerConverter):
    """`<int:...>` in every route: a row id, so at most PostgreSQL's bigint. A larger number
    matches no route (404) instead of failing in the database (500)."""

    def __init__(self, url_map, *args, **kwargs):
        kwargs.setdefault("max", MAX_ROW_ID)
        super().__init__(url_map, *args, **kwargs)


def create_app(config_overrides: dict | None = None) -> Flask:
    """Build the app: configuration first, then a flat list of init_app calls."""
    app = App(__name__, template_folder="../templates", static_folder="../static",
                instance_path=str(config.INSTANCE))
    app.url_map.converters["int"] = RowId  # before any route is added
    app.config.from_mapping(config.from_env())
    if config_overrides:
        app.config.update(config_overrides)

    logs.init_app(app)
    extensions.db.init_app(app)
    extensions.migrate.init_app(app, extensions.db, directory=str(config.ROOT / "migrations"))
    extensions.csrf.init_app(app)
    with app.app_context():
        configure_engine(extensions.db.engine, ping_idle_seconds=app.config["DB_POOL_PING_IDLE_SECONDS"])
    security.init_app(app)
    inputs.init_app(app)
    auth.init_app(app)
    filters.init_app(app)
    errors.init_app(app)
    views.init_app(app)
    cli.init_app(app)
    api.init_app(app)
    admin.init_app(app)
    scheduler.init_app(app)
    return app
