"""Scheduled work's bookkeeping and the monthly distribution: job runs (claim once per period,
heartbeat, resume) and distribution. The scheduled entry points live in the top-level jobs/.

Owns: job runs.
May use: core, ledger, catalog.
"""
