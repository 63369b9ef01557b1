"""Browser: the settings page previews a price-per-credit change on the packages that follow it,
and the packages page marks them (demo data: four INR packs at 84 paise a credit)."""
from __future__ import annotations

import pytest
from playwright.sync_api import expect

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("e2e")]


def test_typing_a_new_inr_price_per_credit_previews_the_inr_packages(login_as):
    page = login_as("admin")
    page.goto("/settings/")
    panel = page.locator("#per-credit")
    expect(panel).to_contain_text("Starter pack (INR)")
    expect(panel).to_contain_text("₹420.00")  # 500 credits x Rs 0.84
    row = page.locator("#setting-price_per_credit_inr_minor")
    row.get_by_label("New value (paise)").fill("100")
    preview = row.locator(".setting-impact table")
    expect(preview).to_contain_text("Studio pack (INR)")
    starter = preview.locator("tr", has_text="Starter pack (INR)")
    expect(starter).to_contain_text("₹420.00")
    expect(starter).to_contain_text("₹500.00")
    expect(starter).to_contain_text("+₹80.00")
    expect(preview.locator("tbody tr")).to_have_count(4)  # the INR packs; USD ones are fixed
    expect(preview.locator("tbody tr", has_text="(INR)")).to_have_count(4)
    assert page.js_errors == []


def test_packages_page_marks_per_credit_packages(login_as):
    page = login_as("admin")
    page.goto("/packages/")
    row = page.locator("tr", has_text="Studio pack (INR)")
    expect(row).to_contain_text("per credit")
    expect(row).to_contain_text("30%")
    expect(row).to_contain_text("₹11,760.00")
    expect(page.locator("tr", has_text="Studio pack").first).not_to_contain_text("per credit")
