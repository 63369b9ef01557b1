"""GET /api/openapi.json: OpenAPI 3.1 generated from the URL map and the pydantic models.

Every /api route declares itself with core.describe(...); the document lists exactly the routes
the app serves, and tests/test_api_openapi.py fails when one is not described.
"""
from __future__ import annotations

import re

from flask import Blueprint, Flask, current_app
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from dashboard.api.core import describe

bp = Blueprint("api_openapi", __name__, url_prefix="/api")
RATE_LIMIT = None

REF = "#/components/schemas/{model}"
GENERIC_ERRORS = {
    "401": "AUTH_UNAUTHORIZED: missing, unknown or revoked API key",
    "403": "AUTH_FORBIDDEN: the key lacks a scope",
    "422": "VALIDATION_ERROR: the body, query or path is invalid (see details)",
    "429": "RATE_LIMITED: slow down, see Retry-After",
    "500": "INTERNAL_ERROR: unexpected failure, logged with the request id",
}
STATUS_OF = {
    "VALIDATION_ERROR": "422", "AUTH_UNAUTHORIZED": "401", "AUTH_FORBIDDEN": "403",
    "CUSTOMER_NOT_FOUND": "404", "TASK_NOT_FOUND": "404", "NOT_FOUND": "404",
    "INSUFFICIENT_CREDITS": "402", "IDEMPOTENCY_KEY_REUSED": "409",
    "IDEMPOTENCY_KEY_IN_USE": "409", "TASK_ALREADY_FINISHED": "409", "CONFLICT": "409",
    "INVALID_SIGNATURE": "400", "REFUND_NOT_ELIGIBLE": "409", "PAYMENT_PROVIDER_ERROR": "502",
    "RATE_LIMITED": "429", "CRON_BASIC_AUTH_MISCONFIGURED": "500",
    "CREDITS_DISTRIBUTION_FAILED": "500", "INTERNAL_ERROR": "500",
    "CUSTOMER_WEBHOOK_MISCONFIGURED": "500",
    "AI_PROVIDER_ERROR": "502", "AI_NOT_CONFIGURED": "503",
}
_CONVERTER = re.compile(r"<(?:(?P<conv>[a-z]+)(?:\([^)]*\))?:)?(?P<name>\w+)>")


class ErrorBody(BaseModel):
    success: bool = False
    error: str
    code: str
    retryable: bool
    details: dict | list | None = None


def api_rules(app: Flask):
    """(rule, view) of every route under /api/."""
    for rule in app.url_map.iter_rules():
        if rule.rule.startswith("/api/") and rule.endpoint != "static":
            yield rule, app.view_functions[rule.endpoint]


def openapi_path(rule: str) -> str:
    return _CONVERTER.sub(lambda m: "{" + m.group("name") + "}", rule)


def _path_params(rule: str) -> list[dict]:
    out = []
    for m in _CONVERTER.finditer(rule):
        kind = {"int": "integer"}.get(m.group("conv") or "", "string")
        out.append({"name": m.group("name"), "in": "path", "required": True,
                    "schema": {"type": kind}})
    return out


def _envelope(model: type[BaseModel] | None) -> dict:
    data = {"$ref": REF.format(model=model.__name__)} if model else {}
    return {"type": "object", "required": ["success", "data"],
            "properties": {"success": {"const": True}, "data": data}}


def _error(description: str) -> dict:
    return {"description": description,
            "content": {"application/json": {"schema": {"$ref": REF.format(model="ErrorBody")}}}}


def _operation(rule, view, method: str, models: set) -> dict:
    d = view.api_doc
    op = {"summary": d["summary"], "operationId": f"{rule.endpoint}.{method}",
          "tags": [d["tag"] or rule.endpoint.split(".")[0]]}
    if d["description"]:
        op["description"] = d["description"]
    params = _path_params(rule.rule)
    if d["query"]:
        schema = d["query"].model_json_schema()
        for name, prop in schema.get("properties", {}).items():
            params.append({"name": name, "in": "query", "required": name in schema.get("required", []),
                           "schema": prop})
    if d["idempotent"]:
        params.append({"name": "Idempotency-Key", "in": "header", "required": False,
                       "description": "Replays the stored reply for a retry with the same key and "
                                      "body for 24 h; another body under it is 409.",
                       "schema": {"type": "string", "maxLength": 128}})
    if params:
        op["parameters"] = params
    if d["body"]:
        models.add(d["body"])
        op["requestBody"] = {"required": True, "content": {"application/json": {
            "schema": {"$ref": REF.format(model=d["body"].__name__)}}}}
    if d["response"]:
        models.add(d["response"])
    responses = {str(d["status"]): {"description": "success", "content": {
        "application/json": {"schema": _envelope(d["response"])}}}}
    for code in d["errors"]:
        status = STATUS_OF.get(code, "400")
        prior = responses.get(status, {}).get("description")
        responses[status] = _error(f"{prior}; {code}" if prior else code)
    generic = dict(GENERIC_ERRORS)
    if d["auth"] != "bearer":
        generic.pop("401"), generic.pop("403")
    for status, text in generic.items():
        responses.setdefault(status, _error(text))
    op["responses"] = responses
    auth = {"bearer": [{"apiKey": list(d["scopes"])}], "none": [], "basic": [{"basicAuth": []}],
            "signature": []}
    op["security"] = auth.get(d["auth"], [])
    if d["scopes"]:
        op["x-scopes"] = list(d["scopes"])
    return op


def build(app: Flask) -> dict:
    paths: dict[str, dict] = {}
    models: set = {ErrorBody}
    for rule, view in sorted(api_rules(app), key=lambda rv: rv[0].rule):
        if not hasattr(view, "api_doc"):
            continue  # undocumented: tests/test_api_openapi.py names it
        item = paths.setdefault(openapi_path(rule.rule), {})
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            item[method.lower()] = _operation(rule, view, method, models)
    ordered = sorted(models, key=lambda m: m.__name__)
    _, defs = models_json_schema([(m, "validation") for m in ordered], ref_template=REF)
    return {
        "openapi": "3.1.0",
        "info": {"title": "Creditdesk API", "version": "1.0.0",
                 "description": "Credits ledger, prepaid tasks and payments for the product "
                                "backend. Envelope: {success, data} or {success: false, error, "
                                "code, retryable}. See docs/api.md and docs/error-codes.md."},
        "servers": [{"url": app.config.get("PUBLIC_BASE_URL", "/")}],
        "paths": paths,
        "components": {
            "schemas": defs.get("$defs", {}),
            "securitySchemes": {
                "apiKey": {"type": "http", "scheme": "bearer",
                           "description": "Authorization: Bearer cdk_... (scopes listed per call)"},
                "basicAuth": {"type": "http", "scheme": "basic"},
            },
        },
    }


@bp.get("/openapi.json")
@describe(summary="This OpenAPI document (served bare, without the envelope)", auth="none",
          tag="ops")
def document():
    doc = current_app.extensions.get("creditdesk_openapi")
    if doc is None:
        doc = current_app.extensions["creditdesk_openapi"] = build(current_app)
    return _raw(doc)


def _raw(doc: dict):
    """The document itself (tools expect the bare OpenAPI object, not an envelope)."""
    return current_app.response_class(current_app.json.dumps(doc), mimetype="application/json")
