"""The distribution's grant chunk on PostgreSQL: two statements under the chunk's transaction.

1. lock the live accounts of the chunk's customers, in account-id order (FOR UPDATE);
2. one statement, whose snapshot is taken after those locks are held, that re-checks the
   idempotency keys (`distribution:<period>:<customer_id>`), draws the ids from the sequences in
   account order and writes, for every customer still without its key: the grant, its ledger entry
   (balance chain from the locked balance), the allocation, the `grant.created` outbox event and
   the account's new balance and version.

The rows are the ones services.ledger.bulk.Batch builds in Python (the SQLite path, and every
other bulk posting): same columns, same values; `request_hash` is rules.fingerprint("grant",
key=...), hashed by the server around the text rules.fingerprint_around gives
(tests/jobs/test_distribution.py checks the rows against the Python path's).
Per-row work stays in the server: no row is built, formatted or parsed in Python, and the chunk's
arrays (customer id, credits, expiry days, plan, segment) are the only per-row data sent.
The re-check cannot travel with the lock: under READ COMMITTED a statement's snapshot predates
the lock it waits for, so it could miss a grant committed by whoever held the lock.
"""
from __future__ import annotations

import re
from datetime import datetime

from sqlalchemy.orm import Session

from services.core.db import driver, run
from services.ledger.rules import HOLE, Actor, fingerprint_around

LOCK_SQL = """
SELECT a.customer_id, a.id, a.balance, c.external_id
FROM accounts a JOIN customers c ON c.id = a.customer_id
WHERE a.customer_id = ANY(%(ids)s::bigint[]) AND c.id = ANY(%(ids)s::bigint[])
  AND c.deleted_at IS NULL
ORDER BY a.id
FOR UPDATE OF a
"""

# {gseq} / {eseq}: the sequences of credit_grants.id and ledger_entries.id, resolved once.
# The accounts come in the lock's order with the balance that lock read (the rows are locked
# since, so it is current); every per-row lookup is an index probe whatever the chunk's size.
GRANT_SQL = """
WITH todo AS MATERIALIZED (
    SELECT v.*, %(prefix)s || v.customer_id AS key,
           CASE WHEN COALESCE(v.days, %(default_days)s) = 0 THEN NULL
                ELSE %(now)s::timestamp + make_interval(days => COALESCE(v.days, %(default_days)s))
           END AS expires_at,
           nextval('{gseq}'::regclass) AS grant_id, nextval('{eseq}'::regclass) AS entry_id
    FROM unnest(%(cids)s::bigint[], %(aids)s::bigint[], %(balances)s::bigint[],
                %(externals)s::text[], %(credits)s::bigint[], %(days)s::int[],
                %(plans)s::bigint[], %(segments)s::text[])
         WITH ORDINALITY AS v(customer_id, account_id, balance, external_id, credits, days,
                              plan_id, segment, n)
    -- the key re-checked under the locks: granted meanwhile -> skipped. A probe of the unique
    -- index per customer (a NOT EXISTS may be planned as a hash anti-join over the whole ledger)
    LEFT JOIN LATERAL (SELECT e.id FROM ledger_entries e
                       WHERE e.idempotency_key = %(prefix)s || v.customer_id LIMIT 1) k ON true
    WHERE k.id IS NULL
    ORDER BY v.n  -- ids drawn in account order, as the locks were taken
), g AS (
    INSERT INTO credit_grants (id, account_id, customer_id, source, amount, remaining, expires_at,
                               cost_minor, plan_id, period, job_run_id, created_at)
    SELECT grant_id, account_id, customer_id, 'distribution', credits, credits, expires_at, 0,
           plan_id, %(period)s, %(run_id)s, %(now)s FROM todo
), e AS (
    INSERT INTO ledger_entries (id, account_id, customer_id, type, amount, balance_before,
                                balance_after, actor_type, actor_id, reason, idempotency_key,
                                request_hash, grant_id, job_run_id, created_at)
    SELECT entry_id, account_id, customer_id, 'grant', credits, balance, balance + credits,
           %(actor_type)s, %(actor_id)s, 'Monthly credits ' || %(period)s || ' (' || segment || ')',
           key, encode(sha256(convert_to(%(hash_head)s || customer_id || %(hash_tail)s, 'UTF8')), 'hex'),
           grant_id, %(run_id)s, %(now)s FROM todo
), al AS (
    INSERT INTO allocations (entry_id, grant_id, credits)
    SELECT entry_id, grant_id, credits FROM todo ORDER BY entry_id
), ev AS (
    INSERT INTO outbox_events (event_id, type, customer_id, data, created_at, dispatched_at)
    SELECT 'msg_' || replace(gen_random_uuid()::text, '-', ''), 'grant.created', customer_id,
           json_build_object('grant_id', grant_id, 'credits', credits, 'source', 'distribution',
                             'expires_at', to_char(expires_at, 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
                             'external_id', external_id),
           %(now)s, NULL
    FROM todo ORDER BY grant_id
), u AS (
    UPDATE accounts a SET balance = t.balance + t.credits, version = a.version + 1,
                          updated_at = %(now)s
    FROM todo t WHERE a.id = t.account_id AND a.id = ANY(%(aids)s::bigint[])
)
SELECT count(*) FROM todo
"""

_SEQ = re.compile(r'^[A-Za-z0-9_."]+$')
_sql_cache: dict[tuple, str] = {}


def _grant_sql(pg) -> str:
    """GRANT_SQL with this database's sequence names (read once per database and process)."""
    where = (pg.info.host, pg.info.port, pg.info.dbname)
    if where not in _sql_cache:
        seqs = pg.execute("SELECT pg_get_serial_sequence('credit_grants', 'id'), "
                          "pg_get_serial_sequence('ledger_entries', 'id')").fetchone()
        if not all(isinstance(q, str) and _SEQ.match(q) for q in seqs):
            raise RuntimeError(f"unexpected id sequences {seqs!r}")
        _sql_cache[where] = GRANT_SQL.format(gseq=seqs[0], eseq=seqs[1])
    return _sql_cache[where]


def lock(s: Session, customer_ids: list[int]) -> list[tuple]:
    """Lock the live accounts of these customers in account-id order:
    [(customer_id, account_id, balance, external_id)] in that order."""
    return run(driver(s), LOCK_SQL, {"ids": sorted(set(customer_ids))}).fetchall()


def grant(s: Session, todo: list, locked: list[tuple], *, period: str, prefix: str,
          now: datetime, run_id: int, actor: Actor, default_days: int) -> int:
    """Write the grants of the candidate rows `todo` whose accounts are `locked` (by lock(), in
    this transaction) and that are still without their key; how many were written."""
    want = {r.id: r for r in todo}
    rows = [(acct, want[acct[0]]) for acct in locked if acct[0] in want]
    if not rows:
        return 0
    pg = driver(s)
    hash_head, hash_tail = fingerprint_around("grant", key=prefix + HOLE)
    params = {
        "cids": [a[0] for a, _ in rows], "aids": [a[1] for a, _ in rows],
        "balances": [a[2] for a, _ in rows], "externals": [a[3] for a, _ in rows],
        "credits": [int(r.credits) for _, r in rows], "days": [r.expiry_days for _, r in rows],
        "plans": [r.plan_id if r.segment != "free" else None for _, r in rows],
        "segments": [r.segment for _, r in rows],
        "prefix": prefix, "period": period, "now": now, "run_id": run_id,
        "actor_type": actor.type, "actor_id": actor.id, "default_days": default_days,
        "hash_head": hash_head, "hash_tail": hash_tail,
    }
    return int(run(pg, _grant_sql(pg), params).fetchone()[0])
