"""The overview: what a staff member looks at first."""
from flask import Blueprint

from dashboard import htmx
from dashboard.auth import require
from services import overview

bp = Blueprint("overview", __name__)


@bp.get("/")
@require("customers.view")
def index():
    return htmx.render("overview/index.html", None, k=overview.kpis())
