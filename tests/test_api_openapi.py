"""/api/openapi.json describes every /api route the app serves, from the pydantic models."""
from __future__ import annotations

from dashboard.api.openapi import api_rules, openapi_path


def test_every_api_route_is_in_the_document(app, client):
    doc = client.get("/api/openapi.json").get_json()
    assert doc["openapi"].startswith("3.")
    served = {}
    for rule, _view in api_rules(app):
        methods = {m.lower() for m in rule.methods - {"HEAD", "OPTIONS"}}
        served.setdefault(openapi_path(rule.rule), set()).update(methods)
    documented = {path: set(ops) for path, ops in doc["paths"].items()}
    missing = {p: m - documented.get(p, set()) for p, m in served.items() if m - documented.get(p, set())}
    assert not missing, f"routes without core.describe(...): {missing}"
    assert set(documented) == set(served)


def test_schemas_come_from_the_models_and_refs_resolve(client):
    doc = client.get("/api/openapi.json").get_json()
    schemas = doc["components"]["schemas"]
    debit = doc["paths"]["/api/v1/customers/{external_id}/debits"]["post"]
    assert debit["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith("/DebitIn")
    assert schemas["DebitIn"]["additionalProperties"] is False
    fields = set(schemas["DebitIn"]["properties"])
    assert {"feature", "quantity", "credits", "reference", "metadata"} <= fields
    assert "402" in debit["responses"] and "409" in debit["responses"]
    assert any(p["name"] == "Idempotency-Key" for p in debit["parameters"])
    refs = []

    def walk(node):
        if isinstance(node, dict):
            if "$ref" in node:
                refs.append(node["$ref"])
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(doc)
    for ref in refs:
        assert ref.split("/")[-1] in schemas, ref


def test_an_undescribed_route_is_reported(db_url):
    from tests.conftest import build_app

    app = build_app(db_url)
    app.add_url_rule("/api/v1/undocumented", "undocumented", lambda: "x")
    with app.app_context():
        doc = app.test_client().get("/api/openapi.json").get_json()
    assert "/api/v1/undocumented" not in doc["paths"]  # so the coverage test above would fail
