"""@idempotent: the `Idempotency-Key` header on money-moving POSTs.

Same key and body -> the stored status and body again (header `Idempotent-Replayed: true`);
same key, other body -> 409 IDEMPOTENCY_KEY_REUSED; first call still running -> 409
IDEMPOTENCY_KEY_IN_USE (retryable). The header is optional: without it nothing is replayed.

Keys are scoped to the calling API key: the reply store's scope names the key, and ledger keys
derived from the header (`ledger_key`, `scoped`) carry `k<api key id>:`.

Stored: replies of calls that ran to a final answer (2xx, 402, and 409 business conflicts).
Released (a retry runs again): 5xx, retryable errors, 4xx that mean "nothing was done" (400, 401,
403, 404, 413, 422, 429), and 409s about idempotency itself.
"""
from __future__ import annotations

import functools
import hashlib
import re

from flask import g, make_response, request
from sqlalchemy.exc import IntegrityError

from dashboard.api.auth import current_api_key
from dashboard.api.core import from_error, json_body, respond
from services.core.db import atomic
from services.core.errors import ServiceError, ValidationFailed
from services.ledger import idempotency as store
from services.ledger.sqldebit import Reply

HEADER = "Idempotency-Key"
KEY_RE = re.compile(r"^[\x21-\x7e]{1,128}$")  # printable ASCII, no spaces
_STORED_ERRORS = {402, 409}


def _scope(customer: str | None = None) -> str:
    rule = request.url_rule.rule if request.url_rule else request.path
    key = current_api_key()
    owner = f"k{key.id}" if key is not None else f"c{customer or '-'}"
    scope = f"{request.method} {rule} {owner}"
    if len(scope) > 64:  # the column's width; keep it readable when it fits
        scope = f"{request.method} {hashlib.sha256(rule.encode()).hexdigest()[:32]} {owner}"[:64]
    return scope


def _canonical_body():
    try:
        return json_body()
    except ValidationFailed:
        return {"raw": request.get_data(cache=True).decode("latin-1")}


def _payload(resp):
    """The JSON of a reply: what respond() sent (kept on the response), else the body parsed."""
    payload = getattr(resp, "payload", None)
    return payload if payload is not None else resp.get_json(silent=True)


def _storable(resp) -> bool:
    if resp.status_code < 300:
        return True
    if resp.status_code not in _STORED_ERRORS:
        return False
    body = resp.get_json(silent=True) or {}
    return not str(body.get("code", "")).startswith("IDEMPOTENCY_") and not body.get("retryable")


def key_from_header() -> str | None:
    """The validated Idempotency-Key of this request, or None (422 when malformed)."""
    raw = request.headers.get(HEADER)
    if raw is None:
        return None
    if not KEY_RE.match(raw):
        raise ValidationFailed("Idempotency-Key must be 1 to 128 printable ASCII characters.",
                               details={HEADER: "invalid"})
    return raw


def idempotent(view=None, *, required: bool = False, owner=None, one_transaction: bool = False):
    """Replay stored replies for a repeated Idempotency-Key. `owner(kwargs)` scopes keyless callers.

    one_transaction: the claim, the call and its stored reply commit together (for calls whose
    services only write the database, like debits): one commit instead of three. Calls that talk
    to a provider between their own commits (purchases) keep the default.
    """
    def wrap(fn):
        @functools.wraps(fn)
        def inner(*args, **kwargs):
            key = key_from_header()
            g.idempotency_key = key
            if key is None:
                if required:
                    raise ValidationFailed(f"The {HEADER} header is required on this call.",
                                           details={HEADER: "required"})
                if one_transaction:
                    with atomic():
                        return make_response(fn(*args, **kwargs))
                return fn(*args, **kwargs)
            scope = _scope(owner(kwargs) if owner else None)
            if one_transaction:
                return _in_one_transaction(fn, args, kwargs, scope, key)
            claim = store.claim(scope=scope, key=key,
                                request_hash=store.request_hash(_canonical_body(), kwargs))
            if claim.replay:
                return respond(claim.body, claim.status, {"Idempotent-Replayed": "true"})
            try:
                try:
                    resp = make_response(fn(*args, **kwargs))
                except ServiceError as err:
                    resp = from_error(err)
            except BaseException:
                store.release(record_id=claim.record_id)
                raise
            body = resp.get_json(silent=True)
            if isinstance(body, dict) and _storable(resp):
                store.complete(record_id=claim.record_id, status=resp.status_code, body=body)
            else:
                store.release(record_id=claim.record_id)
            return resp

        inner.api_idempotent = True
        return inner

    return wrap(view) if view is not None else wrap


class _Discard(Exception):
    """Roll the call back and answer `resp` (a reply that is not stored writes nothing)."""

    def __init__(self, resp):
        self.resp = resp


def _in_one_transaction(fn, args, kwargs, scope: str, key: str):
    h = store.request_hash(_canonical_body(), kwargs)
    for attempt in (1, 2):
        try:
            with atomic() as s:
                claim = store.claim_in(s, scope=scope, key=key, request_hash=h)
                if claim.replay:
                    return respond(claim.body, claim.status, {"Idempotent-Replayed": "true"})
                resp = make_response(fn(*args, **kwargs))
                body = _payload(resp)
                if not (isinstance(body, dict) and _storable(resp)):
                    raise _Discard(resp)
                store.complete_in(s, record_id=claim.record_id, status=resp.status_code, body=body,
                                  raw=resp.get_data(as_text=True) if hasattr(resp, "payload") else None)
                return resp
        except _Discard as d:
            return d.resp
        except ServiceError as err:
            resp = from_error(err)
            body = resp.get_json(silent=True)
            if _storable(resp):  # a final answer (402...): the call wrote nothing; keep the answer
                store.remember(scope=scope, key=key, request_hash=h, status=resp.status_code, body=body)
            return resp
        except IntegrityError:
            # a ledger key taken meanwhile by a call outside this one (a batch item): run again,
            # now as a replay of that entry
            if attempt == 2:
                raise
    raise AssertionError("unreachable")  # pragma: no cover


def reply_of(key: str | None, path_args: dict) -> Reply | None:
    """The reply-store claim @idempotent would make for this call, for a service that makes it
    in SQL itself (services/ledger/sqldebit.py); None without an Idempotency-Key."""
    if key is None:
        return None
    return Reply(scope=_scope(), key=key, request_hash=store.request_hash(_canonical_body(), path_args),
                 ttl=store.TTL)


def key_scope() -> str:
    """What makes a client's key unique: `k<api key id>:`. Two API keys sending the same
    Idempotency-Key (or batch item key) make two requests, in the reply store and in the ledger."""
    key = current_api_key()
    return f"k{key.id}:" if key is not None else ""


def scoped(raw: str | None) -> str | None:
    """`raw` (this request's Idempotency-Key by default) scoped to the calling API key."""
    return f"{key_scope()}{raw}" if raw else None


def ledger_key(prefix: str) -> str | None:
    """The ledger idempotency key derived from this request's Idempotency-Key (None without one):
    `<prefix>:k<api key id>:<key>`."""
    key = scoped(g.get("idempotency_key"))
    return f"{prefix}:{key}" if key else None


__all__ = ["idempotent", "key_scope", "reply_of", "ledger_key", "scoped", "key_from_header", "HEADER"]
