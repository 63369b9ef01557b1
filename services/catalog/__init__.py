"""What is sold and what things cost: plans, credit packages (edit) and feature prices (pricing).

Owns: plans, packages, feature prices.
May use: core, ledger.
"""
