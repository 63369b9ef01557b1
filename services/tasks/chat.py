"""Metered AI chat (seeds 000 and 001): hold an estimate, call the provider (with fallback),
settle on the tokens actually used, refund on failure.

1. Price: the `chat:<model>` price row when there is one, else `chat` (services.tasks.runner.metering).
2. Hold: a prepaid task charges the estimate up front (prompt estimate + max_tokens, priced),
   created already `processing` in one transaction so the task runner never picks it up. No
   credits, no call: 402 INSUFFICIENT_CREDITS before anything reaches the provider. If this
   process dies mid-call, the timeout sweep refunds the hold at the task's deadline.
3. Call: the configured endpoints in order; a retryable failure of one tries the next (before the
   first streamed token only: a stream that broke half-way cannot switch).
4. Settle: actual = usage x price, capped at the hold; the rest is refunded (services.tasks.prepaid).
   Failure: full refund and 502 AI_PROVIDER_ERROR. A client that hangs up mid-stream pays for the
   prompt and the text it was sent (estimated from characters), settled the moment the server
   notices; an error of ours mid-stream refunds in full and ends with an `error` event.
   A stream outlives its request's session: the iterator holds ids and plain values only, and
   each of its database steps runs in an app context (and session) of its own.
5. Prompt cache (optional, AI_CHAT_CACHE_TTL_SECONDS > 0): keyed on the model, max_tokens and the
   normalized messages (whitespace collapsed, case folded). A hit answers without a provider call
   and is charged AI_CHAT_CACHE_HIT_PERCENT % of what the call that filled it cost (rounded up;
   0 = free), as one debit; each hit is counted on the cache row (cache_stats()).
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta

from flask import Flask, current_app
from sqlalchemy import delete, func, select, update
from sqlalchemy.dialects import postgresql, sqlite

from models import PromptCache, db, utcnow
from services.catalog import pricing
from services.core import context
from services.core.db import atomic
from services.core.errors import Conflict, IdempotencyInUse, ServiceError, ValidationFailed
from services.ledger import customers
from services.ledger import posting as ledger
from services.ledger.rules import SYSTEM, Actor
from services.tasks import prepaid as tasks
from services.tasks.runner import metering, registry
from services.tasks.runner.handlers import lock_task
from services.tasks.runner.providers import ChatCompletions, ProviderError, Result, Usage, endpoints

log = logging.getLogger("creditdesk.chat")

FEATURE = "chat"
HOLD_SECONDS = 900  # the hold's deadline: a call that outlives it is refunded by the sweep


class AiProviderError(ServiceError):
    """The AI provider failed; nothing was charged. Try again."""
    status, code, retryable = 502, "AI_PROVIDER_ERROR", True


class AiNotConfigured(ServiceError):
    """No AI provider is configured on this server (AI_PRIMARY_BASE_URL)."""
    status, code = 503, "AI_NOT_CONFIGURED"


@dataclass(frozen=True)
class Rate:
    """A feature price as plain values (what metering reads): safe to keep past a session."""
    credits_per_unit: int
    unit: str


@dataclass
class Prepared:
    customer_id: int
    messages: list[dict]
    model: str | None
    max_tokens: int
    feature: str
    price: Rate
    estimate: int
    cache_key: str | None

    def payload(self) -> dict:
        return {"messages": self.messages, "model": self.model, "max_tokens": self.max_tokens}


@dataclass
class ChatAnswer:
    content: str
    finish_reason: str | None
    model: str | None
    provider: str | None
    usage: dict
    credits_charged: int
    credits_refunded: int
    balance: int
    cached: bool = False
    task_id: int | None = None
    fallback_from: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {"task_id": self.task_id, "message": {"role": "assistant", "content": self.content},
                "finish_reason": self.finish_reason, "model": self.model, "provider": self.provider,
                "usage": self.usage, "credits_charged": self.credits_charged,
                "credits_refunded": self.credits_refunded, "balance": self.balance,
                "cached": self.cached, "fallback_from": self.fallback_from}


# --- preparation ---------------------------------------------------------------------------------

def _normalize(text: str) -> str:
    return " ".join(text.split()).casefold()


def cache_key(messages: list[dict], model: str | None, max_tokens: int) -> str:
    blob = json.dumps({"model": model or "", "max_tokens": max_tokens,
                       "messages": [[m["role"], _normalize(m["content"])] for m in messages]},
                      separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(blob.encode()).hexdigest()


def _cfg(name: str, default: int) -> int:
    return int(current_app.config.get(name, default))


def prepare(*, external_id: str, messages: list[dict], model: str | None = None,
            max_tokens: int | None = None) -> Prepared:
    """Validate, price and estimate a chat call (no writes)."""
    if not endpoints():
        raise AiNotConfigured()
    customer_id = customers.get_by_external_id(external_id).id
    max_tokens = max_tokens or _cfg("AI_CHAT_DEFAULT_MAX_TOKENS", 1024)
    feature = f"{FEATURE}:{model}" if model and pricing.price_for(f"{FEATURE}:{model}") else FEATURE
    price = metering.price_of(feature)
    if price is None:
        raise ValidationFailed(f"Feature {FEATURE!r} has no price; an admin sets it under Pricing.",
                               details={"feature": "no price for this feature"})
    price = Rate(price.credits_per_unit, price.unit or "")
    tokens = metering.estimate_prompt_tokens(messages) + max_tokens
    estimate = max(metering.credits_for_tokens(price, tokens), 1)
    key = cache_key(messages, model, max_tokens) if _cfg("AI_CHAT_CACHE_TTL_SECONDS", 0) > 0 else None
    return Prepared(customer_id, messages, model, max_tokens, feature, price, estimate, key)


def _balance(customer_id: int) -> int:
    db.session.expire_all()
    return customers.account_of(customer_id).balance


# --- the hold, the call, the settlement -------------------------------------------------------------

def _hold(p: Prepared, *, key: str | None, actor: Actor, stream: bool) -> int:
    """Charge the estimate as a prepaid task that is processing from the start."""
    with atomic():
        task = tasks.create(type=p.feature, customer_id=p.customer_id, mode="sync",
                            estimated_credits=p.estimate, timeout_seconds=HOLD_SECONDS,
                            key=f"chat:{key}" if key else None, actor=actor,
                            input={"model": p.model, "max_tokens": p.max_tokens, "stream": stream,
                                   "messages": len(p.messages),
                                   "characters": sum(len(m["content"]) for m in p.messages)})
        if task.status != "pending":  # the Idempotency-Key of an earlier call
            if task.status == "processing":
                raise IdempotencyInUse("A chat call with this Idempotency-Key is still running.")
            raise Conflict("A chat call with this Idempotency-Key has finished already "
                           f"(task {task.id}); send a new key for a new call.")
        tasks.start(task_id=task.id, provider=endpoints()[0].name)
        return task.id


def _chain() -> list[ChatCompletions]:
    return registry.lookup(FEATURE).chain("sync")


def _failed_over(task_id: int, err: ProviderError) -> None:
    log.warning("chat.provider_failed task_id=%s provider=%s retryable=%s: %s", task_id,
                err.provider, err.retryable, err.message,
                extra={"task_id": task_id, "provider": err.provider, "status": err.status})
    with atomic() as s:
        tasks.log(s, task_id, f"{err.provider} failed: {err.message}", level="warning",
                  data={"provider": err.provider, "status": err.status, "retryable": err.retryable})


def _settle(p: Prepared, task_id: int, result: Result, failures: list[ProviderError],
            actor: Actor) -> ChatAnswer:
    if result.usage.estimated:  # an endpoint that streams without usage: count characters
        result.usage = Usage(metering.estimate_prompt_tokens(p.messages),
                             metering.estimate_text_tokens(result.output.get("content", "")),
                             estimated=True)
    handler = registry.lookup(FEATURE).handler
    fallback_from = [f.provider for f in failures]
    done = handler.succeed(tasks.get(task_id), result, actor=actor, output={
        "provider": result.provider, "model": result.model, "usage": result.usage.as_dict(),
        "finish_reason": result.output.get("finish_reason"), "fallback_from": fallback_from})
    if result.output.get("finish_reason") == "stop":
        store(p, result, done.actual_credits)
    return ChatAnswer(content=result.output.get("content", ""),
                      finish_reason=result.output.get("finish_reason"), model=result.model,
                      provider=result.provider, usage=result.usage.as_dict(),
                      credits_charged=done.actual_credits, credits_refunded=done.refunded_credits,
                      balance=_balance(p.customer_id), task_id=done.id, fallback_from=fallback_from)


def _refund(p: Prepared, task_id: int, failures: list[ProviderError],
            actor: Actor) -> ServiceError:
    last = failures[-1] if failures else ProviderError("no provider answered", retryable=True)
    tasks.fail(task_id=task_id, error=f"chat failed: {last}", actor=actor)
    err = AiProviderError(f"The AI provider failed ({last.message}); the hold was refunded.",
                          details={"providers": [{"provider": f.provider, "status": f.status,
                                                  "error": f.message} for f in failures],
                                   "task_id": task_id, "balance": _balance(p.customer_id)})
    err.retryable = all(f.retryable for f in failures) if failures else True
    return err


def complete(*, external_id: str, messages: list[dict], model: str | None = None,
             max_tokens: int | None = None, key: str | None = None,
             actor: Actor = SYSTEM) -> ChatAnswer:
    """One metered chat completion: hold, call with fallback, settle (or refund and raise)."""
    p = prepare(external_id=external_id, messages=messages, model=model, max_tokens=max_tokens)
    if (hit := cached_answer(p, key=key, actor=actor)) is not None:
        return hit
    task_id = _hold(p, key=key, actor=actor, stream=False)
    failures: list[ProviderError] = []
    for provider in _chain():
        try:
            result = provider.run(p.payload(), request_id=f"creditdesk-task-{task_id}-1")
        except ProviderError as err:
            failures.append(err)
            _failed_over(task_id, err)
            if not err.retryable:
                break
            continue
        return _settle(p, task_id, result, failures, actor)
    raise _refund(p, task_id, failures, actor)


def stream(*, external_id: str, messages: list[dict], model: str | None = None,
           max_tokens: int | None = None, key: str | None = None,
           actor: Actor = SYSTEM) -> Iterator[tuple[str, dict]]:
    """The streamed variant: checks and the hold happen now (errors raise before any byte is
    sent); the returned iterator yields ("delta", {content}) events, then ("done", answer) or
    ("error", envelope), and settles before its last event. It needs no request or app context:
    the response is iterated after Flask has torn the request's down."""
    p = prepare(external_id=external_id, messages=messages, model=model, max_tokens=max_tokens)
    if (hit := cached_answer(p, key=key, actor=actor)) is not None:
        return iter([("delta", {"content": hit.content}), ("done", _done(hit))])
    task_id = _hold(p, key=key, actor=actor, stream=True)
    scope = _Scope(current_app._get_current_object(), context.request_id())
    return _stream(p, task_id, _chain(), actor, scope)


