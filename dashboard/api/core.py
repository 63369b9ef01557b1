"""The API's envelope, strict JSON body parsing and route descriptions for the OpenAPI document.

Every answer is `{"success": true, "data": ...}` or
`{"success": false, "error": msg, "code": CODE, "retryable": bool[, "details": ...]}`.
"""
from __future__ import annotations

import json
import math
from typing import Any, TypeVar

from flask import current_app, request
from pydantic import BaseModel, ValidationError

from dashboard.api.schemas import MAX_PATH_ARG
from services.core.errors import ServiceError, ValidationFailed

M = TypeVar("M", bound=BaseModel)

MAX_SAFE_INT = 2**53 - 1  # what a JavaScript client can hold exactly
MAX_DEPTH = 32


def _dump(payload: dict) -> str:
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":"), default=str)


def respond(payload: dict, status: int, headers: dict | None = None):
    resp = current_app.response_class(_dump(payload), status=status, mimetype="application/json")
    resp.payload = payload  # what was sent, for the reply store (no second parse of the body)
    for k, v in (headers or {}).items():
        resp.headers[k] = v
    return resp


def ok(data: Any, status: int = 200, headers: dict | None = None):
    """A success envelope."""
    return respond({"success": True, "data": data}, status, headers)


def fail(code: str, message: str, status: int, retryable: bool = False,
         details: Any = None, headers: dict | None = None):
    """An error envelope."""
    body = {"success": False, "error": message, "code": code, "retryable": bool(retryable)}
    if details is not None:
        body["details"] = details
    return respond(body, status, headers)


def from_error(err: ServiceError):
    """The envelope of a typed service error."""
    return fail(err.code, err.message, err.status, err.retryable, err.details)


# --- strict JSON bodies ---------------------------------------------------------------------

def _reject_constant(name: str):
    raise ValueError(f"{name} is not valid JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError("number out of range")
    return value


def _check_tree(data: Any) -> None:
    """Reject what JSON allows but we never accept: unsafe integers, NUL, lone surrogates, depth."""
    stack = [(data, 0, "")]
    while stack:
        node, depth, where = stack.pop()
        if depth > MAX_DEPTH:
            raise ValidationFailed("The JSON body is nested too deeply.", details={"body": "too deep"})
        if isinstance(node, bool) or node is None or isinstance(node, float):
            continue
        if isinstance(node, int):
            if abs(node) > MAX_SAFE_INT:
                raise ValidationFailed("A number is too large.",
                                       details={where or "body": f"must be within ±{MAX_SAFE_INT}"})
        elif isinstance(node, str):
            _check_text(node, where or "body")
        elif isinstance(node, dict):
            for k, v in node.items():
                _check_text(k, where or "body")
                stack.append((v, depth + 1, f"{where}.{k}" if where else k))
        elif isinstance(node, list):
            stack.extend((v, depth + 1, f"{where}.{i}" if where else str(i)) for i, v in enumerate(node))


def _check_text(s: str, where: str) -> None:
    if "\x00" in s:
        raise ValidationFailed("Text may not contain NUL characters.", details={where: "contains NUL"})
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        raise ValidationFailed("Text must be valid Unicode.", details={where: "invalid unicode"}) from None


def json_body() -> Any:
    """The request's JSON body, parsed strictly once per request (422 VALIDATION_ERROR otherwise)."""
    cached = request.environ.get("creditdesk.json_body", _MISSING)
    if cached is not _MISSING:
        return cached
    if request.mimetype != "application/json" and not request.mimetype.endswith("+json"):
        raise ValidationFailed("Send the body as JSON with Content-Type: application/json.",
                               details={"body": "Content-Type must be application/json"})
    raw = request.get_data(cache=True)  # 413 when above MAX_CONTENT_LENGTH
    try:
        data = json.loads(raw.decode("utf-8"), parse_constant=_reject_constant,
                          parse_float=_finite_float)
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise ValidationFailed("The body is not valid JSON.", details={"body": "invalid JSON"}) from None
    _check_tree(data)
    request.environ["creditdesk.json_body"] = data
    return data


_MISSING = object()


def _loc(loc: tuple) -> str:
    return ".".join(str(p) for p in loc) or "body"


def _message(e: dict) -> str:
    """pydantic's message, except that a length limit on text talks about characters (a limit
    applied after a validator says "items", whatever the type)."""
    ctx, given = e.get("ctx") or {}, e.get("input")
    if isinstance(given, str) and e["type"] == "too_short":
        n = ctx.get("min_length")
        return f"Text should have at least {n} character{'s' if n != 1 else ''}"
    if isinstance(given, str) and e["type"] == "too_long":
        n = ctx.get("max_length")
        return f"Text should have at most {n} character{'s' if n != 1 else ''}"
    return e["msg"]


def validation_details(err: ValidationError) -> dict[str, str]:
    details: dict[str, str] = {}
    for e in err.errors(include_url=False):  # the input only decides the wording; never echoed
        where, msg = _loc(e["loc"]), _message(e)
        details[where] = f"{details[where]}; {msg}" if where in details else msg
    return details


def parse(model_cls: type[M]) -> M:
    """The JSON body validated by `model_cls` (extra fields forbidden), or 422 with field details."""
    data = json_body()
    if not isinstance(data, dict):
        raise ValidationFailed("The body must be a JSON object.", details={"body": "not an object"})
    return validate(model_cls, data)


def validate(model_cls: type[M], data: Any) -> M:
    """`data` (a JSON object, or one item of a batch) validated by `model_cls`: the same 422
    VALIDATION_ERROR as parse() when it is not valid."""
    try:
        return model_cls.model_validate(data)
    except ValidationError as err:
        raise ValidationFailed("The request body is invalid.",
                               details=validation_details(err)) from None


def query(model_cls: type[M]) -> M:
    """Query-string arguments validated by `model_cls` (422 with field details)."""
    try:
        return model_cls.model_validate(request.args.to_dict())
    except ValidationError as err:
        raise ValidationFailed("The query string is invalid.",
                               details=validation_details(err)) from None


def path_text(value: str, name: str = "external_id") -> str:
    """A text path argument checked like body text (length, NUL, unicode)."""
    if not value or len(value) > MAX_PATH_ARG:
        raise ValidationFailed(f"{name} must be 1 to {MAX_PATH_ARG} characters.",
                               details={name: "bad length"})
    _check_text(value, name)
    return value


# --- descriptions for the OpenAPI document ---------------------------------------------------

from dashboard.api.openapi import describe  # noqa: E402, I001 - spectree's declaration of a route

__all__ = ["ok", "fail", "from_error", "respond", "parse", "validate", "query", "json_body", "path_text",
           "describe", "validation_details", "MAX_SAFE_INT"]
