"""An OpenAI-compatible API double over real HTTP on 127.0.0.1 (the shape of api.openai.com/v1).

Routes:
- `POST /v1/chat/completions`: a deterministic answer (`reply_text`, or "Echo: <last user
  message>"), `usage` counted in words (one word = one token, so tests can compute costs);
  `max_tokens` truncates (finish_reason "length"); `stream: true` answers server-sent events, one
  chunk per word, then a usage chunk when `stream_options.include_usage`, then `data: [DONE]`.
- `POST /v1/images/generations`: `n` image URLs (no usage, as DALL-E answers).
- The async APIs: `POST /v1/responses` with `background: true` and `POST /v1/videos` create a job
  ("queued"); `GET /v1/responses/{id}` and `GET /v1/videos/{id}` poll it: "in_progress" until
  the job has been polled `polls_to_finish` times, then "completed" (or "failed" for the ids in
  `failing_jobs`, or every job while `fail_jobs` is on).

Failure injection: `fail_next(n, status, path=...)` / `delay_next` from FakeServer (status None
drops the connection), `drop_stream_after = k` (the next stream hangs up after k chunks).
Concurrency: `gather = n` holds each answer until n requests are in flight; `max_in_flight`.
Every request carries `X-Client-Request-Id: creditdesk-task-<id>-<attempt>` (or chat-...),
and `calls_per_task()` counts answered requests per task id.
"""
from __future__ import annotations

import json
import re
import threading
import time
from collections import Counter
from typing import Any

from tests.fakes import FakeServer, RecordedRequest, Reply, random_id

TEST_API_KEY = "sk-test-creditdesk-FAKE-0000"
_TASK_HEADER = re.compile(r"^creditdesk-task-(\d+)-\d+$")


def error(status: int, message: str, *, type_: str = "invalid_request_error",
          code: str | None = None) -> Reply:
    """OpenAI's error answer: {"error": {"message", "type", "param", "code"}}."""
    return Reply(status, {"error": {"message": message, "type": type_, "param": None, "code": code}})


def words(text: str) -> int:
    return len(text.split())


