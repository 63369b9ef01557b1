"""Browser tests of the platform pages: sign-in, settings and history, roles, API keys, no-JS reading."""
from __future__ import annotations

import re
import uuid

import pytest
from playwright.sync_api import expect

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("e2e")]


def test_admin_signs_in_and_sees_the_overview(login_as):
    page = login_as("admin")
    expect(page.get_by_role("heading", name="Overview")).to_be_visible()
    expect(page.locator(".topbar")).to_contain_text("admin@creditdesk.test")
    assert page.js_errors == []


def test_wrong_password_stays_on_the_login_page(page):
    from tests.e2e.conftest import sign_in

    sign_in(page, "finance@creditdesk.test", "not-the-password")
    expect(page.get_by_role("alert")).to_contain_text("incorrect")
    assert "/login" in page.url


def test_change_a_setting_and_see_its_history_without_a_reload(login_as):
    page = login_as("admin")
    page.get_by_role("link", name="Settings").click()
    expect(page.get_by_role("heading", name="Settings")).to_be_visible()
    page.wait_for_load_state()  # htmx (deferred) listening before the first change
    page.evaluate("window.__same_page = true")  # gone if the browser loads a new page
    row = page.locator("#setting-low_balance_threshold")
    current = int(re.sub(r"\D", "", row.locator("td.current").inner_text().split("credits")[0]))
    new = current + 7
    reason = f"Browser test {uuid.uuid4().hex[:8]}"
    row.get_by_label("New value (credits)").fill(str(new))
    row.get_by_label("Reason").fill(reason)
    row.get_by_role("button", name="Save").click()
    expect(page.locator("#setting-low_balance_threshold td.current")).to_contain_text(f"{new:,}")
    expect(page.locator("#flash-area")).to_contain_text(f"changed from {current} to {new}")
    history = page.locator("#history")
    expect(history).to_contain_text(reason)
    first = history.locator("tbody tr").first
    expect(first).to_contain_text("admin@creditdesk.test")
    expect(first).to_contain_text("Low-balance threshold")
    assert page.evaluate("window.__same_page") is True
    # and it is in the audit log with the same reason
    page.goto("/audit/?action=settings.update")
    expect(page.locator("#results")).to_contain_text(reason)
    assert page.js_errors == []


def test_a_wrong_setting_value_shows_the_reason_inline(login_as):
    page = login_as("admin")
    page.goto("/settings/")
    row = page.locator("#setting-refund_window_days")
    # The browser's own check (min="0") would stop the form; switch it off to reach the server's.
    row.locator("form").evaluate("f => { f.noValidate = true; }")
    row.get_by_label("New value (days)").fill("-5")
    row.get_by_label("Reason").fill("testing validation")
    row.get_by_role("button", name="Save").click()
    expect(page.locator("#setting-refund_window_days [role=alert]")).to_contain_text("at least 0")


def test_support_is_refused_admin_pages(login_as):
    page = login_as("support")
    nav = page.get_by_role("navigation", name="Main")
    for label in ("Settings", "Staff", "API keys", "Audit log", "Webhooks", "Database"):
        expect(nav.get_by_role("link", name=label, exact=True)).to_have_count(0)
    for path in ("/settings/", "/staff/", "/api-keys/", "/admin/db/"):
        resp = page.goto(path)
        assert resp.status == 403, path
        expect(page.get_by_role("heading", name=re.compile("Not allowed"))).to_be_visible()


def test_create_an_api_key_and_see_it_exactly_once(login_as, live_server):
    page = login_as("admin")
    page.goto("/api-keys/")
    name = f"Backend {uuid.uuid4().hex[:6]}"
    page.get_by_label("Name").fill(name)
    page.get_by_label("payments:write").uncheck()
    page.get_by_role("button", name="Create key").click()
    secret = page.get_by_label("API key", exact=True)
    expect(secret).to_have_value(re.compile(r"^cdk_[0-9a-f]{8}_\S{40,}$"))
    plain = secret.input_value()
    # the list refreshed itself and shows the new key by prefix only
    expect(page.locator("#results")).to_contain_text(name)
    prefix = plain.split("_")[1]
    expect(page.locator("#results")).to_contain_text(f"cdk_{prefix}_")
    assert plain not in page.locator("#results").inner_html()
    page.screenshot(path=str(_shots() / "api-key-created.png"), full_page=True)
    # the key works against the API, without payments:write
    api = page.context.request
    ok = api.get(f"{live_server.url}/api/v1/plans", headers={"Authorization": f"Bearer {plain}"})
    assert ok.status == 200
    # shown once: a reload no longer has it anywhere
    page.reload()
    assert plain not in page.content()
    expect(page.get_by_label("API key", exact=True)).to_have_count(0)
    # revoke it from its row; the API refuses it afterwards
    page.once("dialog", lambda d: d.accept())
    row = page.locator("tr", has_text=name)
    row.get_by_role("button", name="Revoke").click()
    expect(row).to_contain_text("revoked")
    refused = api.get(f"{live_server.url}/api/v1/plans", headers={"Authorization": f"Bearer {plain}"})
    assert refused.status == 401


def _received_webhooks(live_server, n: int) -> None:
    import uuid

    from models import WebhookEvent, db

    with live_server.app.app_context():
        db.session.add_all(WebhookEvent(provider="stripe", event_id=f"evt_e2e_{uuid.uuid4().hex}",
                                        type="charge.succeeded", payload="{}", status="ignored")
                           for _ in range(n))
        db.session.commit()
        db.session.remove()


def test_pages_read_without_javascript(browser, live_server):
    from tests.e2e.conftest import DEMO_PASSWORDS

    context = browser.new_context(base_url=live_server.url, java_script_enabled=False)
    page = context.new_page()
    page.goto("/login")
    page.get_by_label("Email").fill(DEMO_PASSWORDS["admin"][0])
    page.get_by_label("Password").fill(DEMO_PASSWORDS["admin"][1])
    page.get_by_role("button", name="Sign in").click()
    page.goto("/audit/?action=login.success")
    expect(page.locator("#results tbody tr").first).to_contain_text("login.success")
    _received_webhooks(live_server, 51)  # more than a page, whatever the demo's dates gave
    page.goto("/webhooks/")
    expect(page.get_by_role("link", name="Load more")).to_be_visible()
    page.get_by_role("link", name="Load more").click()  # a plain link to the next page
    expect(page.locator("#results tbody tr").first).to_be_visible()
    context.close()


def test_screenshots_of_platform_pages(page):
    from tests.e2e.screenshots import capture, out_dir

    saved = capture(page, out_dir())
    assert all(p.stat().st_size > 10_000 for p in saved)
    assert page.js_errors == []


def _shots():
    from tests.e2e.screenshots import out_dir

    return out_dir()
