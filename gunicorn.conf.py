"""gunicorn settings for Creditdesk: `gunicorn wsgi:app` reads this file from the project root.

Chosen by measurement on a 2-core machine with PostgreSQL on it (docs/performance.md, "API
debits"): 3 workers x 3 threads (gthread). A debit spends about half its time waiting for
PostgreSQL, so threads overlap those waits; more threads per process queue on the GIL (2 x 8
was the slowest, with the worst p99), more processes add memory; 3 x 3 served the most single
debits (443/s against 327/s for 2 x 4 and 378/s for 4 x 2). Every setting can be overridden on
the command line or with the environment variables below.

SQLAlchemy's pool (5 connections + 10 overflow per worker, dashboard/config.py) covers the
threads; size PostgreSQL's max_connections for workers x (threads + the scheduler's one).
"""
import os

bind = os.environ.get("GUNICORN_BIND", "127.0.0.1:8000")
workers = int(os.environ.get("WEB_CONCURRENCY", "3"))
worker_class = os.environ.get("GUNICORN_WORKER_CLASS", "gthread")
threads = int(os.environ.get("GUNICORN_THREADS", "3"))
keepalive = int(os.environ.get("GUNICORN_KEEPALIVE", "5"))
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "60"))
graceful_timeout = 30
# The longest request line gunicorn takes (its maximum); longer ones get its 414 page, which the
# OpenAPI document declares on every operation with a query string.
limit_request_line = 8190
# A worker is replaced after this many requests (with jitter), bounding any slow growth of memory.
max_requests = int(os.environ.get("GUNICORN_MAX_REQUESTS", "20000"))
max_requests_jitter = 2000
accesslog = None  # the app logs every request itself (dashboard/logs.py), as JSON
