"""The PostgreSQL export path (COPY ... TO STDOUT WITH (FORMAT csv), cells formatted in SQL) writes
exactly the bytes of the Python writer (csvsafe), for hostile data and many filters; through a
real gunicorn too, where a client that goes away must give the connection back.

PostgreSQL only: SQLite has no COPY and keeps the Python writer (tests/reporting/test_export.py
runs on both databases through whichever path the database gets).
"""
from __future__ import annotations

import random
import time
from datetime import datetime, timedelta

import pytest
import requests
from sqlalchemy import select, text

from bench import ledger_data
from models import AuditLog, Customer, LedgerEntry, db
from models.ledger import ENTRY_TYPES
from services.reporting import export
from services.reporting.transactions import Filters
from tests.helpers import csrf_from


@pytest.fixture(params=[pytest.param("postgresql", marks=pytest.mark.pg)])
def db_url(request):
    """This module's tests run on PostgreSQL only (overrides the conftest's two databases)."""
    return request.getfixturevalue("pg_url")


SEED = 20261204
HOSTILE = ["=cmd|' /C calc'!A0", "+1", "-1", "@x", "\tleading tab", "\rleading CR", "\nleading LF",
           "'apostrophe", "say \"hi\"", "a,b,c", "two\nlines", "cr\rinside", "crlf\r\nend\r\n",
           "Müller 日本語 🚀", "ünïcödé, \"quoted\"\n", "  spaces  ", "\\.", "\\", "NULL", '"',
           ",", "x" * 60, "-", "=", "é=1", "trailing\n", "", None]
FEATURES = [None, "chat", "image", "=feature", "+f", "fé,ature"]


def _world(rng: random.Random) -> list[int]:
    """Customers with hostile names/emails/ids and entries of every type with hostile text cells,
    NULLs, negative and large numbers, odd timestamps (microseconds, midnight, old dates)."""
    data = ledger_data.Data(db.session)
    start = datetime(2026, 11, 1, 0, 0, 0)
    people = []
    for n in range(6):
        name = rng.choice([h for h in HOSTILE if h is not None])
        cid, aid = data.customer(start, name=name, email=f"{rng.choice(['=', '+', '', 'ü'])}p{n}@example.com")
        data.customers[-1]["external_id"] = ["-ext", "@ext", "ext,1", "ext\"q", "ext\n2", "plain"][n]
        data.sim.grant(aid, cid, start, 10_000, "promo", reason=rng.choice(HOSTILE))
        people.append((cid, aid))
    for i in range(150):  # simulator rows: grants, debits, refunds with their allocations
        cid, aid = rng.choice(people)
        at = start + timedelta(hours=i * 3, microseconds=rng.randint(0, 999_999))
        e = data.sim.debit(aid, cid, at, rng.randint(1, 40), feature=rng.choice(FEATURES[1:]),
                           reference=rng.choice(HOSTILE))
        if e and rng.random() < 0.2:
            data.sim.refund(e, at + timedelta(minutes=5), 1, reason=rng.choice(HOSTILE))
    top = max(e["id"] for e in data.sim.entries)
    extra = []
    for i in range(len(ENTRY_TYPES) * 12):  # every entry type, every text column hostile or NULL
        cid, aid = people[i % len(people)]
        top += 1
        later = start + timedelta(seconds=rng.randint(0, 30 * 86400),
                                  microseconds=rng.randint(0, 999_999))
        at = rng.choice([datetime(2026, 11, 3, 0, 0, 0), datetime(2026, 11, 9, 23, 59, 59, 999_999),
                         datetime(2001, 1, 2, 3, 4, 5, 6), later])
        extra.append(dict(
            id=top, account_id=aid, customer_id=cid, type=ENTRY_TYPES[i % len(ENTRY_TYPES)],
            amount=rng.choice([-1, 1, 0, -(2**62), 2**62, rng.randint(-500, 500)]),
            balance_before=rng.randint(-10, 10**12), balance_after=rng.randint(-10, 10**12),
            actor_type=rng.choice(["staff", "api_key", "job", "webhook", "system"]),
            actor_id=rng.choice(HOSTILE), reason=rng.choice(HOSTILE), feature=rng.choice(FEATURES),
            quantity=rng.choice([None, 0, 3, -7]), reference=rng.choice(HOSTILE),
            idempotency_key=rng.choice([None, f"=key{i}", f"key,{i}", f"k\"{i}", f"-{i}", f"ключ{i}"]),
            related_entry_id=rng.choice([None, top - 1]), created_at=at))
    data.extra_entries = extra
    ledger_data.write(db.session, data)
    return [c for c, _a in people]


def _filters(people: list[int]) -> list[dict]:
    c0 = db.session.get(Customer, people[0])
    return [{}, *({"type": t} for t in ENTRY_TYPES), {"feature": "chat"}, {"feature": "=feature"},
            {"feature": "fé,ature"}, {"reference": "two\nlines"}, {"reference": "=cmd|' /C calc'!A0"},
            {"reference": "Müller 日本語 🚀"}, {"from": "2026-11-03"}, {"to": "2026-11-09"},
            {"from": "2026-11-03", "to": "2026-11-09"}, {"from": "2026-11-09", "to": "2026-11-03"},
            {"customer": c0.email}, {"customer": "ext,1", "type": "debit"},
            {"customer": f"#{people[1]}", "from": "2026-11-05", "feature": "image"},
            {"customer": "nobody@example.com"}, {"type": "bogus"}, {"from": "2000-01-01", "to": "2001-12-31"}]


def python_bytes(args: dict) -> tuple[bytes, int]:
    job = export.prepare(Filters.parse(args))
    counter = [0]
    body = "".join(export.python_chunks(job, counter)).encode()
    db.session.rollback()
    return export.header().encode() + body, counter[0]


