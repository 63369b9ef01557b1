"""Ledger invariants, checked set-based so that a million entries take seconds, not hours.

- account.balance = sum(entries) = sum(remaining of its grants), per account;
- every entry's amount is fully allocated to grants, and every grant's remaining equals the sum
  of the allocations through it;
- each entry's balance_before is the previous entry's balance_after (no hole, no edit);
- an idempotency key and a provider payment maps to at most one ledger transaction;
- a balance below zero only where an explicit overdraw left a deficit bucket.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import text

from models import db

SAMPLE = 20


@dataclass
class Check:
    name: str
    description: str
    violations: int = 0
    samples: list[dict] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.violations == 0


@dataclass
class Report:
    checks: list[Check]
    accounts: int = 0
    entries: int = 0

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    @property
    def violations(self) -> int:
        return sum(c.violations for c in self.checks)

    def as_dict(self) -> dict:
        return {"ok": self.ok, "accounts": self.accounts, "entries": self.entries,
                "checks": [{"name": c.name, "ok": c.ok, "violations": c.violations,
                            "samples": c.samples} for c in self.checks]}

    def lines(self) -> list[str]:
        out = [f"Reconciled {self.accounts:,} accounts and {self.entries:,} ledger entries."]
        for c in self.checks:
            mark = "ok  " if c.ok else "FAIL"
            out.append(f"  [{mark}] {c.description}" + ("" if c.ok else f": {c.violations:,}"))
            for sample in c.samples:
                out.append("         " + ", ".join(f"{k}={v}" for k, v in sample.items()))
        out.append("Ledger is consistent." if self.ok else f"{self.violations:,} violation(s).")
        return out


def _sums_to(name: str, description: str, total: str, parts: str, key: str, label: str):
    """A check that each row's `total` ("table.column") equals the sum of its `parts` rows'
    column, the part rows naming their row in `key`."""
    (parent, value), (child, summed) = total.split("."), parts.split(".")
    return (name, description, f"""
        SELECT p.id AS {key}, p.{value} AS {value}, COALESCE(c.total, 0) AS {label}
        FROM {parent} p LEFT JOIN (SELECT {key}, SUM({summed}) AS total FROM {child}
                                   GROUP BY {key}) c ON c.{key} = p.id
        WHERE p.{value} <> COALESCE(c.total, 0)""")


CHECKS: list[tuple[str, str, str]] = [
    _sums_to("balance_vs_entries", "account balance = sum of its ledger entries",
             "accounts.balance", "ledger_entries.amount", "account_id", "entries"),
    _sums_to("balance_vs_grants", "account balance = sum of remaining credits in its grants",
             "accounts.balance", "credit_grants.remaining", "account_id", "grants"),
    _sums_to("entry_allocations", "every entry's amount is allocated to grants",
             "ledger_entries.amount", "allocations.credits", "entry_id", "allocated"),
    _sums_to("grant_allocations", "every grant's remaining = sum of the allocations through it",
             "credit_grants.remaining", "allocations.credits", "grant_id", "allocated"),
    ("balance_chain", "each entry starts where the account's previous entry ended", """
        SELECT id AS entry_id, account_id, balance_before, prev_after FROM (
          SELECT id, account_id, balance_before, balance_after, amount,
                 LAG(balance_after) OVER (PARTITION BY account_id ORDER BY id) AS prev_after
          FROM ledger_entries) t
        WHERE balance_after <> balance_before + amount
           OR (prev_after IS NULL AND balance_before <> 0)
           OR (prev_after IS NOT NULL AND balance_before <> prev_after)"""),
    ("negative_balance", "no balance below zero without an explicit overdraw", """
        SELECT a.id AS account_id, a.balance AS balance FROM accounts a
        WHERE a.balance < 0 AND NOT EXISTS (SELECT 1 FROM credit_grants g
              WHERE g.account_id = a.id AND g.source = 'deficit' AND g.remaining < 0)"""),
    ("idempotency_keys", "each idempotency key maps to one ledger entry", """
        SELECT idempotency_key AS key, COUNT(*) AS entries FROM ledger_entries
        WHERE idempotency_key IS NOT NULL GROUP BY idempotency_key HAVING COUNT(*) > 1"""),
    ("payment_grants", "each provider payment credited at most once", """
        SELECT p.id AS payment_id, p.provider AS provider,
               p.provider_payment_id AS provider_payment_id, COUNT(e.id) AS grants
        FROM payments p JOIN ledger_entries e ON e.payment_id = p.id AND e.type = 'grant'
        GROUP BY p.id, p.provider, p.provider_payment_id HAVING COUNT(e.id) > 1"""),
]


def run() -> Report:
    """Run every check; read-only."""
    s = db.session
    checks = []
    for name, description, sql in CHECKS:
        rows = s.execute(text(sql)).mappings().all()
        checks.append(Check(name, description, len(rows), [dict(r) for r in rows[:SAMPLE]]))
    report = Report(checks)
    report.accounts = s.execute(text("SELECT COUNT(*) FROM accounts")).scalar_one()
    report.entries = s.execute(text("SELECT COUNT(*) FROM ledger_entries")).scalar_one()
    s.rollback()
    return report
