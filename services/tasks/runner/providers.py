"""Providers: the only code that talks to a third-party AI API. No database, no credits.

A provider is bound to one configured endpoint (`Endpoint`, from the AI_PROVIDERS config, e.g.
"primary" and "fallback") and either runs a task synchronously (`SyncProvider.run`) or submits it
and is polled later (`AsyncProvider.submit` / `query`). Failures raise `ProviderError`, whose
`retryable` tells the caller whether the fallback endpoint (and later a retry) may succeed.

`OpenAICompatible` is the HTTP adapter for any OpenAI-compatible API: chat completions (plain and
streamed), image generation, and the two asynchronous APIs, Responses in background mode and
Videos. Base URL, key and timeouts come from configuration (docs/tasks.md, "Configuration").
Every call carries `X-Client-Request-Id` (task and attempt) and, when known, `X-Request-Id`: the
Creditdesk API request that caused it (services.core.context), so both sides' logs can be joined.
"""
from __future__ import annotations

import json
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import requests
from flask import current_app

from services.core import context

RETRYABLE_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}


class ProviderError(Exception):
    """A provider call failed; `retryable` when the same call may succeed later or elsewhere."""

    def __init__(self, message: str, *, retryable: bool, status: int | None = None,
                 provider: str | None = None):
        super().__init__(message)
        self.message, self.retryable, self.status, self.provider = message, retryable, status, provider

    def __str__(self) -> str:
        where = f"{self.provider}: " if self.provider else ""
        return f"{where}{self.message}" + (f" (HTTP {self.status})" if self.status else "")