def copy_bytes(args: dict, **kw) -> tuple[bytes, int]:
    job = export.prepare(Filters.parse(args))
    counter = [0]
    body = b"".join(export.copy_chunks(job, counter, **kw))
    db.session.rollback()
    return export.header().encode() + body, counter[0]


def test_copy_writes_the_python_writers_bytes_for_every_filter(app):
    print(f"seed {SEED}")
    people = _world(random.Random(SEED))
    total = db.session.scalar(select(db.func.count()).select_from(LedgerEntry))
    seen_nonempty = 0
    for args in _filters(people):
        want, want_rows = python_bytes(args)
        got, got_rows = copy_bytes(args)
        assert got_rows == want_rows, args
        if got != want:  # show the first differing line, not two megabytes
            for a, b in zip(want.split(b"\r\n"), got.split(b"\r\n"), strict=False):
                assert b == a, args
        assert got == want, args
        seen_nonempty += want_rows > 0
    assert seen_nonempty >= len(_filters(people)) - 3  # the filters do select rows
    whole, rows = python_bytes({})
    assert rows == total > 200
    # The data is as hostile as intended (so the equality above means something).
    for needle in ["'=cmd", "'+1", "'-1", "'@x", "'\tleading", "\"'\rleading CR\"", "\"'\nleading LF\"",
                   "''apostrophe", "\"say \"\"hi\"\"\"", "\"crlf\r\nend\r\n\"", "Müller 日本語 🚀",
                   "2001-01-02 03:04:05,", "2026-11-09 23:59:59,", ",-4611686018427387904,", ",,"]:
        assert needle.encode() in whole, needle
    for t in ENTRY_TYPES:
        assert f",{t},".encode() in whole, t


def test_copy_chunks_are_bounded_and_the_connection_is_clean_after_an_early_close(app):
    _world(random.Random(SEED + 1))
    want, _ = python_bytes({})
    pieces = list(export.copy_chunks(export.prepare(Filters()), [0], chunk=2000))
    db.session.rollback()
    assert len(pieces) > 5 and all(len(p) < 2000 + 2000 for p in pieces)
    assert export.header().encode() + b"".join(pieces) == want
    # A reader that stops after one chunk: closing cancels the COPY; after the rollback the same
    # pooled connection serves the next query.
    it = export.copy_chunks(export.prepare(Filters()), [0], chunk=2000)
    assert next(it)
    it.close()
    db.session.rollback()
    assert db.session.scalar(text("SELECT 1")) == 1
    assert copy_bytes({})[0] == want


def _sign_in(server, email: str, password: str) -> requests.Session:
    http = requests.Session()
    page = http.get(server.url + "/login", timeout=30)
    resp = http.post(server.url + "/login", data={"email": email, "password": password,
                                                  "csrf_token": csrf_from(page.text)},
                     allow_redirects=False, timeout=30)
    assert resp.status_code == 302, resp.text[:300]
    return http


def _wait_for(what, seconds: float = 30.0):
    """Poll until what() is truthy (a condition the server reaches, not a timing assertion)."""
    deadline = time.monotonic() + seconds
    while not (value := what()) and time.monotonic() < deadline:
        time.sleep(0.1)
    return value


def test_gunicorn_streams_the_copy_export_and_frees_the_connection_when_the_client_leaves(live, make):
    finance = make.staff(role="finance")
    people = _world(random.Random(SEED + 2))
    ledger_data.one_customer_many_debits(db.session, debits=60_000, reference="bulk")
    want_all, _ = python_bytes({})
    want_some, _ = python_bytes({"type": "debit", "customer": f"#{people[2]}"})
    db.session.commit()
    server = live(workers=1, threads=3)
    http = _sign_in(server, finance.email, finance.plain_password)

    # 1. Whole downloads, streamed by the worker, equal the Python writer's bytes.
    for query, want in [({}, want_all), ({"type": "debit", "customer": f"#{people[2]}"}, want_some)]:
        with http.get(server.url + "/transactions/export.csv", params=query, stream=True,
                      timeout=120) as resp:
            assert resp.status_code == 200, resp.text[:300]
            assert resp.headers["Content-Type"] == "text/csv; charset=utf-8"
            assert resp.headers["Content-Disposition"].startswith('attachment; filename="transactions-')
            chunks = list(resp.iter_content(chunk_size=None))
        assert len(chunks) > 1 or len(want) < 70_000
        assert b"".join(chunks) == want, query

    # 2. A client that reads one chunk and hangs up: the export is audited as incomplete and its
    #    connection goes back (no COPY or transaction left open on this database).
    with http.get(server.url + "/transactions/export.csv", stream=True, timeout=120) as resp:
        assert next(resp.iter_content(chunk_size=64 * 1024))
    # (leaving the block closes the half-read response, and with it the socket)
    name = db.engine.url.database

    def settled():
        db.session.commit()  # a fresh snapshot
        done = db.session.scalars(select(AuditLog).where(AuditLog.action == "transactions.export")
                                  .order_by(AuditLog.id)).all()
        busy = db.session.scalar(text(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = :d AND pid <> pg_backend_pid() "
            "AND (query ILIKE 'COPY%' AND state <> 'idle' OR state LIKE 'idle in transaction%')"),
            {"d": name})
        return len(done) == 3 and busy == 0 and done
    done = _wait_for(settled)
    assert done, server.log()[-3000:]
    assert [a.after["complete"] for a in done] == [True, True, False]
    assert 0 < done[2].after["rows"] < done[0].after["rows"]
    # ... and the same worker serves the next export in full.
    assert http.get(server.url + "/transactions/export.csv", timeout=120).content == want_all
    assert "Traceback" not in server.log(), server.log()[-3000:]
