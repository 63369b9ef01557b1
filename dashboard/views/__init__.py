"""Dashboard blueprints: every module here that defines `bp` is registered (one per area)."""
from __future__ import annotations

import importlib
import pkgutil

from flask import Flask

from dashboard import nav


def init_app(app: Flask) -> None:
    nav.init_app(app)
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{__name__}.{info.name}")
        if hasattr(module, "bp"):
            app.register_blueprint(module.bp)
