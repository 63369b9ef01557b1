"""Money out: refund eligibility, staff requests with approval (maker-checker), processing at
the provider, refund lists, and refunds of every debit on a reference (by_reference).

Owns: refunds.
May use: core, ledger, providers.
"""
