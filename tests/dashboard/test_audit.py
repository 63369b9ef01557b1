"""Audit log page: filters by actor, action, target and dates (kept in the URL); keyset paging."""
from __future__ import annotations

import re
from datetime import datetime

from models import AuditLog, db
from services.core.db import atomic


def add(action: str, *, actor: str = "ann@creditdesk.test", at: datetime | None = None, **kw) -> AuditLog:
    with atomic() as s:
        row = AuditLog(action=action, actor=actor, created_at=at or datetime(2026, 3, 10, 12), **kw)
        s.add(row)
    return row


def rows_in(html: str) -> list[str]:
    return re.findall(r'<td><span class="badge[^"]*">([a-z_.]+)</span></td>', html)


def test_every_entry_shows_actor_ip_change_and_reason(login):
    auditor = login("finance")
    add("settings.update", target_type="setting", target_id="refund_window_days", ip="203.0.113.9",
        before={"refund_window_days": 14}, after={"refund_window_days": 30}, reason="holidays")
    page = auditor.get("/audit/").get_data(as_text=True)
    assert "ann@creditdesk.test" in page and "203.0.113.9" in page and "holidays" in page
    assert "setting refund_window_days" in page
    assert re.search(r'class="old">14</span> → <span class="new">30</span>', page)


def test_filters_combine_and_stay_in_the_url(login):
    auditor = login("admin")
    add("staff.create", actor="ann@creditdesk.test", target_type="staff", target_id="7",
        at=datetime(2026, 3, 1, 9))
    add("staff.role", actor="bob@creditdesk.test", target_type="staff", target_id="7",
        at=datetime(2026, 3, 5, 9))
    add("apikey.create", actor="ann@creditdesk.test", target_type="api_key", target_id="1",
        at=datetime(2026, 3, 9, 23, 59))
    add("login.failed", actor="mallory@example.com", at=datetime(2026, 3, 10, 0, 0))
    assert rows_in(auditor.htmx("/audit/?actor=ANN@creditdesk").get_data(as_text=True)) == \
        ["apikey.create", "staff.create"]
    assert rows_in(auditor.htmx("/audit/?action=staff.&target_id=7").get_data(as_text=True)) == \
        ["staff.role", "staff.create"]
    assert rows_in(auditor.htmx("/audit/?action=staff.role").get_data(as_text=True)) == ["staff.role"]
    assert rows_in(auditor.htmx("/audit/?target_type=staff&target_id=7&actor=bob")
                   .get_data(as_text=True)) == ["staff.role"]
    # date range: whole UTC days, both ends inclusive
    dated = auditor.htmx("/audit/?since=2026-03-05&until=2026-03-09").get_data(as_text=True)
    assert rows_in(dated) == ["apikey.create", "staff.role"]
    full = auditor.get("/audit/?actor=bob&since=2026-03-05").get_data(as_text=True)
    assert 'value="bob"' in full and 'value="2026-03-05"' in full  # the form shows the filters
    assert "No audit entries match" in auditor.get("/audit/?actor=nobody").get_data(as_text=True)
    assert "<html" not in dated
    # a wrong date is ignored rather than an error
    assert auditor.get("/audit/?since=yesterday").status_code == 200


def test_keyset_paging_keeps_the_filters(login):
    auditor = login("admin")
    for n in range(60):
        add("credits.adjust", reason=f"r{n}", target_type="customer", target_id=str(n))
    add("staff.create")
    first = auditor.get("/audit/?action=credits.adjust").get_data(as_text=True)
    assert len(rows_in(first)) == 50 and "r59<" in first and "r9<" not in first
    link = re.search(r'href="(/audit/\?[^"]*before=\d+)"', first).group(1).replace("&amp;", "&")
    assert "action=credits.adjust" in link
    rest = auditor.htmx(link).get_data(as_text=True)
    assert len(rows_in(rest)) == 10 and "r0<" in rest and "staff.create" not in rest
    assert "Load more" not in rest


def test_detail_shows_before_and_after(login):
    auditor = login("finance")
    row = add("plans.update", before={"price_minor": 1900}, after={"price_minor": 2100},
              target_type="plan", target_id="3")
    page = auditor.get(f"/audit/{row.id}").get_data(as_text=True)
    assert "&#34;price_minor&#34;: 1900" in page and "&#34;price_minor&#34;: 2100" in page
    assert auditor.get("/audit/99999").status_code == 404


def test_support_cannot_read_the_audit_log(login):
    assert login("support").get("/audit/").status_code == 403


def test_staff_sign_in_is_on_the_log(login):
    auditor = login("admin")
    assert db.session.scalar(db.select(AuditLog).where(AuditLog.action == "login.success")
                             .where(AuditLog.staff_id == auditor.staff.id)) is not None
    assert "login.success" in auditor.get("/audit/?action=login.").get_data(as_text=True)
