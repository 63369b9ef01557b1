"""/api/openapi.json: spectree's document of every /api route, from the same pydantic models and
limits the views validate with (tests/server/test_schemathesis.py fuzzes the live server with it)."""
from __future__ import annotations

import re

from dashboard.api.openapi import api_rules
from tests.helpers import ApiClient

CONVERTER = re.compile(r"<(?:[a-z]+(?:\([^)]*\))?:)?(\w+)>")


def openapi_path(rule: str) -> str:
    return CONVERTER.sub(r"{\1}", rule)


def operations(doc):
    for path, item in doc["paths"].items():
        for method, op in item.items():
            yield f"{method.upper()} {path}", op


def test_every_api_route_is_in_the_document(app, client):
    doc = client.get("/api/openapi.json").get_json()
    assert doc["openapi"].startswith("3.")
    served = {}
    for rule, _view in api_rules(app):
        methods = {m.lower() for m in rule.methods - {"HEAD", "OPTIONS"}}
        served.setdefault(openapi_path(rule.rule), set()).update(methods)
    documented = {path: set(ops) for path, ops in doc["paths"].items()}
    missing = {p: m - documented.get(p, set()) for p, m in served.items() if m - documented.get(p, set())}
    assert not missing, f"routes without @describe(...): {missing}"
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
    assert any(p["name"] == "Idempotency-Key" and p["in"] == "header" for p in debit["parameters"])
    ok = debit["responses"]["201"]["content"]["application/json"]["schema"]["$ref"]
    assert schemas[ok.split("/")[-1]]["properties"]["data"]["$ref"].endswith("/DebitOut")
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


def test_every_operation_documents_the_statuses_it_can_answer(client):
    doc = client.get("/api/openapi.json").get_json()
    error = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}
    for name, op in operations(doc):
        answers = op["responses"]
        assert {"422", "500"} <= set(answers), name
        if not name.endswith("/openapi.json"):
            assert "503" in answers and "Retry-After" in answers["503"]["headers"], name
        bearer = [req for req in op["security"] if "apiKey" in req]
        if bearer:
            assert {"401", "403", "429"} <= set(answers), name
            assert op["x-scopes"] == bearer[0]["apiKey"], name
        if name.startswith("POST /api/webhooks/"):
            assert "400" in answers and "INVALID_SIGNATURE" in answers["400"]["description"], name
            assert op["security"] == [] and op["requestBody"]["content"].keys() == {"application/json"}
        queried = any(p["in"] == "query" for p in op["parameters"])
        assert ("414" in answers) == queried, name  # gunicorn's own page for a too-long line
        for status, answer in answers.items():
            if status == "414":
                assert set(answer["content"]) == {"text/html"}, name
            elif status >= "400":
                assert answer["content"] == error, (name, status)
    paths = doc["paths"]
    assert {"200", "201"} <= set(paths["/api/v1/customers/{external_id}"]["put"]["responses"])
    assert paths["/api/distribute-credits"]["post"]["security"] == [{"basicAuth": []}]
    assert "502" in paths["/api/v1/customers/{external_id}/purchases"]["post"]["responses"]
    chat = paths["/api/v1/customers/{external_id}/chat"]["post"]["responses"]["200"]["content"]
    assert set(chat) == {"application/json", "text/event-stream"}
    schema = doc["components"]["schemas"]["ErrorBody"]
    assert schema["required"] == ["success", "error", "code", "retryable"]
    assert schema["properties"]["success"]["const"] is False


def test_path_limits_in_the_document_are_the_ones_the_api_enforces(client, make):
    doc = client.get("/api/openapi.json").get_json()
    op = doc["paths"]["/api/v1/customers/{external_id}"]["get"]
    (param,) = [p for p in op["parameters"] if p["name"] == "external_id"]
    longest = param["schema"]["maxLength"]
    api = ApiClient(client.application, make.api_key()[1])
    at_limit, _body, _ = api.get(f"/api/v1/customers/{'a' * longest}")
    over, body, _ = api.get(f"/api/v1/customers/{'a' * (longest + 1)}")
    assert (at_limit, over, body["code"]) == (404, 422, "VALIDATION_ERROR")
    task = doc["paths"]["/api/v1/tasks/{task_id}"]["get"]["parameters"][0]["schema"]
    assert task == {"type": "integer", "minimum": 0, "maximum": 2**63 - 1}
    past, body, _ = api.get(f"/api/v1/tasks/{task['maximum'] + 1}")
    assert (past, body["code"]) == (404, "NOT_FOUND")


def test_an_undescribed_route_is_reported(db_url):
    from tests.conftest import build_app

    app = build_app(db_url)
    app.add_url_rule("/api/v1/undocumented", "undocumented", lambda: "x")
    with app.app_context():
        doc = app.test_client().get("/api/openapi.json").get_json()
    assert "/api/v1/undocumented" not in doc["paths"]  # so the coverage test above would fail
