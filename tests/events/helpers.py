"""A real webhook receiver for tests: ThreadingHTTPServer on 127.0.0.1, recording each request."""
from __future__ import annotations

import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from standardwebhooks.webhooks import Webhook

from models import db
from services.events import delivery, endpoints


@dataclass
class Received:
    path: str
    headers: dict
    body: bytes


class Receiver:
    def __init__(self) -> None:
        self.requests: list[Received] = []
        self.answers: list[int] = []  # statuses to answer in order; 200 once they run out
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with outer.lock:
                    outer.requests.append(Received(self.path, {k.lower(): v for k, v in
                                                               self.headers.items()}, body))
                    status = outer.answers.pop(0) if outer.answers else 200
                self.send_response(status)
                self.send_header("Content-Type", "text/plain")
                self.end_headers()
                self.wfile.write(f"answered {status}".encode())

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/hooks"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Receiver:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    def verify(self, secret: str, req: Received) -> dict:
        """The body, verified with the standardwebhooks package (raises when it does not verify)."""
        return Webhook(secret).verify(req.body, req.headers)


def endpoint(url: str, events=("grant.created",), **kw) -> endpoints.Created:
    created = endpoints.create(url=url, events=list(events), description=kw.pop("description", ""))
    db.session.commit()
    return created


def deliver(**kw) -> delivery.Result:
    out = delivery.run(**kw)
    db.session.expire_all()
    return out
