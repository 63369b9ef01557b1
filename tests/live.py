"""The real-server test layer: gunicorn started from the project's `gunicorn.conf.py`.

Flask's test client keeps the request context alive past the response and runs every "worker"
in one memory, which hides exactly what production meets (streamed bodies, sessions, limits
counted per process, detached ORM objects). `LiveServer` boots the app the way `make run` and
production do: `gunicorn -c gunicorn.conf.py wsgi:app`, several workers, configuration from the
environment only, and the provider doubles (Stripe, Razorpay, an OpenAI-compatible endpoint)
wired in through the same variables an operator sets.

Use the `live` fixture (tests/conftest.py): `server = live(workers=3, API_CUSTOMER_RATE_LIMIT=...)`
against the test's database (SQLite file or private PostgreSQL database); seed rows with the
usual factories in the test process, then talk HTTP with `server.get/post/...` (a `requests`
session). `server.log()` is what gunicorn and the app printed, for assertion messages.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
GUNICORN = str(Path(sys.executable).parent / "gunicorn")

# What every live server gets unless the test says otherwise: cheap password hashing (tests sign
# in often), plain-text logs, no scheduler (tests run jobs themselves) and cookies over http.
BASE_ENV = {
    "SECRET_KEY": "live-server-test-secret",
    "SESSION_COOKIE_SECURE": "0",
    "SCHEDULER_ENABLED": "0",
    "LOG_JSON": "0",
    "LOG_LEVEL": "WARNING",
    "ARGON2_TIME_COST": "1",
    "ARGON2_MEMORY_COST": "1024",
    "WEBHOOK_ALLOW_PRIVATE_URLS": "1",
}
# Variables of the developer's shell that would change what the server does under test.
_SCRUB = ("DATABASE_URL", "REDIS_URL", "WEB_CONCURRENCY", "GUNICORN_BIND",
          "PYTEST_CURRENT_TEST")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ai_env(fake, name: str = "primary") -> dict[str, str]:
    """The AI_<NAME>_* variables that point the app at one FakeOpenAI (see dashboard/config.py)."""
    cfg = fake.app_config(name)
    prefix = f"AI_{name.upper()}_"
    return {prefix + "BASE_URL": cfg["base_url"], prefix + "API_KEY": cfg["api_key"],
            prefix + "TIMEOUT": str(cfg["timeout"]), prefix + "CONNECT_TIMEOUT": str(cfg["connect_timeout"]),
            prefix + "CHAT_MODEL": cfg["chat_model"], prefix + "IMAGE_MODEL": cfg["image_model"],
            prefix + "VIDEO_MODEL": cfg["video_model"]}


class LiveServer:
    """One gunicorn master with its workers on a free 127.0.0.1 port."""

    def __init__(self, database_url: str, log_path: Path, *, workers: int = 2, threads: int = 3,
                 env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.workers = workers
        self.log_path = log_path
        self.env = {k: v for k, v in os.environ.items() if k not in _SCRUB}
        self.env.update(BASE_ENV)
        self.env.update({"DATABASE_URL": database_url, "GUNICORN_BIND": f"127.0.0.1:{self.port}",
                         "WEB_CONCURRENCY": str(workers), "GUNICORN_THREADS": str(threads)})
        self.env.update({k: str(v) for k, v in (env or {}).items() if v is not None})
        for k, v in (env or {}).items():
            if v is None:
                self.env.pop(k, None)
        self.http = requests.Session()
        self.proc: subprocess.Popen | None = None

    # -- life cycle ---------------------------------------------------------------------------
    def start(self, timeout: float = 60.0) -> LiveServer:
        self.proc = subprocess.Popen(
            [GUNICORN, "-c", str(ROOT / "gunicorn.conf.py"), "wsgi:app"], cwd=ROOT, env=self.env,
            stdout=subprocess.DEVNULL, stderr=self.log_path.open("w"), start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gunicorn exited with {self.proc.returncode}:\n{self.log()[-4000:]}")
            booted = self.log().count("Booting worker")
            if booted >= self.workers and self._healthy():
                return self
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"gunicorn did not answer within {timeout} s:\n{self.log()[-4000:]}")

    def _healthy(self) -> bool:
        try:
            return requests.get(f"{self.url}/api/health", timeout=2).status_code in (200, 503)
        except requests.RequestException:
            return False

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            # SIGQUIT: gunicorn's quick shutdown (SIGTERM waits out keep-alive connections, ~5 s
            # a boot); a test has read every answer it needs by now. A worker that has not
            # exited in 5 s is killed: under a loaded suite a few waited out gunicorn's whole
            # graceful_timeout (30 s) here, a minute and a half of every run.
            os.killpg(self.proc.pid, signal.SIGQUIT)
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        except ProcessLookupError:
            pass
        self.http.close()

    def __enter__(self) -> LiveServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- HTTP ---------------------------------------------------------------------------------
    def request(self, method: str, path: str, **kw) -> requests.Response:
        kw.setdefault("timeout", 30)
        kw.setdefault("allow_redirects", False)
        return self.http.request(method, self.url + path, **kw)

    def get(self, path: str, **kw) -> requests.Response:
        return self.request("GET", path, **kw)

    def post(self, path: str, **kw) -> requests.Response:
        return self.request("POST", path, **kw)

    def put(self, path: str, **kw) -> requests.Response:
        return self.request("PUT", path, **kw)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def worker_pids(self) -> set[int]:
        """The pids of the live workers (children of the master)."""
        out = subprocess.run(["pgrep", "-P", str(self.proc.pid)], capture_output=True, text=True)
        return {int(p) for p in out.stdout.split()}


def bearer(key: str, **headers: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}", **headers}


__all__ = ["LiveServer", "ai_env", "bearer", "free_port", "ROOT"]
