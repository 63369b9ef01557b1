"""The Creditdesk web application."""
from __future__ import annotations

from flask import Flask

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
from services.core.db import configure_engine


def create_app(config_overrides: dict | None = None) -> Flask:
    """Build the app: configuration first, then a flat list of init_app calls."""
    app = Flask(__name__, template_folder="../templates", static_folder="../static",
                instance_path=str(config.INSTANCE))
    app.config.from_mapping(config.from_env())
    if config_overrides:
        app.config.update(config_overrides)

    logs.init_app(app)
    extensions.db.init_app(app)
    extensions.migrate.init_app(app, extensions.db, directory=str(config.ROOT / "migrations"))
    extensions.csrf.init_app(app)
    with app.app_context():
        configure_engine(extensions.db.engine)
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