def _done(answer: ChatAnswer) -> dict:
    out = answer.as_dict()
    out.pop("message")
    return out


@dataclass(frozen=True)
class _Scope:
    """What a stream's later steps run under: the app (a context and session of their own) and
    the request id of the request that started it (logs, ledger entries, X-Request-Id)."""
    app: Flask
    request_id: str | None

    @contextmanager
    def __call__(self) -> Iterator[None]:
        with self.app.app_context(), context.request_scope(self.request_id):
            yield

    def each(self, items: Iterator) -> Iterator:
        """Pull each item of `items` (a provider stream) under the request id, without holding
        the context variable across a yield; closing this closes `items` (the upstream call)."""
        end = object()
        try:
            while True:
                with context.request_scope(self.request_id):
                    item = next(items, end)
                if item is end:
                    return
                yield item
        finally:
            items.close()


@dataclass
class _Progress:
    sent: list[str] = field(default_factory=list)
    settled: bool = False


def _stream(p: Prepared, task_id: int, chain: list[ChatCompletions], actor: Actor,
            scope: _Scope) -> Iterator[tuple[str, dict]]:
    state = _Progress()
    try:
        yield from _relay(p, task_id, chain, actor, scope, state)
    except Exception:  # ours, not the provider's: refund, and end the stream with an error event
        log.exception("chat.stream_failed task_id=%s", task_id, extra={"task_id": task_id})
        refunded = False
        if not state.settled:
            state.settled = True
            with scope():
                refunded = _internal_failure(task_id, actor)
        yield "error", {"success": False, "code": "INTERNAL_ERROR", "retryable": True,
                        "error": "The chat failed on our side" + (
                            "; the hold was refunded." if refunded else "."),
                        "details": {"task_id": task_id}}
    finally:
        if not state.settled:  # the client hung up (GeneratorExit): settle what was sent
            with scope():
                _abandoned(p, task_id, "".join(state.sent), actor)


