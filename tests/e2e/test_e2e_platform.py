"""Browser tests of the platform pages: sign-in, settings, roles, API keys."""
from __future__ import annotations

import pytest
from playwright.sync_api import expect

pytestmark = pytest.mark.e2e


def test_admin_signs_in_and_sees_the_overview(login_as):
    page = login_as("admin")
    expect(page.get_by_role("heading", name="Overview")).to_be_visible()
    expect(page.locator(".topbar")).to_contain_text("admin@creditdesk.test")
    assert page.js_errors == []


def test_wrong_password_stays_on_the_login_page(page):
    from tests.e2e.conftest import sign_in

    sign_in(page, "support@creditdesk.test", "not-the-password")
    expect(page.get_by_role("alert")).to_contain_text("incorrect")
    assert "/login" in page.url


def test_screenshots_of_platform_pages(login_as, page):
    from tests.e2e.screenshots import capture

    saved = capture(page)
    assert all(p.stat().st_size > 10_000 for p in saved)
    assert page.js_errors == []
