"""What is sold and what things cost: plans, credit packages (edit), what a package sells for,
fixed or at the price per credit (packages), and feature prices (pricing).

Owns: plans, packages, feature prices.
May use: core, ledger.
"""
