"""What finance and the overview read: overview figures, analytics, the roll-forward, the
transactions list and its streamed CSV export.

Owns: nothing written but export audit entries.
May use: core, ledger, refunds.
"""
