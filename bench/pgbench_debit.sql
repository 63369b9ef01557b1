-- Baseline (a) of bench/api_debits.py: the SQL statements one API debit issues, in one
-- transaction, without Python. Run by pgbench -M prepared with:
--   -D nc=<customers>   external ids bench_1 .. bench_<nc> (nc=1: the hot customer)
--   -D prefix=<api key prefix>
-- (pgbench substitutes :name even inside string literals, hence the odd concatenations.)
-- Same order as POST /api/v1/customers/{id}/debits with an Idempotency-Key:
--   API key lookup, idempotency claim, price, conditional account UPDATE (lock + credits, key
--   unused), live buckets, one statement for bucket + entry + allocation, stored reply, COMMIT.
-- Each customer of the data set has exactly one live bucket, so the bucket query returns one row.
\set n random(1, :nc)
\set k random(1, 1000000000000)
BEGIN;
SELECT id, name, prefix, key_hash, scopes, created_by_id, created_at, last_used_at, revoked_at
  FROM api_keys WHERE prefix = :prefix;
INSERT INTO idempotency_records (scope, key, request_hash, status, created_at, expires_at)
  VALUES ('POST /api/v1/customers/<external_id>/debits k1', 'pgb-' || CAST(:client_id AS text) || '-' || CAST(:k AS text),
          '9f2d6b1c0e4a7d3f5b8c2e1a6d9f0b3c7e5a2d8f1b4c6e9a0d3f7b2c5e8a1d4f', 'in_progress',
          now() AT TIME ZONE 'utc', now() AT TIME ZONE 'utc' + interval '24 hours')
  ON CONFLICT (scope, key) DO NOTHING RETURNING id AS idem_id \gset
SELECT id, feature, label, unit, credits_per_unit, provider_cost_micros, currency, archived_at
  FROM feature_prices WHERE feature = 'chat' AND archived_at IS NULL;
UPDATE accounts SET balance = accounts.balance - 1, version = accounts.version + 1,
       updated_at = now() AT TIME ZONE 'utc'
  WHERE accounts.customer_id = (SELECT customers.id FROM customers
                                WHERE customers.deleted_at IS NULL
                                  AND customers.external_id = 'bench_' || CAST(:n AS text))
    AND accounts.balance >= 1
    AND NOT EXISTS (SELECT 1 FROM ledger_entries
                    WHERE ledger_entries.idempotency_key = 'api-debit:' || 'pgb-' || CAST(:client_id AS text) || '-' || CAST(:k AS text))
  RETURNING accounts.id AS aid, accounts.customer_id AS cid, accounts.balance AS bal,
            accounts.version AS ver \gset
SELECT id AS gid, remaining, expires_at, source FROM credit_grants
  WHERE account_id = :aid AND remaining > 0
  ORDER BY expires_at IS NULL, expires_at, id \gset
WITH g AS (UPDATE credit_grants SET remaining = credit_grants.remaining - v.take
           FROM (VALUES (0, CAST(:gid AS bigint), CAST(1 AS bigint))) AS v (n, gid, take)
           WHERE credit_grants.id = v.gid),
e AS (INSERT INTO ledger_entries (account_id, customer_id, type, amount, balance_before,
        balance_after, actor_type, actor_id, reason, feature, quantity, reference, idempotency_key,
        request_hash, request_id, grant_id, related_entry_id, payment_id, task_id, job_run_id,
        created_at)
      VALUES (CAST(:aid AS bigint), CAST(:cid AS bigint), 'debit', -1, CAST(:bal AS bigint) + 1,
        CAST(:bal AS bigint), 'api_key', '1', NULL, 'chat', 1,
        NULL, 'api-debit:' || 'pgb-' || CAST(:client_id AS text) || '-' || CAST(:k AS text),
        '3c7e5a2d8f1b4c6e9a0d3f7b2c5e8a1d4f9f2d6b1c0e4a7d3f5b8c2e1a6d9f0b', md5(random()::text),
        NULL, NULL, NULL, NULL, NULL, now() AT TIME ZONE 'utc')
      RETURNING id),
a AS (INSERT INTO allocations (entry_id, grant_id, credits)
      SELECT e.id, v.gid, -v.take FROM e,
             (VALUES (0, CAST(:gid AS bigint), CAST(1 AS bigint))) AS v (n, gid, take) ORDER BY v.n)
SELECT e.id AS entry_id FROM e \gset
UPDATE idempotency_records SET status = 'completed', response_status = 201,
       response_body = json_build_object('success', true, 'data', json_build_object(
         'entry_id', CAST(:entry_id AS bigint), 'credits', 1, 'balance', CAST(:bal AS bigint)))
  WHERE id = :idem_id;
COMMIT;
