"""Junk in query strings and forms is refused with a 400 (or ignored), never a 500.

PostgreSQL refuses NUL in text (`DataError`), so a NUL that reached a query used to answer 500.
The walk below visits every GET page of the URL map with every query parameter name the
dashboard reads (found in the source, so a new filter is covered without editing this file).
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest
from sqlalchemy import func, select

import models as m
from dashboard import inputs
from models import db
from services.demo import dataset as demo

ROOT = Path(__file__).resolve().parents[2]
READS = [re.compile(r'args\.get(?:list)?\(\s*"(\w+)"'),
         re.compile(r'\b(?:int_arg|str_arg|date_arg)\(\s*"(\w+)"'),
         re.compile(r'^\s+(\w+)\s*=\s*\w+Field\(', re.M)]  # forms filled from request.args
PARSED_BY = re.compile(r'(\w+)\.\w+\.parse\(request\.args')  # a service reads the args itself
BLUEPRINT = re.compile(r'(?:Blueprint|Area)\(\s*(?:name=)?"(\w+)"')
# Flask-Admin's list and detail views read these (the library's code, not ours).
ADMIN_PARAMS = ("search", "sort", "desc", "page", "page_size", "id", "url", "flt0_0")
ADMIN_VIEWS = (".index_view", ".details_view", "admin.index")
# Path arguments of GET pages -> the table a real id comes from (a 404 would hide the page).
ROWS = {"customer_id": m.Customer, "refund_id": m.Refund, "task_id": m.Task,
        "event_id": m.WebhookEvent, "row_id": m.AuditLog, "run_id": m.JobRun,
        "endpoint_id": m.WebhookEndpoint}
CATALOG = {"plans": m.Plan, "packages": m.CreditPackage, "pricing": m.FeaturePrice}


SERVICE_IMPORT = re.compile(r"^from services\.([\w.]+) import (\w+)(?: as (\w+))?$", re.M)


def _reads(text: str) -> set[str]:
    names = {n for rx in READS for n in rx.findall(text)}
    modules = {alias or name: ROOT / "services" / package.replace(".", "/") / f"{name}.py"
               for package, name, alias in SERVICE_IMPORT.findall(text)}
    for module in PARSED_BY.findall(text):
        service = modules.get(module)
        if service is not None and service.exists():
            names |= {n for rx in READS for n in rx.findall(service.read_text())}
    return names - {"csrf_token"}


def params_by_blueprint() -> dict[str, set[str]]:
    """Blueprint -> every query parameter name its module reads, straight from the source."""
    views = ROOT / "dashboard" / "views"
    shared = _reads((views / "_catalog.py").read_text())  # routes of plans, packages, pricing
    found: dict[str, set[str]] = {}
    for f in sorted(views.glob("*.py")) + [ROOT / "dashboard" / "auth.py"]:
        text = f.read_text()
        for bp in BLUEPRINT.findall(text):
            found[bp] = _reads(text) | (shared if "make_blueprint(" in text else set())
    return found


def dashboard_params() -> set[str]:
    return set().union(*params_by_blueprint().values())


def get_pages(app) -> list[tuple[str, list[str]]]:
    """(url, parameter names) for every GET page of the dashboard, with real path arguments."""
    ids = {arg: db.session.scalar(select(model.id).order_by(model.id)) for arg, model in ROWS.items()}
    own, pages = params_by_blueprint(), []
    for rule in sorted(app.url_map.iter_rules(), key=lambda r: r.rule):
        if "GET" not in rule.methods or rule.rule.startswith(("/api/", "/static", "/admin/db/static")):
            continue
        if rule.rule.startswith("/admin/db/") and not rule.endpoint.endswith(ADMIN_VIEWS):
            continue  # Flask-Admin's forms and exports read no filter; its lists and details do
        values = {}
        for arg in rule.arguments:
            if arg == "item_id":
                values[arg] = db.session.scalar(select(CATALOG[rule.endpoint.split(".")[0]].id))
            else:
                values[arg] = ids[arg]
            assert values[arg] is not None, f"no row for {rule.rule}"
        with app.test_request_context():
            from flask import url_for
            url = url_for(rule.endpoint, **values)
        pages.append((url, sorted(own.get(rule.endpoint.split(".")[0], ADMIN_PARAMS))))
    return pages


@pytest.fixture
def seeded(app, db_url, request):
    """A demo data set, loaded as the database owner: the loader moves sequences (setval), which
    the app's role may not do when the suite runs as one (TEST_DATABASE_APP_ROLE=1)."""
    from tests.conftest import build_app

    owner = request.getfixturevalue("pg_owner_url") if db_url.startswith("postgresql") else db_url
    with build_app(owner).app_context():
        demo.load(customers=12, months=2, seed=3)
        # The demo has no outbound endpoint (it would send to a real URL): one for its page.
        db.session.add(m.WebhookEndpoint(url="https://hooks.example.com/creditdesk",
                                         events=["grant.created"], secret="whsec_dGVzdA=="))
        if db.session.scalar(select(m.Refund.id).limit(1)) is None:
            # Whether a demo this small draws a purchase to refund depends on the day it is
            # loaded: one refund request for the refund page, whatever the date.
            pay = db.session.scalar(select(m.Payment).order_by(m.Payment.id).limit(1))
            db.session.add(m.Refund(payment_id=pay.id, customer_id=pay.customer_id, credits=1,
                                    amount_minor=1, currency=pay.currency, reason="test",
                                    idempotency_key="inputs-refund-1"))
        db.session.commit()
        db.session.remove()
        db.engine.dispose()
    return app


