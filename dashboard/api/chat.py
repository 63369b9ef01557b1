"""Metered AI chat over the API (services/chat.py): JSON answer, or server-sent events."""
from __future__ import annotations

import json
from typing import Annotated, Literal

from flask import Blueprint, Response, g, request
from pydantic import BaseModel, Field, StrictBool, StrictInt, StrictStr

from dashboard.api import limits
from dashboard.api.auth import api_key_required
from dashboard.api.core import describe, ok, parse, path_text
from dashboard.api.idempotency import idempotent, key_from_header, scoped
from dashboard.api.schemas import Body, ErrorBody
from services.tasks import chat

bp = Blueprint("api_chat", __name__, url_prefix="/api/v1")

MAX_MESSAGES = 100
MAX_CONTENT = 32_000


class ChatMessage(Body):
    role: Literal["system", "user", "assistant"]
    content: Annotated[StrictStr, Field(max_length=MAX_CONTENT)]


class ChatIn(Body):
    messages: Annotated[list[ChatMessage], Field(min_length=1, max_length=MAX_MESSAGES)]
    model: Annotated[StrictStr, Field(min_length=1, max_length=100, pattern=r"^[\w.:/@-]+$",
                                      description="sent to every endpoint; each one's "
                                                  "default chat model when absent")] | None = None
    max_tokens: Annotated[StrictInt, Field(ge=1, le=32_768, description="completion limit; "
                                           "AI_CHAT_DEFAULT_MAX_TOKENS when absent")] | None = None
    stream: StrictBool = Field(False, description="answer server-sent events (also with "
                                                  "Accept: text/event-stream)")


class AssistantMessage(BaseModel):
    role: str
    content: str


class ChatDelta(BaseModel):
    """A `delta` event of a streamed answer: the next piece of the assistant's text."""
    content: str


class ChatDone(BaseModel):
    """The `done` event of a streamed answer (ChatOut without `message`), sent once settled."""
    task_id: int | None = Field(description="the prepaid task that held and settled the credits; "
                                            "null for a cache hit")
    finish_reason: str | None
    model: str | None
    provider: str | None = Field(description="the endpoint that answered: primary, fallback, cache")
    usage: dict
    credits_charged: int
    credits_refunded: int
    balance: int
    cached: bool
    fallback_from: list[str]


class ChatOut(ChatDone):
    message: AssistantMessage


def _wants_stream(body: ChatIn) -> bool:
    accept = request.accept_mimetypes
    return body.stream or accept.quality("text/event-stream") > accept.quality("application/json")


@bp.post("/customers/<external_id>/chat")
@describe(summary="Metered AI chat: hold an estimate, answer, settle the actual tokens", body=ChatIn,
          response=ChatOut, scopes=("tasks:write",), idempotent=True, tag="chat",
          stream={"delta": ChatDelta, "done": ChatDone, "error": ErrorBody},
          errors=("CUSTOMER_NOT_FOUND", "INSUFFICIENT_CREDITS", "AI_PROVIDER_ERROR",
                  "AI_NOT_CONFIGURED", "IDEMPOTENCY_KEY_REUSED", "IDEMPOTENCY_KEY_IN_USE",
                  "CONFLICT"),
          description="Charges an estimate up front (prompt + max_tokens, priced by the `chat` "
                      "feature), calls the primary AI endpoint (the fallback on a retryable "
                      "failure), then refunds the difference to the tokens used. With `stream: "
                      "true` the answer is `text/event-stream`: `delta` events, then one `done` "
                      "event (this schema without `message`) or one `error` event (the error "
                      "envelope); settlement happens before the last event. See docs/api.md.")
@api_key_required("tasks:write")
def create(external_id: str):
    body = parse(ChatIn)
    path_text(external_id)
    limits.check_customer(external_id)
    if _wants_stream(body):
        return _stream(external_id, body)
    return _complete(external_id=external_id)


@idempotent
def _complete(external_id: str):
    body = parse(ChatIn)
    # The Idempotency-Key store replays this answer; the key is not the hold's too, so that a
    # retry after a 502 (released, not stored) can run again under the same key.
    answer = chat.complete(external_id=external_id, messages=_messages(body), model=body.model,
                           max_tokens=body.max_tokens, actor=g.actor)
    return ok(answer.as_dict())


def _messages(body: ChatIn) -> list[dict]:
    return [{"role": m.role, "content": m.content} for m in body.messages]


def _stream(external_id: str, body: ChatIn) -> Response:
    """A stream cannot be replayed: its Idempotency-Key keys the hold instead, so a duplicate is
    409 IDEMPOTENCY_KEY_IN_USE while the first runs and 409 CONFLICT after, never a second charge."""
    raw = key_from_header()
    key = scoped(raw)  # scoped to the API key, like the store's
    events = chat.stream(external_id=external_id, messages=_messages(body), model=body.model,
                         max_tokens=body.max_tokens, key=key, actor=g.actor)

    def sse():
        # No stream_with_context: the service's iterator carries ids and opens its own app
        # context per step, so nothing here outlives the request's session.
        try:
            for name, data in events:
                yield f"event: {name}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n"
        finally:  # the client hung up: close now, so that the service settles what was sent
            if hasattr(events, "close"):
                events.close()

    return Response(sse(), mimetype="text/event-stream",
                    headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
