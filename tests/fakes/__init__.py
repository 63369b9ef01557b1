"""Real-HTTP test doubles of the payment providers, bound to 127.0.0.1 only.

`FakeServer` is the shared plumbing: a ThreadingHTTPServer on port 0 in a background thread
that records every request and lets a test inject failures, delays and dropped connections.
`stripe_server.FakeStripe` and `razorpay_server.FakeRazorpay` answer like the providers do.
"""
from __future__ import annotations

import json
import secrets
import string
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from requests.structures import CaseInsensitiveDict

_ALPHABET = string.ascii_letters + string.digits


def random_id(prefix: str, length: int = 24) -> str:
    """A provider-looking id such as `pi_3Pq...` or `order_Ox2...`."""
    return prefix + "".join(secrets.choice(_ALPHABET) for _ in range(length))


@dataclass
class RecordedRequest:
    """One request as the fake saw it; `body` is parsed (form or JSON), `raw` is the bytes."""

    method: str
    path: str
    query: dict[str, str]
    headers: CaseInsensitiveDict
    body: Any
    raw: bytes
    status: int | None = None  # None when the connection was dropped
    injected: bool = False  # answered by fail_next()/delay_next(), not by the fake API

    def header(self, name: str) -> str | None:
        """The value of one header, case-insensitively."""
        return self.headers.get(name)


@dataclass
class _Fault:
    status: int | None  # None: close the connection without an answer
    delay: float = 0.0
    path: str | None = None
    body: dict | None = None
    remaining: int = 1


@dataclass
class Reply:
    """What a route answers."""

    status: int
    body: Any
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str = "application/json"


class _Handler(BaseHTTPRequestHandler):
    server_version = "fake-provider"
    sys_version = ""

    def _dispatch(self) -> None:
        self.server.fake._serve(self)  # type: ignore[attr-defined]

    do_GET = do_POST = do_DELETE = do_PATCH = do_PUT = _dispatch

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        """Keep test output quiet."""


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that timed out and hung up is expected here, not a failure."""


class FakeServer:
    """Base of the provider fakes; subclasses implement `route()` and `error_body()`."""

    name = "fake"

    def __init__(self, port: int = 0) -> None:
        self.requests: list[RecordedRequest] = []
        self.lock = threading.RLock()
        self._faults: deque[_Fault] = deque()
        self._httpd = _Server(("127.0.0.1", port), _Handler)  # port 0: a free one
        self._httpd.fake = self  # type: ignore[attr-defined]
        self._thread: threading.Thread | None = None

    # -- life cycle -------------------------------------------------------------------------
    @property
    def url(self) -> str:
        """Base URL, e.g. http://127.0.0.1:54321 (no trailing slash)."""
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> FakeServer:
        """Serve in a daemon thread."""
        self._thread = threading.Thread(  # a short poll makes stop() quick
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.02},
            name=f"{self.name}-fake", daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and free the port."""
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> FakeServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def run_standalone(self) -> None:
        """Serve until Ctrl-C, printing the env vars that point Creditdesk here."""
        self.start()
        for name, value in self.app_config().items():  # type: ignore[attr-defined]
            print(f"export {name}={value}")  # noqa: T201 - a developer tool
        try:
            self._thread.join()  # type: ignore[union-attr]
        except KeyboardInterrupt:
            self.stop()

    # -- test controls ----------------------------------------------------------------------
    def fail_next(
        self, n: int = 1, status: int | None = 500, *, drop: bool = False,
        path: str | None = None, body: dict | None = None,
    ) -> None:
        """Answer the next `n` requests (to paths starting with `path`) with `status`.

        With `drop=True` (or `status=None`) the connection is closed without any answer, as a
        crashed load balancer would. Nothing is stored: the request never reached the API.
        """
        with self.lock:
            self._faults.append(_Fault(None if drop else status, path=path, body=body,
                                       remaining=n))

    def delay_next(self, n: int = 1, seconds: float = 1.0, *, path: str | None = None) -> None:
        """Hold the next `n` requests for `seconds`, then hang up (a client timeout)."""
        with self.lock:
            self._faults.append(_Fault(None, delay=seconds, path=path, remaining=n))

    def requests_to(self, method: str, path: str) -> list[RecordedRequest]:
        """Recorded requests with this method whose path starts with `path`."""
        with self.lock:
            return [r for r in self.requests
                    if r.method == method.upper() and r.path.startswith(path)]

    @property
    def last_request(self) -> RecordedRequest:
        """The most recent request."""
        with self.lock:
            return self.requests[-1]

    # -- subclass hooks ---------------------------------------------------------------------
    def parse_body(self, raw: bytes, content_type: str) -> Any:
        """Parse a request body; JSON by default."""
        if not raw:
            return {}
        try:
            return json.loads(raw)
        except ValueError:
            return raw.decode("utf-8", "replace")

    def route(self, req: RecordedRequest) -> Reply:  # pragma: no cover - abstract
        raise NotImplementedError

    def error_body(self, status: int) -> dict:  # pragma: no cover - abstract
        raise NotImplementedError

    # -- plumbing ---------------------------------------------------------------------------
    def _take_fault(self, path: str) -> _Fault | None:
        with self.lock:
            for fault in self._faults:
                if fault.path is None or path.startswith(fault.path):
                    fault.remaining -= 1
                    if fault.remaining <= 0:
                        self._faults.remove(fault)
                    return fault
        return None

    def _serve(self, handler: BaseHTTPRequestHandler) -> None:
        parts = urlsplit(handler.path)
        length = int(handler.headers.get("Content-Length") or 0)
        raw = handler.rfile.read(length) if length else b""
        ctype = handler.headers.get("Content-Type", "")
        req = RecordedRequest(
            method=handler.command, path=parts.path,
            query=dict(parse_qsl(parts.query, keep_blank_values=True)),
            headers=CaseInsensitiveDict(handler.headers.items()),
            body=self.parse_body(raw, ctype), raw=raw,
        )
        with self.lock:
            self.requests.append(req)
        fault = self._take_fault(req.path)
        if fault is not None:
            req.injected = True
            if fault.delay:
                time.sleep(fault.delay)
            if fault.status is None:
                handler.close_connection = True
                return  # the socket closes with no status line: RemoteDisconnected
            reply = Reply(fault.status, fault.body or self.error_body(fault.status))
            payload = self._encode(reply)
        else:
            with self.lock:  # one request at a time through the API, encoded as it stood
                reply = self.route(req)
                payload = self._encode(reply)
        req.status = reply.status
        self._write(handler, reply, payload)

    @staticmethod
    def _encode(reply: Reply) -> bytes:
        if reply.content_type == "application/json":
            return json.dumps(reply.body).encode()
        return str(reply.body).encode()

    @staticmethod
    def _write(handler: BaseHTTPRequestHandler, reply: Reply, payload: bytes) -> None:
        handler.send_response(reply.status)
        handler.send_header("Content-Type", reply.content_type)
        handler.send_header("Content-Length", str(len(payload)))
        for name, value in reply.headers.items():
            handler.send_header(name, value)
        handler.end_headers()
        handler.wfile.write(payload)
