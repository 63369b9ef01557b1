"""Baseline (b) of bench/api_debits.py: a bare Flask endpoint doing only the account UPDATE and
one INSERT of a ledger-shaped row, in one transaction, over plain psycopg. The UPDATE returns
what ours returns for the balance notices too (the three scalar subqueries of
services/ledger/crossings.py PG_COLUMNS), so the shared statement costs the same.

    POST /debit/<external_id>  {"credits": 1, "key": "..."}  -> 201 {"entry_id", "balance"}

It writes to `bench_accounts` and `bench_entries`, made by bench/api_debits.py with
`CREATE TABLE ... (LIKE accounts/ledger_entries INCLUDING ALL)` plus the same foreign keys, so
the rows, indexes and constraints cost what ours do while the real ledger stays reconcilable.
No auth, no idempotency record, no pricing, no grants or allocations: the floor a Flask
process and one transaction can reach on this machine.
"""
from __future__ import annotations

import json
import os
import threading

import psycopg
from flask import Flask, Response, request
from sqlalchemy.engine import make_url

URL = make_url(os.environ["DATABASE_URL"]).set(drivername="postgresql").render_as_string(
    hide_password=False)
_local = threading.local()

UPDATE = ("UPDATE bench_accounts AS a SET balance = a.balance - %(c)s, version = a.version + 1, "
          "updated_at = now() AT TIME ZONE 'utc' FROM customers c "
          "WHERE a.customer_id = c.id AND c.external_id = %(x)s AND a.balance >= %(c)s "
          "RETURNING a.id, a.customer_id, a.balance, "
          # what our UPDATE returns for the balance notices (services/ledger/crossings.py PG_COLUMNS)
          "(SELECT c2.external_id FROM customers c2 WHERE c2.id = a.customer_id), "
          "(SELECT COALESCE(c2.low_balance_threshold, p.low_balance_threshold) FROM customers c2 "
          "LEFT JOIN plans p ON p.id = c2.plan_id WHERE c2.id = a.customer_id), "
          "(SELECT t.threshold FROM auto_topups t WHERE t.customer_id = a.customer_id "
          "AND t.enabled AND t.paused_at IS NULL)")
INSERT = ("INSERT INTO bench_entries (account_id, customer_id, type, amount, balance_before, "
          "balance_after, actor_type, feature, quantity, idempotency_key, created_at) "
          "VALUES (%s, %s, 'debit', %s, %s, %s, 'api_key', 'chat', 1, %s, now() AT TIME ZONE 'utc') "
          "RETURNING id")

app = Flask(__name__)


def _conn() -> psycopg.Connection:
    conn = getattr(_local, "conn", None)
    if conn is None or conn.closed:
        conn = _local.conn = psycopg.connect(URL)
    return conn


@app.post("/debit/<external_id>")
def debit(external_id: str):
    body = json.loads(request.get_data())
    credits = int(body["credits"])
    conn = _conn()
    with conn.transaction(), conn.cursor() as cur:
        cur.execute(UPDATE, {"c": credits, "x": external_id})
        row = cur.fetchone()
        if row is None:
            return Response('{"success":false}', 402, mimetype="application/json")
        aid, cid, balance = row[:3]
        cur.execute(INSERT, (aid, cid, -credits, balance + credits, balance, body["key"]))
        entry_id = cur.fetchone()[0]
    return Response(json.dumps({"success": True, "data": {"entry_id": entry_id, "balance": balance}}),
                    201, mimetype="application/json")


@app.get("/api/health")
def health():
    return Response('{"success":true}', 200, mimetype="application/json")
