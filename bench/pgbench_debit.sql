-- Baseline (a) of bench/api_debits.py: the SQL one API debit issues, without Python. Run by
-- pgbench -M prepared with:
--   -D nc=<customers>   external ids bench_1 .. bench_<nc> (nc=1: the hot customer)
--   -D prefix=<api key prefix>   (unused since the key is cached per process; kept for the caller)
-- (pgbench substitutes :name even inside string literals, hence chr(58) for the colons.)
-- Since issue 15 a debit with an Idempotency-Key is one statement in its own transaction
-- (services/ledger/sqldebit.py): creditdesk_api_debit() with the parameters the API sends
-- (feature 'chat' priced from the table, a unique key, the reply stored). The API adds the pool's
-- ping of a connection idle for over a second, which under this load does not happen.
\set n random(1, :nc)
\set k random(1, 1000000000000)
SELECT * FROM creditdesk_api_debit(
  'bench_' || CAST(:n AS text), NULL, 'chat', NULL, NULL, NULL,
  'api-debit' || chr(58) || 'k1' || chr(58) || 'pgb-' || CAST(:client_id AS text) || '-' || CAST(:k AS text),
  '{"credits"' || chr(58),
  ',"customer"' || chr(58) || '"bench_' || CAST(:n AS text) || '","feature"' || chr(58) || '"chat","op"'
    || chr(58) || '"debit","quantity"' || chr(58) || 'null,"reference"' || chr(58) || 'null}',
  'api_key', '1', md5(random()::text),
  'POST /api/v1/customers/<external_id>/debits k1', 'pgb-' || CAST(:client_id AS text) || '-' || CAST(:k AS text),
  '9f2d6b1c0e4a7d3f5b8c2e1a6d9f0b3c7e5a2d8f1b4c6e9a0d3f7b2c5e8a1d4f',
  CAST(now() AT TIME ZONE 'utc' + interval '24 hours' AS timestamp), CAST(now() AT TIME ZONE 'utc' AS timestamp),
  CAST(now() AT TIME ZONE 'utc' AS timestamp), true, CAST('{purchase,subscription}' AS text[]), 100,
  1000000000000);