@dataclass
class Usage:
    """What a call consumed, as the provider reported it (`estimated` when it did not)."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    images: int = 0
    seconds: int = 0
    estimated: bool = False

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def as_dict(self) -> dict:
        out = {k: v for k, v in (("prompt_tokens", self.prompt_tokens),
                                 ("completion_tokens", self.completion_tokens),
                                 ("total_tokens", self.total_tokens), ("images", self.images),
                                 ("seconds", self.seconds)) if v}
        if self.estimated:
            out["estimated"] = True
        return out


@dataclass
class Result:
    """A finished call: what to keep (`output`), what it used, which endpoint served it."""

    output: dict
    usage: Usage
    provider: str
    model: str | None = None


@dataclass
class Poll:
    """The state of an asynchronous job: running, succeeded (with `result`) or failed."""

    status: str
    result: Result | None = None
    error: ProviderError | None = None


# --- configuration -------------------------------------------------------------------------------

@dataclass(frozen=True)
class Endpoint:
    """One configured OpenAI-compatible API (AI_<NAME>_* variables)."""

    name: str
    base_url: str
    api_key: str = ""
    timeout: float = 60.0
    connect_timeout: float = 5.0
    chat_model: str = "gpt-4o-mini"
    image_model: str = "gpt-image-1"
    video_model: str = "sora-2"

    @classmethod
    def of(cls, raw: dict) -> Endpoint:
        known = {k: raw[k] for k in cls.__dataclass_fields__ if k in raw}
        for k in ("timeout", "connect_timeout"):
            if k in known:
                known[k] = float(known[k])
        known["base_url"] = str(known["base_url"]).rstrip("/")
        return cls(**known)


def endpoints() -> list[Endpoint]:
    """The configured endpoints in fallback order (AI_PROVIDERS), without unconfigured ones."""
    raw = current_app.config.get("AI_PROVIDERS") or []
    if isinstance(raw, dict):
        raw = [{"name": k, **v} for k, v in raw.items()]
    return [Endpoint.of(r) for r in raw if r.get("base_url")]


# --- the HTTP adapter ----------------------------------------------------------------------------

_local = threading.local()


def _session() -> requests.Session:
    """One keep-alive session per thread (requests' Session is not shared across threads)."""
    s = getattr(_local, "session", None)
    if s is None:
        s = _local.session = requests.Session()
    return s


class OpenAICompatible:
    """JSON over HTTP to one endpoint: bearer key, timeouts, errors mapped to ProviderError."""

    def __init__(self, endpoint: Endpoint):
        self.endpoint = endpoint
        self.name = endpoint.name

    def _headers(self, request_id: str | None) -> dict:
        h = {"Authorization": f"Bearer {self.endpoint.api_key}", "Content-Type": "application/json"}
        if request_id:
            h["X-Client-Request-Id"] = request_id  # shows in the provider's logs; fakes count by it
        if api_request := context.request_id():  # the Creditdesk request that caused this call
            h["X-Request-Id"] = api_request
        return h

    def _send(self, method: str, path: str, body: dict | None, request_id: str | None,
              stream: bool = False) -> requests.Response:
        url = f"{self.endpoint.base_url}{path}"
        try:
            resp = _session().request(method, url, json=body, headers=self._headers(request_id),
                                      timeout=(self.endpoint.connect_timeout, self.endpoint.timeout),
                                      stream=stream)
        except requests.Timeout as err:
            raise ProviderError(f"timed out: {type(err).__name__}", retryable=True,
                                provider=self.name) from None
        except requests.RequestException as err:
            raise ProviderError(f"connection failed: {type(err).__name__}", retryable=True,
                                provider=self.name) from None
        if resp.status_code >= 400:
            message = _error_message(resp)
            resp.close()
            raise ProviderError(message, retryable=resp.status_code in RETRYABLE_STATUS,
                                status=resp.status_code, provider=self.name)
        return resp

    def call(self, method: str, path: str, body: dict | None = None, *,
             request_id: str | None = None) -> dict:
        resp = self._send(method, path, body, request_id)
        try:
            data = resp.json()
        except (ValueError, requests.RequestException):
            raise ProviderError("the answer is not JSON", retryable=True, status=resp.status_code,
                                provider=self.name) from None
        if not isinstance(data, dict):
            raise ProviderError("the answer is not a JSON object", retryable=True, provider=self.name)
        return data

    def events(self, path: str, body: dict, *, request_id: str | None = None) -> Iterator[dict]:
        """POST and read server-sent events: each `data:` object until `data: [DONE]`."""
        resp = self._send("POST", path, body, request_id, stream=True)
        done = False
        try:
            for line in resp.iter_lines(decode_unicode=False):
                if not line or not line.startswith(b"data:"):
                    continue
                data = line[5:].strip()
                if data == b"[DONE]":
                    done = True
                    break
                try:
                    yield json.loads(data)
                except ValueError:
                    raise ProviderError("a stream event is not JSON", retryable=True,
                                        provider=self.name) from None
        except requests.RequestException as err:
            raise ProviderError(f"the stream broke: {type(err).__name__}", retryable=True,
                                provider=self.name) from None
        finally:
            resp.close()
        if not done:
            raise ProviderError("the stream ended before [DONE]", retryable=True, provider=self.name)


def _error_message(resp: requests.Response) -> str:
    try:
        err = resp.json().get("error")
        if isinstance(err, dict) and err.get("message"):
            return str(err["message"])[:500]
    except (ValueError, AttributeError):
        pass
    return f"HTTP {resp.status_code}"


def _int(value: Any) -> int:
    try:
        return max(int(value), 0)
    except (TypeError, ValueError):
        return 0


# --- provider base classes -------------------------------------------------------------------------

class Provider:
    """Bound to one endpoint; `name` is the endpoint's (what task logs and Task.provider show)."""

    mode = "sync"

    def __init__(self, endpoint: Endpoint):
        self.endpoint = endpoint
        self.http = OpenAICompatible(endpoint)

    @property
    def name(self) -> str:
        return self.endpoint.name


class SyncProvider(Provider, ABC):
    mode = "sync"

    @abstractmethod
    def run(self, payload: dict, *, request_id: str | None = None) -> Result:
        """Do the work now and answer the result."""


class AsyncProvider(Provider, ABC):
    mode = "async"

    @abstractmethod
    def submit(self, payload: dict, *, request_id: str | None = None) -> str:
        """Start the work; answer the provider's job id (stored as Task.external_task_id)."""

    @abstractmethod
    def query(self, external_id: str, *, request_id: str | None = None) -> Poll:
        """The job's state now."""


# --- OpenAI-compatible providers --------------------------------------------------------------------

def chat_messages(payload: dict) -> list[dict]:
    """`messages`, or a single user message from `prompt`."""
    messages = payload.get("messages")
    if isinstance(messages, list) and messages:
        return [{"role": str(m.get("role", "user")), "content": str(m.get("content", ""))}
                for m in messages if isinstance(m, dict)]
    if payload.get("prompt"):
        return [{"role": "user", "content": str(payload["prompt"])}]
    raise ProviderError("the task input needs `messages` or `prompt`", retryable=False)


class ChatCompletions(SyncProvider):
    """POST /chat/completions; usage in tokens. `stream()` reads it as server-sent events."""

    def _body(self, payload: dict) -> dict:
        body = {"model": payload.get("model") or self.endpoint.chat_model,
                "messages": chat_messages(payload)}
        if payload.get("max_tokens"):
            body["max_tokens"] = int(payload["max_tokens"])
        if payload.get("temperature") is not None:
            body["temperature"] = payload["temperature"]
        return body

    def run(self, payload: dict, *, request_id: str | None = None) -> Result:
        body = self._body(payload)
        data = self.http.call("POST", "/chat/completions", body, request_id=request_id)
        try:
            choice = data["choices"][0]
            content = choice["message"].get("content") or ""
        except (KeyError, IndexError, TypeError, AttributeError):
            raise ProviderError("the answer has no choices[0].message", retryable=True,
                                provider=self.name) from None
        u = data.get("usage") or {}
        usage = Usage(_int(u.get("prompt_tokens")), _int(u.get("completion_tokens")))
        return Result(output={"content": content, "finish_reason": choice.get("finish_reason"),
                              "id": data.get("id")},
                      usage=usage, provider=self.name, model=data.get("model") or body["model"])

    def stream(self, payload: dict, *, request_id: str | None = None) -> Iterator[str | Result]:
        """Yield text deltas as they arrive, then one Result (usage from the final chunk)."""
        body = {**self._body(payload), "stream": True, "stream_options": {"include_usage": True}}
        parts: list[str] = []
        finish, model, usage = None, body["model"], None
        for event in self.http.events("/chat/completions", body, request_id=request_id):
            model = event.get("model") or model
            if event.get("usage"):
                u = event["usage"]
                usage = Usage(_int(u.get("prompt_tokens")), _int(u.get("completion_tokens")))
            for choice in event.get("choices") or []:
                delta = (choice.get("delta") or {}).get("content")
                if delta:
                    parts.append(delta)
                    yield delta
                finish = choice.get("finish_reason") or finish
        yield Result(output={"content": "".join(parts), "finish_reason": finish},
                     usage=usage or Usage(estimated=True), provider=self.name, model=model)


class ImageGenerations(SyncProvider):
    """POST /images/generations; usage in images (and tokens when the API reports them)."""

    def run(self, payload: dict, *, request_id: str | None = None) -> Result:
        if not payload.get("prompt"):
            raise ProviderError("the task input needs `prompt`", retryable=False)
        body = {"model": payload.get("model") or self.endpoint.image_model,
                "prompt": str(payload["prompt"]), "n": int(payload.get("n") or 1)}
        if payload.get("size"):
            body["size"] = str(payload["size"])
        data = self.http.call("POST", "/images/generations", body, request_id=request_id)
        items = data.get("data")
        if not isinstance(items, list) or not items:
            raise ProviderError("the answer has no images", retryable=True, provider=self.name)
        # Keep links only: base64 images belong in object storage, not in the task row.
        images = [i.get("url") for i in items if isinstance(i, dict) and i.get("url")]
        u = data.get("usage") or {}
        usage = Usage(_int(u.get("input_tokens")), _int(u.get("output_tokens")), images=len(items))
        return Result(output={"images": images, "count": len(items)}, usage=usage,
                      provider=self.name, model=body["model"])


def _job_error(data: dict, provider: str) -> ProviderError:
    err = data.get("error") or {}
    code = str(err.get("code") or data.get("status") or "failed")
    return ProviderError(str(err.get("message") or f"the job {code}")[:500],
                         retryable=code in ("server_error", "rate_limit_exceeded"), provider=provider)


class _OpenAIJob(AsyncProvider):
    """A job of OpenAI's shape: POST `path` answers its id, GET `path`/{id} its status."""

    path = ""

    def _start(self, body: dict, request_id: str | None) -> str:
        data = self.http.call("POST", self.path, body, request_id=request_id)
        if not data.get("id"):
            raise ProviderError("the answer has no id", retryable=True, provider=self.name)
        return str(data["id"])

    def _state(self, external_id: str, request_id: str | None) -> tuple[dict, Poll | None]:
        """The job's data, and its Poll while it runs or once it failed (None: completed)."""
        data = self.http.call("GET", f"{self.path}/{external_id}", request_id=request_id)
        status = data.get("status")
        if status in ("queued", "in_progress"):
            return data, Poll("running")
        if status != "completed":
            return data, Poll("failed", error=_job_error(data, self.name))
        return data, None


class BackgroundResponses(_OpenAIJob):
    """POST /responses with background: true, then GET /responses/{id} until it completes."""

    path = "/responses"

    def submit(self, payload: dict, *, request_id: str | None = None) -> str:
        body = {"model": payload.get("model") or self.endpoint.chat_model,
                "input": chat_messages(payload), "background": True}
        if payload.get("max_tokens"):
            body["max_output_tokens"] = int(payload["max_tokens"])
        return self._start(body, request_id)

    def query(self, external_id: str, *, request_id: str | None = None) -> Poll:
        data, unfinished = self._state(external_id, request_id)
        if unfinished:
            return unfinished
        text = "".join(c.get("text", "") for item in data.get("output") or [] if isinstance(item, dict)
                       for c in item.get("content") or [] if c.get("type") == "output_text")
        u = data.get("usage") or {}
        usage = Usage(_int(u.get("input_tokens")), _int(u.get("output_tokens")))
        return Poll("succeeded", Result(output={"content": text, "id": external_id}, usage=usage,
                                        provider=self.name, model=data.get("model")))


class Videos(_OpenAIJob):
    """POST /videos, then GET /videos/{id}; usage in seconds of video."""

    path = "/videos"

    def submit(self, payload: dict, *, request_id: str | None = None) -> str:
        if not payload.get("prompt"):
            raise ProviderError("the task input needs `prompt`", retryable=False)
        body = {"model": payload.get("model") or self.endpoint.video_model,
                "prompt": str(payload["prompt"])}
        for k in ("seconds", "size"):
            if payload.get(k):
                body[k] = str(payload[k])
        return self._start(body, request_id)

    def query(self, external_id: str, *, request_id: str | None = None) -> Poll:
        data, unfinished = self._state(external_id, request_id)
        if unfinished:
            return unfinished
        out = {"video_id": external_id, "content_url": f"{self.endpoint.base_url}/videos/"
               f"{external_id}/content", "size": data.get("size"), "seconds": data.get("seconds")}
        return Poll("succeeded", Result(output=out, usage=Usage(seconds=_int(data.get("seconds"))),
                                        provider=self.name, model=data.get("model")))