def _relay(p: Prepared, task_id: int, chain: list[ChatCompletions], actor: Actor, scope: _Scope,
           state: _Progress) -> Iterator[tuple[str, dict]]:
    failures: list[ProviderError] = []
    for provider in chain:
        result = None
        try:
            for piece in scope.each(provider.stream(p.payload(),
                                                    request_id=f"creditdesk-task-{task_id}-1")):
                if isinstance(piece, Result):
                    result = piece
                else:
                    state.sent.append(piece)
                    yield "delta", {"content": piece}
        except ProviderError as err:
            failures.append(err)
            with scope():
                _failed_over(task_id, err)
            if state.sent or not err.retryable:
                break  # the client has part of an answer: no switching providers now
            continue
        with scope():
            answer = _settle(p, task_id, result, failures, actor)
        state.settled = True
        yield "done", _done(answer)
        return
    with scope():
        err = _refund(p, task_id, failures, actor)
    state.settled = True
    yield "error", {"success": False, "error": err.message, "code": err.code,
                    "retryable": err.retryable, "details": err.details}


def _abandoned(p: Prepared, task_id: int, text: str, actor: Actor) -> None:
    tokens = metering.estimate_prompt_tokens(p.messages) + metering.estimate_text_tokens(text)
    actual = metering.credits_for_tokens(p.price, tokens) if text else 0
    try:
        with atomic() as s:
            lock_task(s, task_id)  # before the log row's key-share lock: no lock upgrade
            tasks.log(s, task_id, "client disconnected mid-stream; charged the text sent",
                      level="warning", data={"characters": len(text), "actual_credits": actual})
            tasks.complete(task_id=task_id, actual_credits=actual, actor=actor,
                           output={"abandoned": True, "characters": len(text)})
    except ServiceError:
        log.warning("chat.abandoned_settle_failed task_id=%s", task_id, exc_info=True)