def test_the_walk_finds_the_filters_of_the_attack_report():
    assert {"q", "actor", "customer", "after", "before", "from", "to", "month", "status",
            "type", "feature", "reference", "days", "period", "next"} <= set(dashboard_params())


def test_every_page_refuses_nul_in_every_parameter(seeded, login):
    admin = login("admin")
    pages = get_pages(seeded)
    assert len(pages) > 40
    failures = []
    for url, names in pages:
        assert admin.get(url).status_code < 500, url
        for name in names:
            resp = admin.get(f"{url}?{name}=a%00b")
            # A redirect target is neutralised instead (to "/", by respond.safe_next).
            neutral = name in inputs.GUARDED and resp.status_code == 302 \
                and resp.headers["Location"] == "/"
            if resp.status_code != 400 and not neutral:
                failures.append(f"{url}?{name}=a%00b -> {resp.status_code}")
    assert not failures, "\n".join(failures)



# Not control characters, so they reach the views: each is parsed to a value or ignored (the
# shared parsers in services/params.py), never an exception.
JUNK = ["²", "-1", "9" * 25, "abc", "0001-01-01", "9999-12-31", "'%_\\", "\u202e\ufffd"]


def test_every_page_parses_or_ignores_junk(seeded, login):
    admin = login("admin")
    failures = []
    for url, names in get_pages(seeded):
        if names and not url.startswith("/admin/"):  # Flask-Admin parses its own arguments
            for junk in JUNK:
                resp = admin.get(url, query_string=[(n, junk) for n in names])
                if resp.status_code >= 500:
                    failures.append(f"{url} {names}={junk!r} -> {resp.status_code}")
    assert not failures, "\n".join(failures)


def test_a_refusal_is_an_error_page_or_the_htmx_fragment(seeded, login):
    admin = login("admin")
    page = admin.get("/customers/?q=%00")
    assert page.status_code == 400 and "<html" in page.get_data(as_text=True)
    assert "control characters" in page.get_data(as_text=True)
    frag = admin.htmx("/transactions/?customer=x%01y")
    assert frag.status_code == 400 and "<html" not in frag.get_data(as_text=True)
    assert admin.get("/audit/", query_string={"actor": "x" * 4097}).status_code == 400
    assert admin.get("/audit/", query_string={"actor": "x" * 4096}).status_code == 200
    assert admin.get("/customers/?q%00=1").status_code == 400  # names too
    assert admin.get("/customers/?q=a%09b").status_code == 400  # no tab in a query string
    for page in ("-1", "9" * 25, "abc"):  # Flask-Admin's paging reached OFFSET as given
        assert admin.get(f"/admin/db/db_customers/?page={page}").status_code == 400
    assert admin.get("/admin/db/db_customers/?page=1&page_size=20").status_code == 200


def test_form_bodies_refuse_control_characters_but_keep_newlines(seeded, login):
    from models import Customer, LedgerEntry

    admin = login("admin")
    c = db.session.scalar(select(Customer).order_by(Customer.id))
    url = f"/customers/{c.id}/adjust"
    before = db.session.scalar(select(func.count(LedgerEntry.id)))
    for bad in ("a\x00b", "a\x1bb", "a\x0bb"):
        resp = admin.post(url, data={"credits": "5", "direction": "add", "reason_code": "goodwill",
                                     "note": f"goodwill {bad}"})
        assert resp.status_code == 400, bad
    assert db.session.scalar(select(func.count(LedgerEntry.id))) == before
    resp = admin.htmx(url, method="POST", data={"credits": "5", "direction": "add",
                                                "reason_code": "goodwill",
                                                "note": "goodwill\r\n\tline two"})
    assert resp.status_code == 200, resp.get_data(as_text=True)[:300]
    db.session.rollback()
    assert db.session.scalar(select(func.count(LedgerEntry.id))) == before + 1


def test_login_with_a_nul_is_a_400_not_a_500(app, client):
    page = client.post("/login", data={"email": "a\x00@b.c", "password": "x"})
    assert page.status_code == 400


def test_api_query_strings_refuse_nul_with_the_envelope(app, make):
    from tests.helpers import ApiClient, assert_error

    make.customer(external_id="nul-1")
    api = ApiClient(app, make.api_key()[1])
    for q in ("cursor=%00", "limit=%00", "limit=1%00", "cursor=ZTE%00", "x=%00"):
        status, body, _ = api.get(f"/api/v1/customers/nul-1/ledger?{q}")
        assert_error(status, body, "VALIDATION_ERROR", 422)
    for rule in app.url_map.iter_rules():  # no other API GET may fail on one either
        if rule.rule.startswith("/api/") and "GET" in rule.methods:
            url = rule.rule.replace("<external_id>", "nul-1").replace("<int:task_id>", "1")
            url = re.sub(r"<[^>]+>", "1", url)
            assert api.get(f"{url}?cursor=%00&limit=%00&q=%00")[0] < 500, url


@pytest.mark.parametrize("junk", ["abc", "²", "9" * 25, "-1", "1.5"])
def test_database_browser_details_with_a_junk_id_is_no_row_not_a_500(login, make, junk):
    admin = login("admin")
    make.customer()
    for view in ("db_customers", "db_ledger_entries", "db_settings"):
        resp = admin.get(f"/admin/db/{view}/details/?id={junk}")
        assert resp.status_code in (302, 404), (view, junk, resp.status_code)
    assert admin.get(f"/admin/db/db_customers/details/?id={make.customer().id}").status_code == 200
