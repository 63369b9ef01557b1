"""The deterministic demo data set `flask seed-demo` loads.

Owns: nothing of its own; writes through the ledger's rules.
May use: core, ledger, catalog, staff.
"""
