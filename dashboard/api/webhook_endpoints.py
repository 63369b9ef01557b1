"""The product's webhook endpoints over the API (docs/webhooks.md): create (the signing secret
is answered once), list, delete, rotate the secret. Scope `webhooks:write`."""
from __future__ import annotations

from typing import Annotated, Literal

from flask import Blueprint, g
from pydantic import BaseModel, ConfigDict, Field, StrictStr

from dashboard.api import schemas as sc
from dashboard.api.auth import api_key_required
from dashboard.api.core import describe, ok, parse, query
from dashboard.api.customers import decode_cursor, encode_cursor
from dashboard.respond import client_ip
from models import WebhookEndpoint
from services.events import endpoints
from services.events.outbox import EVENT_TYPES
from services.events.urls import MAX_URL

bp = Blueprint("api_webhook_endpoints", __name__, url_prefix="/api/v1/webhook-endpoints")

EventType = Literal[tuple(EVENT_TYPES)]  # type: ignore[valid-type]
SCOPE = "webhooks:write"


class EndpointIn(sc.Body):
    url: Annotated[StrictStr, Field(min_length=1, max_length=MAX_URL,
                                    description="https URL of the product (public address)")]
    events: Annotated[list[EventType], Field(min_length=1, max_length=len(EVENT_TYPES),
                                             description="event types to receive")]
    description: Annotated[StrictStr, Field(max_length=endpoints.MAX_DESCRIPTION)] = ""


class EndpointOut(BaseModel):
    id: int
    url: str
    events: list[str]
    description: str
    status: Literal["enabled", "disabled"]
    disabled_reason: str | None
    failing_since: str | None
    created_at: str | None


class EndpointCreated(EndpointOut):
    secret: str = Field(description="the signing secret (whsec_...), shown only in this answer")


class SecretOut(BaseModel):
    id: int
    secret: str = Field(description="the new signing secret, shown only in this answer")
    previous_secret_expires_at: str | None = Field(
        description="until then the previous secret signs too (a second signature)")


class EndpointList(BaseModel):
    endpoints: list[EndpointOut]
    next_cursor: str | None


class Deleted(BaseModel):
    id: int
    deleted: Literal[True]


class ListQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")
    limit: Annotated[int, Field(ge=1, le=200)] = 50
    cursor: Annotated[str, Field(max_length=200, description="next_cursor of the previous page")] = None


def endpoint_json(ep: WebhookEndpoint) -> dict:
    return {"id": ep.id, "url": ep.url, "events": list(ep.events), "description": ep.description,
            "status": ep.status, "disabled_reason": ep.disabled_reason,
            "failing_since": sc.iso(ep.failing_since), "created_at": sc.iso(ep.created_at)}


def _actor() -> str:
    return f"api key {g.api_key.id}"


@bp.post("")
@describe(summary="Add a webhook endpoint", body=EndpointIn, response=EndpointCreated,
          status=201, scopes=(SCOPE,), tag="webhooks",
          description="""Events of the listed types are POSTed to the URL, signed per Standard
              Webhooks with the returned secret (shown only here). 422 VALIDATION_ERROR for a
              malformed URL, one that resolves to a private, loopback or link-local address, an
              unknown event type or an empty list.""")
@api_key_required(SCOPE)
def create():
    body = parse(EndpointIn)
    made = endpoints.create(url=body.url, events=list(body.events), description=body.description,
                            actor=_actor(), ip=client_ip())
    return ok({**endpoint_json(made.endpoint), "secret": made.secret}, 201)


@bp.get("")
@describe(summary="Webhook endpoints, newest first, cursor-paged (no secrets)", query=ListQuery,
          response=EndpointList, scopes=(SCOPE,), tag="webhooks")
@api_key_required(SCOPE)
def index():
    args = query(ListQuery)
    rows, more = endpoints.page(cursor=decode_cursor(args.cursor) if args.cursor else None,
                                limit=args.limit)
    return ok({"endpoints": [endpoint_json(e) for e in rows],
               "next_cursor": encode_cursor(rows[-1].id) if more else None})


@bp.delete("/<int:endpoint_id>")
@describe(summary="Remove a webhook endpoint", response=Deleted, scopes=(SCOPE,),
          errors=("NOT_FOUND",), tag="webhooks",
          description="Nothing more is sent to it; pending deliveries are dropped.")
@api_key_required(SCOPE)
def delete(endpoint_id: int):
    ep = endpoints.delete(endpoint_id=endpoint_id, actor=_actor(), ip=client_ip())
    return ok({"id": ep.id, "deleted": True})


@bp.post("/<int:endpoint_id>/rotate-secret")
@describe(summary="Rotate a webhook endpoint's signing secret", response=SecretOut,
          scopes=(SCOPE,), errors=("NOT_FOUND",), tag="webhooks",
          description="""A new secret signs from now on; the previous one keeps signing alongside
              (two signatures in webhook-signature) for 24 hours, so the product can switch
              without losing a delivery.""")
@api_key_required(SCOPE)
def rotate(endpoint_id: int):
    made = endpoints.rotate(endpoint_id=endpoint_id, actor=_actor(), ip=client_ip())
    return ok({"id": made.endpoint.id, "secret": made.secret,
               "previous_secret_expires_at": sc.iso(made.endpoint.previous_secret_expires_at)})


__all__ = ["bp"]
