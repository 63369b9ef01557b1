"""People and machines that act on the ledger: staff accounts, API keys, and staff credit
adjustments with approval.

Owns: staff, API keys, adjustment requests.
May use: core, ledger.
"""
