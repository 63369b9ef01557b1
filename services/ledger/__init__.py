"""The credit ledger: customers and their accounts, grants (buckets), immutable entries and
allocations, and every way credits move.

- rules: the rules every posting path shares (actor, amounts, fingerprints, expiry, draw order)
- posting: one movement at a time (grant, debit, refund, adjust, expire, claw-back, reverse)
- hotpath: the API's everyday debit in three statements, on the same rules
- batch, bulk: many movements in one transaction (API batches; jobs)
- crossings: balance notices (low balance, depleted) and the auto top-up trigger, checked by
  every path that lowers a balance under its account lock; expiry_notices: grant.expiring
- idempotency: stored API replies; expiry; reconcile (the invariants)
- statement, statement_summary, rollup: reading the ledger fast

Owns: customers, accounts, grants, ledger entries, allocations, API replies.
May use: core, events.
"""
