"""Settings page: every setting editable with validation, and a history of who changed what, why."""
from __future__ import annotations

import re

from models import AuditLog, SettingChange, db
from services.core import settings as settings_service


def test_every_setting_is_on_the_page_with_its_value(login):
    page = login("admin").get("/settings/").get_data(as_text=True)
    for key, spec in settings_service.SPECS.items():
        assert f'id="setting-{key}"' in page and spec.label in page
    assert "No changes yet" in page


def test_change_a_setting_with_htmx_and_see_it_in_the_history(login):
    admin = login("admin")
    resp = admin.htmx("/settings/refund_window_days", "POST",
                      data={"value": "30", "reason": "Longer refunds for the holidays"})
    assert resp.status_code == 200
    body = resp.get_data(as_text=True)
    assert body.lstrip().startswith('<tr id="setting-refund_window_days"') and "<html" not in body
    assert "30" in body and admin.staff.email in body
    trigger = resp.headers["HX-Trigger"]
    assert "settings-changed" in trigger and "changed from 14 to 30" in trigger
    assert settings_service.get("refund_window_days") == 30  # the services read the new value
    history = admin.htmx("/settings/history").get_data(as_text=True)
    assert "Longer refunds for the holidays" in history and admin.staff.email in history
    assert re.search(r">\s*14\s*</td>\s*<td[^>]*>\s*30\s*<", history)
    change = db.session.scalar(db.select(SettingChange))
    assert (change.key, change.old_value, change.new_value, change.staff_id) == \
        ("refund_window_days", "14", "30", admin.staff.id)
    row = db.session.scalar(db.select(AuditLog).where(AuditLog.action == "settings.update"))
    assert row.before == {"refund_window_days": 14} and row.after == {"refund_window_days": 30}
    assert row.reason == "Longer refunds for the holidays"


def test_without_javascript_a_change_redirects_back_with_a_message(login):
    admin = login("admin")
    resp = admin.post("/settings/paid_credits_never_expire", data={"value": "false", "reason": "policy"})
    assert resp.status_code == 303 and resp.headers["Location"].startswith("/settings/")
    page = admin.get("/settings/").get_data(as_text=True)
    assert "Paid credits never expire changed from true to false" in page
    assert settings_service.get("paid_credits_never_expire") is False


def test_validation_messages(login):
    admin = login("admin")
    cases = [({"value": "-1", "reason": "nope"}, "must be at least 0"),
             ({"value": "ten", "reason": "nope"}, "whole number"),
             ({"value": "5", "reason": ""}, "Say why"),
             ({"value": "", "reason": "why not"}, "Enter a value")]
    for data, message in cases:
        resp = admin.htmx("/settings/low_balance_threshold", "POST", data=data)
        assert resp.status_code == 422 and message in resp.get_data(as_text=True), data
    assert admin.post("/settings/no_such_setting", data={"value": "1", "reason": "x" * 5}).status_code == 404
    assert db.session.scalar(db.select(db.func.count(SettingChange.id))) == 0


def test_same_value_changes_nothing(login):
    admin = login("admin")
    resp = admin.htmx("/settings/free_monthly_credits", "POST",
                      data={"value": str(settings_service.SPECS["free_monthly_credits"].default),
                            "reason": "no-op"})
    assert resp.status_code == 200 and "nothing changed" in resp.headers["HX-Trigger"]
    assert db.session.scalar(db.select(db.func.count(SettingChange.id))) == 0


def test_history_filter_by_setting_and_paging(login):
    admin = login("admin")
    for n in range(1, 23):
        settings_service.update(key="expiry_grace_hours", value=n, staff=admin.staff, reason=f"step {n}")
    settings_service.update(key="low_balance_threshold", value=5, staff=admin.staff, reason="lower")
    page = admin.get("/settings/history?key=expiry_grace_hours").get_data(as_text=True)
    assert "step 22" in page and "step 3<" in page and "step 2<" not in page and "lower" not in page
    more = re.search(r'href="(/settings/history\?[^"]*before=\d+)"', page).group(1).replace("&amp;", "&")
    rest = admin.htmx(more).get_data(as_text=True)
    assert "step 2<" in rest and "step 1<" in rest and "<html" not in rest and "Load more" not in rest
    assert "lower" in admin.htmx("/settings/history").get_data(as_text=True)


def test_only_admins_change_settings(login):
    for role in ("support", "finance"):
        c = login(role)
        assert c.get("/settings/").status_code == 403
        resp = c.post("/settings/refund_window_days", data={"value": "1", "reason": "mine"})
        assert resp.status_code == 403
    assert settings_service.get("refund_window_days") == 14
