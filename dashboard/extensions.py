"""Extension objects, created unbound and attached in create_app()."""
from flask_login import LoginManager
from flask_migrate import Migrate
from flask_wtf import CSRFProtect

from models.base import db

migrate = Migrate(render_as_batch=True)  # SQLite needs batch mode for ALTERs
login_manager = LoginManager()
csrf = CSRFProtect()

__all__ = ["db", "migrate", "login_manager", "csrf"]