class FakeOpenAI(FakeServer):
    """The fake; `jobs` holds the async jobs by id, `reply_text` fixes the chat answer."""

    name = "openai"

    def __init__(self, api_key: str = TEST_API_KEY, *, label: str = "fake") -> None:
        super().__init__()
        self.api_key, self.label = api_key, label
        self.reply_text: str | None = None
        self.jobs: dict[str, dict] = {}
        self.polls_to_finish = 1
        self.fail_jobs = False
        self.failing_jobs: set[str] = set()
        self.drop_stream_after: int | None = None
        self.stream_delay = 0.0
        self.gather = 0  # hold each answer until this many requests are in flight (10 s at most)
        self.in_flight = self.max_in_flight = 0
        self._flight = threading.Condition()

    def app_config(self, name: str = "primary", **extra: Any) -> dict[str, Any]:
        """One entry of the AI_PROVIDERS config pointing at this fake."""
        return {"name": name, "base_url": f"{self.url}/v1", "api_key": self.api_key,
                "timeout": 5.0, "connect_timeout": 2.0, "chat_model": f"{self.label}-chat",
                "image_model": f"{self.label}-image", "video_model": f"{self.label}-video", **extra}

    # -- test helpers -----------------------------------------------------------------------
    def answered(self, method: str, path: str) -> list[RecordedRequest]:
        """Requests to this route that the API answered (not injected failures or drops)."""
        return [r for r in self.requests_to(method, path) if not r.injected and r.status is not None]

    def calls_per_task(self, method: str = "POST", path: str = "/v1/") -> Counter:
        """task id -> answered requests that carried it in X-Client-Request-Id."""
        out: Counter = Counter()
        for r in self.answered(method, path):
            m = _TASK_HEADER.match(r.header("X-Client-Request-Id") or "")
            if m:
                out[int(m.group(1))] += 1
        return out

    # -- routing ----------------------------------------------------------------------------
    def error_body(self, status: int) -> dict:
        if status == 429:
            return error(429, "Rate limit reached for requests", type_="requests",
                         code="rate_limit_exceeded").body
        if status >= 500:
            return error(status, "The server had an error while processing your request.",
                         type_="server_error").body
        return error(status, "Fake failure").body

    def route(self, req: RecordedRequest) -> Reply:
        token = (req.header("Authorization") or "").removeprefix("Bearer ").strip()
        if token != self.api_key:
            return error(401, "Incorrect API key provided.", code="invalid_api_key")
        if not isinstance(req.body, dict):
            req.body = {}
        key = (req.method, req.path)
        if key == ("POST", "/v1/chat/completions"):
            return self._chat(req.body)
        if key == ("POST", "/v1/images/generations"):
            return self._images(req.body)
        if key == ("POST", "/v1/responses"):
            return self._create_job(req.body, "response")
        if key == ("POST", "/v1/videos"):
            return self._create_job(req.body, "video")
        m = re.fullmatch(r"/v1/(responses|videos)/([\w-]+)", req.path)
        if m and req.method == "GET":
            return self._poll(m.group(2), "response" if m.group(1) == "responses" else "video")
        return error(404, f"Invalid URL ({req.method} {req.path})")

    # -- chat completions ---------------------------------------------------------------------
    def answer_for(self, messages: list) -> str:
        if self.reply_text is not None:
            return self.reply_text
        last = next((m.get("content", "") for m in reversed(messages) if m.get("role") == "user"), "")
        return f"Echo: {last}"

    @staticmethod
    def prompt_tokens(messages: list) -> int:
        return sum(words(str(m.get("content", ""))) + 3 for m in messages) + 3

    def _chat(self, body: dict) -> Reply:
        messages = body.get("messages")
        if not body.get("model") or not isinstance(messages, list) or not messages:
            return error(400, "'model' and a non-empty 'messages' are required.")
        reply = self.answer_for(messages).split()
        finish = "stop"
        limit = body.get("max_tokens") or body.get("max_completion_tokens")
        if isinstance(limit, int) and len(reply) > limit:
            reply, finish = reply[:limit], "length"
        usage = {"prompt_tokens": self.prompt_tokens(messages), "completion_tokens": len(reply)}
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        cid, created = random_id("chatcmpl-", 20), int(time.time())
        if body.get("stream"):
            return self._chat_stream(cid, created, body["model"], reply, finish, usage,
                                     bool((body.get("stream_options") or {}).get("include_usage")))
        return Reply(200, {
            "id": cid, "object": "chat.completion", "created": created, "model": body["model"],
            "choices": [{"index": 0, "finish_reason": finish,
                         "message": {"role": "assistant", "content": " ".join(reply)}}],
            "usage": usage, "system_fingerprint": f"fp_{self.label}"})

    def _chat_stream(self, cid, created, model, reply, finish, usage, include_usage) -> Reply:
        def chunk(delta: dict, finish_reason=None, **extra) -> str:
            body = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model,
                    "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}], **extra}
            return f"data: {json.dumps(body)}\n\n"

        events = [chunk({"role": "assistant", "content": ""})]
        events += [chunk({"content": (" " if i else "") + w}) for i, w in enumerate(reply)]
        events.append(chunk({}, finish))
        if include_usage:
            events.append(f"data: {json.dumps({'id': cid, 'object': 'chat.completion.chunk', 'created': created, 'model': model, 'choices': [], 'usage': usage})}\n\n")  # noqa: E501
        events.append("data: [DONE]\n\n")
        drop, self.drop_stream_after = self.drop_stream_after, None
        return Reply(200, {"events": events, "drop_after": drop}, content_type="text/event-stream")

    # -- images -------------------------------------------------------------------------------
    def _images(self, body: dict) -> Reply:
        prompt, n = body.get("prompt"), body.get("n", 1)
        if not prompt or not isinstance(n, int) or not 1 <= n <= 10:
            return error(400, "'prompt' is required and 'n' must be between 1 and 10.")
        return Reply(200, {"created": int(time.time()), "data": [
            {"url": f"{self.url}/files/{random_id('img-', 16)}.png", "revised_prompt": prompt}
            for _ in range(n)]})

    # -- async jobs (Responses in background mode, Videos) ------------------------------------
    def _create_job(self, body: dict, kind: str) -> Reply:
        if kind == "response" and not body.get("background"):
            return error(400, "This fake serves /v1/responses in background mode only.")
        if not body.get("model") or not (body.get("input") or body.get("prompt")):
            return error(400, "'model' and 'input' (or 'prompt' for videos) are required.")
        jid = random_id("resp_" if kind == "response" else "video_", 24)
        self.jobs[jid] = {"id": jid, "kind": kind, "body": body, "polls": 0,
                          "created_at": int(time.time())}
        return Reply(200, self._job_object(self.jobs[jid], "queued"))

    def _poll(self, jid: str, kind: str) -> Reply:
        job = self.jobs.get(jid)
        if job is None or job["kind"] != kind:
            return error(404, f"No {kind} found with id '{jid}'.")
        job["polls"] += 1
        if job["polls"] < self.polls_to_finish:
            return Reply(200, self._job_object(job, "in_progress"))
        failed = self.fail_jobs or jid in self.failing_jobs
        return Reply(200, self._job_object(job, "failed" if failed else "completed"))

    def _job_object(self, job: dict, status: str) -> dict:
        body = job["body"]
        base = {"id": job["id"], "created_at": job["created_at"], "status": status,
                "model": body.get("model"), "error": None}
        if status == "failed":
            base["error"] = {"code": "server_error", "message": "The job failed at the provider."}
        if job["kind"] == "video":
            seconds = str(body.get("seconds") or "4")
            base.update(object="video", seconds=seconds, size=body.get("size") or "720x1280",
                        progress=100 if status == "completed" else 0)
            return base
        text = body.get("input")
        text = text if isinstance(text, str) else json.dumps(text)
        answer = self.reply_text if self.reply_text is not None else f"Echo: {text}"
        base.update(object="response", background=True, output=[], usage=None)
        if status == "completed":
            base["output"] = [{"type": "message", "id": "msg_" + job["id"][5:], "role": "assistant",
                               "status": "completed",
                               "content": [{"type": "output_text", "text": answer, "annotations": []}]}]
            usage = {"input_tokens": words(text), "output_tokens": words(answer)}
            base["usage"] = {**usage, "total_tokens": sum(usage.values())}
        return base

    # -- streaming plumbing ---------------------------------------------------------------------
    def _encode(self, reply: Reply) -> bytes:
        if reply.content_type == "text/event-stream":
            return b""  # written event by event in _write
        return FakeServer._encode(reply)

    def _write(self, handler, reply: Reply, payload: bytes) -> None:
        with self._flight:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            self._flight.notify_all()
            if self.gather:
                self._flight.wait_for(lambda: self.in_flight >= self.gather, timeout=10)
        try:
            return self._write_now(handler, reply, payload)
        finally:
            with self._flight:
                self.in_flight -= 1

    def _write_now(self, handler, reply: Reply, payload: bytes) -> None:
        if reply.content_type != "text/event-stream":
            return FakeServer._write(handler, reply, payload)
        handler.send_response(reply.status)
        handler.send_header("Content-Type", "text/event-stream")
        handler.send_header("Cache-Control", "no-cache")
        handler.end_headers()  # HTTP/1.0: the body ends when the connection closes
        drop = reply.body.get("drop_after")
        for i, event in enumerate(reply.body["events"]):
            if drop is not None and i >= drop + 1:  # the role chunk, then `drop` content chunks
                handler.close_connection = True
                return None
            handler.wfile.write(event.encode())
            handler.wfile.flush()
            if self.stream_delay:
                time.sleep(self.stream_delay)
        return None


if __name__ == "__main__":  # a developer tool: python -m tests.fakes.openai_server
    server = FakeOpenAI().start()
    cfg = server.app_config()
    print(f"export AI_PRIMARY_BASE_URL={cfg['base_url']} AI_PRIMARY_API_KEY={cfg['api_key']}")  # noqa: T201
    try:
        server._thread.join()  # type: ignore[union-attr]
    except KeyboardInterrupt:
        server.stop()
