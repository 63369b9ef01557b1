"""Functions in the database, created by the migrations and by create_all (tests).

`creditdesk_api_debit()`: the API's single debit in one statement (PostgreSQL only, migration
0017). services/ledger/sqldebit.py calls it and says what it does and does not do;
tests/ledger/test_sql_debit.py proves it writes what services.ledger.posting writes.
"""
from __future__ import annotations

from sqlalchemy import event

from models.base import db

# Its parameters' types, in order (the caller casts each parameter to these).
API_DEBIT_TYPES = ("text", "bigint", "text", "bigint", "text", "json", "text", "text", "text",
                   "text", "text", "text", "text", "text", "text", "timestamp", "timestamp",
                   "timestamp", "boolean", "text[]", "bigint", "bigint")

API_DEBIT_DDL = r"""
CREATE OR REPLACE FUNCTION creditdesk_api_debit(
    p_external_id text, p_credits bigint, p_feature text, p_quantity bigint, p_reference text,
    p_metadata json, p_ledger_key text, p_hash_head text, p_hash_tail text, p_actor_type text,
    p_actor_id text, p_request_id text, p_scope text, p_reply_key text, p_reply_hash text,
    p_reply_expires timestamp, p_now timestamp, p_expired_before timestamp,
    p_paid_never boolean, p_paid_sources text[], p_low_threshold bigint, p_max_credits bigint)
RETURNS TABLE (o_entry_id bigint, o_credits bigint, o_balance bigint)
LANGUAGE plpgsql AS $fn$
DECLARE
  v_price numeric := p_credits;
  v_credits bigint;
  v_reply bigint;
  v_acc bigint;
  v_cust bigint;
  v_after bigint;
  v_guard bigint;
  v_left bigint;
  v_take bigint;
  v_gids bigint[] := '{}';
  v_takes bigint[] := '{}';
  v_entry bigint;
  g record;
BEGIN
  IF v_price IS NULL THEN
    SELECT fp.credits_per_unit::numeric * coalesce(p_quantity, 1) INTO v_price
      FROM feature_prices fp WHERE fp.feature = p_feature AND fp.archived_at IS NULL;
    IF v_price IS NULL THEN
      RAISE EXCEPTION USING ERRCODE = 'CDF01', MESSAGE = 'unpriced';
    END IF;
  END IF;
  IF v_price <= 0 OR v_price > p_max_credits THEN
    RAISE EXCEPTION USING ERRCODE = 'CDF01', MESSAGE = 'credits';
  END IF;
  v_credits := v_price;

  UPDATE accounts a SET balance = a.balance - v_credits, version = a.version + 1, updated_at = p_now
   WHERE a.customer_id = (SELECT c.id FROM customers c
                           WHERE c.external_id = p_external_id AND c.deleted_at IS NULL)
     AND a.balance >= v_credits
     AND (p_ledger_key IS NULL
          OR NOT EXISTS (SELECT 1 FROM ledger_entries e WHERE e.idempotency_key = p_ledger_key))
  RETURNING a.id, a.customer_id, a.balance INTO v_acc, v_cust, v_after;
  IF v_acc IS NULL THEN
    RAISE EXCEPTION USING ERRCODE = 'CDF01', MESSAGE = 'refused';
  END IF;

  -- Notices and auto top-ups are the Python rule's (services/ledger/crossings.py): a balance
  -- ending below any threshold of this customer, or at zero, goes there.
  SELECT greatest(1, coalesce(c.low_balance_threshold, p.low_balance_threshold, p_low_threshold),
                  (SELECT t.threshold FROM auto_topups t WHERE t.customer_id = c.id
                      AND t.enabled AND t.paused_at IS NULL))
    INTO v_guard
    FROM customers c LEFT JOIN plans p ON p.id = c.plan_id WHERE c.id = v_cust;
  IF v_after < v_guard THEN
    RAISE EXCEPTION USING ERRCODE = 'CDF01', MESSAGE = 'threshold';
  END IF;

  -- The live buckets under the lock (a fresh snapshot: this statement starts after the UPDATE),
  -- soonest-expiring first, then oldest (services/ledger/rules.py plan_draw).
  v_left := v_credits;
  FOR g IN SELECT cg.id, cg.remaining, cg.expires_at, cg.source FROM credit_grants cg
            WHERE cg.account_id = v_acc AND cg.remaining > 0
            ORDER BY cg.expires_at IS NULL, cg.expires_at, cg.id LOOP
    IF g.expires_at IS NOT NULL AND g.expires_at <= p_expired_before
       AND NOT (p_paid_never AND g.source = ANY (p_paid_sources)) THEN
      RAISE EXCEPTION USING ERRCODE = 'CDF01', MESSAGE = 'expired';
    END IF;
    IF v_left > 0 THEN
      v_take := least(g.remaining, v_left);
      v_gids := v_gids || g.id;
      v_takes := v_takes || v_take;
      v_left := v_left - v_take;
    END IF;
  END LOOP;
  IF v_left <> 0 THEN
    RAISE EXCEPTION USING ERRCODE = 'CDF01', MESSAGE = 'buckets';
  END IF;

  INSERT INTO ledger_entries (account_id, customer_id, type, amount, balance_before, balance_after,
                              actor_type, actor_id, feature, quantity, reference, idempotency_key,
                              request_hash, request_id, created_at, metadata)
  VALUES (v_acc, v_cust, 'debit', -v_credits, v_after + v_credits, v_after, p_actor_type,
          p_actor_id, p_feature, p_quantity, p_reference, p_ledger_key,
          encode(sha256(convert_to(p_hash_head || v_credits || p_hash_tail, 'UTF8')), 'hex'),
          p_request_id, p_now, p_metadata)
  RETURNING id INTO v_entry;
  UPDATE credit_grants cg SET remaining = cg.remaining - d.take
    FROM unnest(v_gids, v_takes) AS d (gid, take) WHERE cg.id = d.gid;
  -- allocation ids follow the draw order: a refund gives back the latest-drawn credits first
  INSERT INTO allocations (entry_id, grant_id, credits)
  SELECT v_entry, d.gid, -d.take FROM unnest(v_gids, v_takes) WITH ORDINALITY AS d (gid, take, n)
   ORDER BY d.n;

  -- The stored reply, written once and complete. A record already there (a reply stored, a call
  -- still running, an expired record to reuse) is the reply store's to answer: all of the above
  -- rolls back and the Python path replays, refuses or reuses it (dashboard/api/idempotency.py).
  -- A concurrent first call with the same key makes this INSERT wait for it, then refuse.
  IF p_reply_key IS NOT NULL THEN
    INSERT INTO idempotency_records (scope, key, request_hash, status, created_at, expires_at,
                                     response_status, response_body)
    VALUES (p_scope, p_reply_key, p_reply_hash, 'completed', p_now, p_reply_expires, 201,
            json_build_object('success', true, 'data', json_build_object(
              'entry_id', v_entry, 'credits', v_credits, 'balance', v_after)))
    ON CONFLICT (scope, key) DO NOTHING RETURNING id INTO v_reply;
    IF v_reply IS NULL THEN
      RAISE EXCEPTION USING ERRCODE = 'CDF01', MESSAGE = 'claimed';
    END IF;
  END IF;
  RETURN QUERY SELECT v_entry, v_credits, v_after;
END
$fn$
"""
API_DEBIT_DROP = f"DROP FUNCTION IF EXISTS creditdesk_api_debit({', '.join(API_DEBIT_TYPES)})"


def ddl(dialect: str) -> list[str]:
    return [API_DEBIT_DDL] if dialect == "postgresql" else []


@event.listens_for(db.metadata, "after_create")
def _create(_metadata, connection, **_kw) -> None:
    for stmt in ddl(connection.dialect.name):
        connection.exec_driver_sql(stmt)