def _internal_failure(task_id: int, actor: Actor) -> bool:
    """Refund the hold in full; False when that failed (already settled, or the database is down:
    then the timeout sweep refunds an open hold)."""
    try:
        tasks.fail(task_id=task_id, error="chat stream failed on our side", actor=actor)
        return True
    except Exception:
        log.warning("chat.stream_refund_failed task_id=%s", task_id, exc_info=True)
        return False


# --- the prompt cache -------------------------------------------------------------------------------

def cached_answer(p: Prepared, *, key: str | None, actor: Actor) -> ChatAnswer | None:
    """A live cache entry's answer, charged by the hit rule and counted; None on a miss."""
    if p.cache_key is None:
        return None
    now = utcnow()
    row = db.session.scalar(select(PromptCache).where(PromptCache.key == p.cache_key,
                                                      PromptCache.expires_at > now))
    if row is None:
        return None
    credits = math.ceil(row.credits * _cfg("AI_CHAT_CACHE_HIT_PERCENT", 100) / 100)
    with atomic() as s:
        if credits > 0:
            ledger.debit(customer_id=p.customer_id, credits=credits, feature=p.feature,
                         key=f"chat-cache:{key}" if key else None, actor=actor,
                         reference=f"prompt-cache:{row.id}", reason="chat answered from the cache",
                         meta={"cache_hit": True, "model": row.model})
        s.execute(update(PromptCache).where(PromptCache.id == row.id)
                  .values(hits=PromptCache.hits + 1, last_hit_at=now)
                  .execution_options(synchronize_session=False))
    return ChatAnswer(content=row.content, finish_reason=row.finish_reason, model=row.model,
                      provider="cache", usage=row.usage or {}, credits_charged=credits,
                      credits_refunded=0, balance=_balance(p.customer_id), cached=True)


def store(p: Prepared, result: Result, credits: int) -> None:
    """Keep a finished answer for AI_CHAT_CACHE_TTL_SECONDS (a newer answer replaces it)."""
    if p.cache_key is None:
        return
    now = utcnow()
    values = dict(key=p.cache_key, model=result.model or p.model or "", content=result.output.get(
        "content", ""), finish_reason=result.output.get("finish_reason"),
        usage=result.usage.as_dict(), credits=credits, hits=0, created_at=now,
        expires_at=now + timedelta(seconds=_cfg("AI_CHAT_CACHE_TTL_SECONDS", 0)))
    with atomic() as s:
        dialect = postgresql if s.get_bind().dialect.name == "postgresql" else sqlite
        stmt = dialect.insert(PromptCache.__table__).values(**values)
        s.execute(stmt.on_conflict_do_update(
            index_elements=["key"], set_={k: stmt.excluded[k] for k in values if k != "key"}))
        s.execute(delete(PromptCache).where(PromptCache.expires_at < now - timedelta(days=1)))


def cache_stats() -> dict:
    """Live entries and hits served, for analytics."""
    now = utcnow()
    live, hits = db.session.execute(
        select(func.count().filter(PromptCache.expires_at > now),
               func.coalesce(func.sum(PromptCache.hits), 0))).one()
    return {"entries": int(live or 0), "hits": int(hits or 0)}
