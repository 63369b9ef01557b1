"""Flask-Admin at /admin/db: a raw, read-only table browser for admins.

Nothing here may bypass the services: every view is read-only (no create, edit, delete or bulk
actions), secrets (password and key hashes) are never shown, and every Flask-Admin endpoint is
wrapped in @require("staff.manage") so the route-matrix test sees its permission like any page.
"""
from __future__ import annotations

from flask import Flask, abort, redirect, request, url_for
from flask_admin import Admin, AdminIndexView, expose
from flask_admin.contrib.sqla import ModelView
from flask_admin.theme import Bootstrap4Theme
from flask_login import current_user
from sqlalchemy import Integer

import models
from dashboard.auth import can, require
from dashboard.extensions import db

PERMISSION = "staff.manage"
URL = "/admin/db"


class _Guard:
    """Admins only; anyone else is sent to sign in (anonymous) or refused (other roles)."""

    def is_accessible(self) -> bool:
        return can(current_user, PERMISSION)

    def inaccessible_callback(self, name, **kwargs):
        if not current_user.is_authenticated:
            return redirect(url_for("auth.login", next=request.full_path.rstrip("?")))
        abort(403)


class ReadOnlyView(_Guard, ModelView):
    can_create = False
    can_edit = False
    can_delete = False
    can_view_details = True
    can_export = False
    can_set_page_size = True
    action_disallowed_list = ["delete"]
    page_size = 50
    simple_list_pager = True  # no COUNT(*) over a ledger of millions of rows
    column_display_pk = True
    column_default_sort = ("id", True)

    def get_actions_list(self):  # no bulk actions at all
        return [], {}

    def get_one(self, id):
        """The row, or None for an id that cannot be one: Flask-Admin casts `?id=` itself, and
        junk or an out-of-range number reached PostgreSQL as a DataError (a 500)."""
        if isinstance(self.model.__mapper__.primary_key[0].type, Integer):
            text = str(id)
            if not (text.isascii() and text.isdigit() and len(text) <= 18):
                return None
        return super().get_one(id)


class StaffView(ReadOnlyView):
    column_exclude_list = column_details_exclude_list = ["password_hash"]
    column_searchable_list = ["email", "name"]
    column_filters = ["role", "active"]


class ApiKeyView(ReadOnlyView):
    column_exclude_list = column_details_exclude_list = ["key_hash"]


class LedgerEntryView(ReadOnlyView):
    column_filters = ["type", "account_id", "created_at"]


class AuditLogView(ReadOnlyView):
    column_searchable_list = ["actor", "action"]
    column_filters = ["action", "target_type", "created_at"]


class WebhookEventView(ReadOnlyView):
    column_exclude_list = ["payload"]
    column_filters = ["provider", "status", "type"]


class CustomerView(ReadOnlyView):
    column_searchable_list = ["email", "external_id", "name"]


class SettingView(ReadOnlyView):
    column_default_sort = ("key", False)


class IndexView(_Guard, AdminIndexView):
    @expose("/")
    def index(self):
        return self.render("admin_db/index.html", views=self.admin._views[1:])


VIEWS = [
    # (model, view class, category)
    (models.Customer, CustomerView, "Customers"), (models.Account, ReadOnlyView, "Customers"),
    (models.LedgerEntry, LedgerEntryView, "Ledger"), (models.Allocation, ReadOnlyView, "Ledger"),
    (models.CreditGrant, ReadOnlyView, "Ledger"), (models.AdjustmentRequest, ReadOnlyView, "Ledger"),
    (models.Payment, ReadOnlyView, "Payments"), (models.Refund, ReadOnlyView, "Payments"),
    (models.WebhookEvent, WebhookEventView, "Payments"),
    (models.Task, ReadOnlyView, "Tasks"), (models.TaskLog, ReadOnlyView, "Tasks"),
    (models.Plan, ReadOnlyView, "Catalogue"), (models.CreditPackage, ReadOnlyView, "Catalogue"),
    (models.FeaturePrice, ReadOnlyView, "Catalogue"),
    (models.JobRun, ReadOnlyView, "System"), (models.JobRunError, ReadOnlyView, "System"),
    (models.AuditLog, AuditLogView, "System"), (models.Setting, SettingView, "System"),
    (models.SettingChange, ReadOnlyView, "System"), (models.Staff, StaffView, "System"),
    (models.ApiKey, ApiKeyView, "System"),
]


def init_app(app: Flask) -> None:
    admin = Admin(app, name="Creditdesk database", url=URL, theme=Bootstrap4Theme(fluid=True),
                  index_view=IndexView(url=URL, name="Tables"))
    for model, view, category in VIEWS:
        admin.add_view(view(model, db, category=category,
                            endpoint=f"db_{model.__tablename__}"))
    # Deny by default, like every dashboard route: wrap each Flask-Admin endpoint in @require.
    names = {admin.endpoint} | {v.endpoint for v in admin._views}
    for endpoint, func in list(app.view_functions.items()):
        if endpoint.split(".", 1)[0] in names and not hasattr(func, "permission"):
            app.view_functions[endpoint] = require(PERMISSION)(func)
