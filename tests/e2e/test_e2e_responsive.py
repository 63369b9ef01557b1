"""Browser tests at 800 px (issue 13): every page of each role's navigation fits the window, the
Menu button opens the navigation drawer (keyboard, Escape, focus, htmx swaps, no JavaScript),
and wide tables scroll inside their card up to their last column. At 1280 px the sidebar stays."""
from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from tests.e2e.conftest import DEMO_PASSWORDS, sign_in

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("e2e")]

NARROW = {"width": 800, "height": 900}
WIDE = {"width": 1280, "height": 900}
# Flask-Admin's own Bootstrap pages: they fit (checked), but have no sidebar of ours.
OWN_LAYOUT = ("/admin/db",)


def _in_app(live_server, fn):
    from models import db

    with live_server.app.app_context():
        try:
            return fn()
        finally:
            db.session.remove()


def _ids(live_server) -> dict:
    """A customer with the most payments (its statement and payments tables) and a task; an API
    key with every scope, so that its table has a wide row whatever ran before."""
    from sqlalchemy import func, select

    from models import ApiKey, Payment, Task, db
    from services.staff import accounts

    def pick():
        if not db.session.scalars(select(ApiKey.id).where(ApiKey.name == "Narrow screen check")).first():
            accounts.create_api_key(name="Narrow screen check", rate_limit="100/minute")
        customer = db.session.execute(
            select(Payment.customer_id).group_by(Payment.customer_id)
            .order_by(func.count().desc(), Payment.customer_id)).scalars().first()
        task = db.session.scalars(select(Task.id).order_by(Task.id)).first()
        return {"customer": customer, "task": task}

    ids = _in_app(live_server, pick)
    assert ids["customer"] and ids["task"], "the demo data set has payments and tasks"
    return ids


def _nav_links(page) -> list[str]:
    hrefs = page.eval_on_selector_all('nav[aria-label="Main"] a',
                                      "els => els.map(a => a.getAttribute('href'))")
    assert len(hrefs) >= 4, hrefs
    return hrefs


def _page_width(page) -> int:
    return page.evaluate("document.documentElement.scrollWidth")


def _menu(page):
    return page.get_by_role("button", name="Menu", exact=True)


def _errors(page) -> list[str]:
    return [e for e in page.js_errors if "/admin/db" not in e and "favicon.ico" not in e]


@pytest.mark.parametrize("role", ["admin", "support", "finance"])
def test_every_page_of_the_navigation_fits_800px(login_as, live_server, role):
    page = login_as(role)
    page.set_viewport_size(NARROW)
    ids = _ids(live_server)
    paths = _nav_links(page) + [f"/customers/{ids['customer']}", f"/tasks/{ids['task']}"]
    problems = []
    for path in paths:
        resp = page.goto(path)
        if resp.status != 200:
            problems.append(f"{path}: HTTP {resp.status}")
            continue
        if (width := _page_width(page)) > NARROW["width"]:
            problems.append(f"{path}: the page is {width} px wide")
        if path.startswith(OWN_LAYOUT):
            continue
        if not _menu(page).is_visible():
            problems.append(f"{path}: no Menu button")
        if page.locator("#sidebar").is_visible():
            problems.append(f"{path}: the sidebar takes room on a narrow screen")
        main = page.locator("#main").bounding_box()
        if main["x"] > 1 or main["width"] < NARROW["width"] - 20:
            problems.append(f"{path}: the content is not full width ({main})")
    assert problems == []
    assert _errors(page) == []


def test_menu_button_opens_the_navigation_by_keyboard_and_escape_closes_it(login_as):
    page = login_as("admin")
    page.set_viewport_size(NARROW)
    page.goto("/tasks/")
    menu, nav = _menu(page), page.get_by_role("navigation", name="Main")
    expect(menu).to_have_attribute("aria-controls", "sidebar")
    expect(menu).to_have_attribute("aria-expanded", "false")
    expect(nav.get_by_role("link", name="Customers")).to_be_hidden()

    menu.focus()
    page.keyboard.press("Enter")
    expect(menu).to_have_attribute("aria-expanded", "true")
    expect(nav.get_by_role("link", name="Customers")).to_be_visible()
    # Focus moves into the drawer, on the current page's link; the page behind takes no focus.
    expect(nav.get_by_role("link", name="Tasks")).to_be_focused()
    assert page.evaluate("document.querySelector('.shell > .main').inert") is True

    page.keyboard.press("Escape")
    expect(menu).to_have_attribute("aria-expanded", "false")
    expect(nav.get_by_role("link", name="Customers")).to_be_hidden()
    expect(menu).to_be_focused()
    assert page.evaluate("document.querySelector('.shell > .main').inert") is False

    page.keyboard.press(" ")  # Space presses the button too
    expect(menu).to_have_attribute("aria-expanded", "true")
    page.get_by_role("button", name="Close menu").click()
    expect(menu).to_have_attribute("aria-expanded", "false")
    expect(nav).to_be_hidden()

    menu.click()
    expect(nav).to_be_visible()
    page.mouse.click(NARROW["width"] - 20, NARROW["height"] // 2)  # the backdrop beside the drawer
    expect(nav).to_be_hidden()
    assert _errors(page) == []


def test_menu_link_navigates_and_the_menu_keeps_working_after_htmx_swaps(login_as, live_server):
    page = login_as("support")
    page.set_viewport_size(NARROW)
    nav = page.get_by_role("navigation", name="Main")
    _menu(page).click()
    nav.get_by_role("link", name="Customers").click()
    expect(page).to_have_url(re.compile(r"/customers/$"))
    expect(page.get_by_role("heading", name="Customers", level=1)).to_be_visible()
    expect(_menu(page)).to_have_attribute("aria-expanded", "false")
    expect(nav).to_be_hidden()

    # A live search swaps the results in place (htmx, no page load); the menu still opens after.
    page.wait_for_load_state()  # htmx (deferred) listening before typing
    page.evaluate("window.__same_page = true")
    rows = page.locator("#customer-rows tr")
    before = rows.count()
    page.get_by_label("Search customers").fill("no-such-customer-anywhere")
    expect(rows).not_to_have_count(before)
    assert page.evaluate("window.__same_page") is True
    _menu(page).click()
    expect(_menu(page)).to_have_attribute("aria-expanded", "true")
    nav.get_by_role("link", name="Tasks").click()
    expect(page).to_have_url(re.compile(r"/tasks/$"))
    expect(nav).to_be_hidden()
    assert _errors(page) == []


def test_the_navigation_is_reachable_without_javascript(browser, live_server):
    context = browser.new_context(base_url=live_server.url, viewport=NARROW, java_script_enabled=False)
    context.set_default_timeout(10_000)
    try:
        page = context.new_page()
        sign_in(page, *DEMO_PASSWORDS["finance"])
        page.wait_for_url(lambda url: "/login" not in url)
        nav = page.get_by_role("navigation", name="Main")
        expect(nav).to_be_hidden()
        page.get_by_role("button", name="Menu", exact=True).click()  # a link to #sidebar: :target opens it
        expect(nav.get_by_role("link", name="Analytics")).to_be_visible()
        page.get_by_role("button", name="Close menu").click()
        expect(nav).to_be_hidden()
        page.get_by_role("button", name="Menu", exact=True).click()
        nav.get_by_role("link", name="Analytics").click()
        expect(page).to_have_url(re.compile(r"/analytics/$"))
        expect(nav).to_be_hidden()
        assert _page_width(page) <= NARROW["width"]
    finally:
        context.close()


WIDE_TABLES = [  # (name, path: ids -> path, a selector of the table)
    ("customer statement", lambda ids: f"/customers/{ids['customer']}", "#statement-panel table"),
    ("customer payments", lambda ids: f"/customers/{ids['customer']}",
     'section[aria-labelledby="payments-title"] table'),
    ("tasks", lambda ids: "/tasks/", "main table"),
    ("transactions", lambda ids: "/transactions/", "#results table"),
    ("unit economics", lambda ids: "/analytics/", "table.economics"),
]


@pytest.mark.parametrize("name, path, table", WIDE_TABLES, ids=[t[0] for t in WIDE_TABLES])
def test_wide_tables_scroll_inside_their_card_to_the_last_column(login_as, live_server, name, path, table):
    page = login_as("admin")
    page.set_viewport_size(NARROW)
    page.goto(path(_ids(live_server)))
    wrap = page.locator(table).first.locator("xpath=ancestor::div[contains(@class, 'table-wrap')][1]")
    expect(wrap).to_have_count(1)
    box = wrap.evaluate("""w => ({overflow: getComputedStyle(w).overflowX, scroll: w.scrollWidth,
                                  client: w.clientWidth, tabindex: w.getAttribute('tabindex')})""")
    assert box["overflow"] == "auto", box
    assert box["scroll"] > box["client"], f"{name}: the table fits at 800 px, nothing to scroll {box}"
    assert _page_width(page) <= NARROW["width"]  # the card scrolls, not the page
    expect(wrap).to_have_attribute("data-overflow", "right")  # the fade on the cut edge
    fade = wrap.evaluate("w => getComputedStyle(w).maskImage || getComputedStyle(w).webkitMaskImage")
    assert "gradient" in fade, fade
    assert box["tabindex"] == "0"  # the keyboard can reach and scroll it

    last = page.locator(table).first.locator("thead th").last
    assert last.bounding_box()["x"] + last.bounding_box()["width"] > wrap.bounding_box()["x"] + box["client"]
    wrap.hover()  # a sideways wheel or trackpad scrolls it to the end
    page.mouse.wheel(4000, 0)
    page.wait_for_function("w => w.scrollLeft >= w.scrollWidth - w.clientWidth - 1",
                           arg=wrap.element_handle())
    expect(wrap).to_have_attribute("data-overflow", "left")
    w, c = wrap.bounding_box(), last.bounding_box()
    assert c["x"] >= w["x"] - 1 and c["x"] + c["width"] <= w["x"] + w["width"] + 1, (name, w, c)
    assert _page_width(page) <= NARROW["width"]
    wrap.focus()  # and so does the keyboard
    page.keyboard.press("ArrowLeft")
    page.wait_for_function("w => w.scrollLeft < w.scrollWidth - w.clientWidth - 1",
                           arg=wrap.element_handle())


def test_sidebar_stays_at_1280px(login_as):
    page = login_as("admin")
    page.set_viewport_size(WIDE)
    for path in ("/", "/tasks/", "/analytics/"):
        page.goto(path)
        nav = page.get_by_role("navigation", name="Main")
        expect(nav.get_by_role("link", name="Customers")).to_be_visible()
        expect(_menu(page)).to_be_hidden()
        side, main = page.locator("#sidebar").bounding_box(), page.locator(".shell > .main").bounding_box()
        assert side["x"] == 0 and side["width"] == 220, side
        assert main["x"] >= side["width"], main
        assert _page_width(page) <= WIDE["width"]
    assert _errors(page) == []
